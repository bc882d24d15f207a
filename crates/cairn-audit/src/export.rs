//! The JSON Lines export: one JSON object per line, each with exactly one key naming its
//! kind.
//!
//! ```text
//! {"header":{"format":"cairn.audit.export/v1","exported_at":…,"anchor_seq":0,"anchor_hash":"00…","anchor_checkpoint":null,"public_keys":["-----BEGIN PUBLIC KEY-----…"]}}
//! {"event":{…AuditRecord…}}
//! {"redacted":{"seq":…,"time":…,"action":…,"outcome":…,"details_digest":…,"hash":…}}
//! {"checkpoint":{…Checkpoint…}}        (right after the event it covers)
//! …
//! {"end":{"events":N,"last_seq":…,"head":"…"}}
//! ```
//!
//! A file without its `end` line was cut short, and does not verify. The public keys in the
//! header are informational: verification trusts only keys the verifier is given.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::chain::{AuditRecord, RedactedRecord, parse_hash};
use crate::checkpoint::Checkpoint;
use crate::keys::PublicKey;
use crate::verify::{Anchor, BreakKind, DetailsCheck, Report, Verifier, check_details};

/// The format name in the header.
pub const FORMAT: &str = "cairn.audit.export/v1";

/// Longest line accepted, in bytes (an event's states are bounded well below this).
pub const MAX_LINE: usize = 16 << 20;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// When the export was made, in ms since the Unix epoch.
    pub exported_at: i64,
    /// The sequence number of the event before the first exported one.
    pub anchor_seq: i64,
    /// Its hash (hex).
    pub anchor_hash: String,
    /// The checkpoint at the anchor, when the export does not start at the genesis.
    pub anchor_checkpoint: Option<Checkpoint>,
    /// The server's public keys (SPKI PEM), for information.
    pub public_keys: Vec<String>,
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// How many events the file holds.
    pub events: u64,
    /// The last event's sequence number.
    pub last_seq: i64,
    /// The last event's hash (hex).
    pub head: String,
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// The first line.
    Header(Header),
    /// An event.
    Event(AuditRecord),
    /// An event with its details withheld.
    Redacted(RedactedRecord),
    /// A checkpoint for the event before it.
    Checkpoint(Checkpoint),
    /// The last line.
    End(Trailer),
}

/// Why an export could not be read at all (as opposed to a break in the chain it holds).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// I/O.
    #[error("reading the export: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not valid.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based.
        line: u64,
        /// Why.
        message: String,
    },
}

/// Verifies an export read from `input`, trusting `trusted` keys. Memory stays bounded by
/// [`MAX_LINE`] and a few batches of lines whatever the file's length. Lines are read,
/// parsed and their details checked on a second thread, ahead of the chain walk.
pub fn verify_export(input: impl BufRead + Send, trusted: Vec<PublicKey>) -> Result<Report, ReadError> {
    verify_export_observing(input, trusted, &mut |_| {})
}

/// [`verify_export`], handing every event with details to `observe` as it is verified (in
/// chain order). What was observed is only as good as the report: use it when the report
/// is [`Report::ok`].
pub fn verify_export_observing(
    input: impl BufRead + Send,
    trusted: Vec<PublicKey>,
    observe: &mut dyn FnMut(&AuditRecord),
) -> Result<Report, ReadError> {
    const BATCH: usize = 512;
    type Batch = Vec<(u64, Line, Option<DetailsCheck>)>;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch, ReadError>>(8);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut lines = LineReader { input, n: 0, buf: Vec::new() };
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                match lines.next() {
                    Ok(Some(line)) => {
                        let checked = match &line {
                            Line::Event(r) => Some(check_details(r)),
                            _ => None,
                        };
                        batch.push((lines.n, line, checked));
                        if batch.len() == BATCH && tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Ok(batch));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Ok(std::mem::take(&mut batch)));
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut lines = rx.into_iter().flat_map(|b| match b {
            Ok(batch) => batch.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        });
        walk(&mut lines, trusted, observe)
        // Dropping the receiver here stops the reader if verification ended early.
    })
}

fn walk(
    lines: &mut impl Iterator<Item = Result<(u64, Line, Option<DetailsCheck>), ReadError>>,
    trusted: Vec<PublicKey>,
    observe: &mut dyn FnMut(&AuditRecord),
) -> Result<Report, ReadError> {
    let at = |line: u64, message: &str| ReadError::Line { line, message: message.to_owned() };
    let header = match lines.next().transpose()? {
        Some((_, Line::Header(h), _)) => h,
        Some((n, _, _)) => return Err(at(n, "the first line must be the header")),
        None => return Err(at(0, "the file is empty")),
    };
    if header.format != FORMAT {
        return Err(at(1, &format!("unknown format {:?} (expected {FORMAT})", header.format)));
    }
    let anchor_hash =
        parse_hash(&header.anchor_hash).ok_or_else(|| at(1, "the anchor hash is not 64 hex characters"))?;
    let mut v = Verifier::new(Anchor { seq: header.anchor_seq, hash: anchor_hash }, trusted);
    if let Some(cp) = &header.anchor_checkpoint {
        v.anchor_checkpoint(cp);
    }
    let mut trailer = None;
    for item in lines {
        let (n, line, checked) = item?;
        if trailer.is_some() {
            return Err(at(n, "a line follows the end line"));
        }
        match line {
            Line::Header(_) => return Err(at(n, "a second header")),
            Line::Event(r) => {
                let checked = checked.unwrap_or_else(|| check_details(&r));
                if v.event_checked(&r, checked) {
                    observe(&r);
                }
            }
            Line::Redacted(r) => {
                v.redacted(&r);
            }
            Line::Checkpoint(cp) => {
                v.checkpoint(&cp);
            }
            Line::End(t) => trailer = Some(t),
        }
    }
    let Some(t) = trailer else {
        let mut report = v.finish(None);
        if report.first_break.is_none() {
            report.first_break = Some(crate::verify::Break {
                seq: report.last_seq.saturating_add(1),
                kind: BreakKind::Truncated,
                message: "the export has no end line: it was cut short".into(),
            });
        }
        return Ok(report);
    };
    let mut report = v.finish(Some((t.last_seq, &t.head)));
    if report.first_break.is_none() && t.events != report.events {
        report.first_break = Some(crate::verify::Break {
            seq: report.last_seq,
            kind: BreakKind::Truncated,
            message: format!("the end line counts {} events, the file holds {}", t.events, report.events),
        });
    }
    Ok(report)
}

struct LineReader<R> {
    input: R,
    n: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    fn error(&self, message: &str) -> ReadError {
        ReadError::Line { line: self.n, message: message.to_owned() }
    }

    fn next(&mut self) -> Result<Option<Line>, ReadError> {
        loop {
            self.buf.clear();
            let read = (&mut self.input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut self.buf)?;
            if read == 0 {
                return Ok(None);
            }
            self.n += 1;
            if self.buf.len() > MAX_LINE {
                return Err(self.error(&format!("longer than {MAX_LINE} bytes")));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(&self.buf).map(Some).map_err(|e| self.error(&e.to_string()));
        }
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{EventDetails, GENESIS};
    use crate::keys::SigningKey;

    fn export(n: i64, key: &SigningKey) -> String {
        let mut out = Vec::new();
        let header = Header {
            format: FORMAT.into(),
            exported_at: 1,
            anchor_seq: 0,
            anchor_hash: hex::encode(GENESIS),
            anchor_checkpoint: None,
            public_keys: vec![key.public().to_pem()],
        };
        out.push(serde_json::to_string(&Line::Header(header)).unwrap());
        let mut prev = GENESIS;
        let mut last = String::new();
        for seq in 1..=n {
            let d = EventDetails {
                actor: "system".into(),
                key_id: None,
                target: "t".into(),
                before: None,
                after: None,
                request_id: None,
                source_ip: None,
                user_agent: None,
            };
            let r = AuditRecord::seal(&prev, seq, seq, "a".into(), "success".into(), d);
            prev = parse_hash(&r.hash).unwrap();
            last.clone_from(&r.hash);
            if seq == 2 {
                out.push(serde_json::to_string(&Line::Redacted(r.redact())).unwrap());
            } else {
                out.push(serde_json::to_string(&Line::Event(r)).unwrap());
            }
            if seq % 3 == 0 {
                out.push(serde_json::to_string(&Line::Checkpoint(Checkpoint::sign(key, seq, &last, seq))).unwrap());
            }
        }
        let end = Trailer { events: u64::try_from(n).unwrap(), last_seq: n, head: last };
        out.push(serde_json::to_string(&Line::End(end)).unwrap());
        out.join("\n") + "\n"
    }

    #[test]
    fn exports_verify_and_cut_or_altered_exports_do_not() {
        let key = SigningKey::generate();
        let text = export(7, &key);
        let r = verify_export(text.as_bytes(), vec![key.public()]).unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.events, r.redacted, r.checkpoints, r.unsigned_tail), (7, 1, 2, 1));

        let cut: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        let r = verify_export(cut.as_bytes(), vec![key.public()]).unwrap();
        assert_eq!(r.first_break.unwrap().kind, BreakKind::Truncated);

        let other = SigningKey::generate();
        let r = verify_export(text.as_bytes(), vec![other.public()]).unwrap();
        assert_eq!(r.first_break.unwrap().kind, BreakKind::UntrustedKey);

        assert!(verify_export(&b""[..], vec![]).is_err());
        assert!(verify_export(text.replacen("{\"header\"", "{\"event\"", 1).as_bytes(), vec![]).is_err());
        let junk = text.replace("\"target\":\"t\"", "\"target\":\"t\",\"extra\":1");
        assert!(verify_export(junk.as_bytes(), vec![key.public()]).is_err(), "unknown fields are refused");
    }

    #[test]
    fn any_single_changed_byte_in_an_event_line_is_caught() {
        let key = SigningKey::generate();
        let text = export(4, &key);
        let event_line = text.lines().nth(2).unwrap();
        let start = text.find(event_line).unwrap();
        for i in 0..event_line.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[start + i] ^= 0x01;
            let ok = match verify_export(&bytes[..], vec![key.public()]) {
                Ok(r) => r.ok(),
                Err(_) => false,
            };
            assert!(!ok, "flipping byte {i} of {event_line} went unnoticed");
        }
    }
}
