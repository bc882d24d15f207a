//! Secret scanning of card inputs and outputs.
//!
//! Findings carry a rule id and a location, never the secret itself: reports, logs and
//! CI output must not spread what they warn about. Scanning works on bytes, a chunk at a
//! time: a [`regex::bytes::RegexSet`] screens each chunk in one pass and only chunks that
//! hit are split into lines, so a 100 MB results file costs one linear scan.

use std::io::Read;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{Regex, RegexSet};
use serde::Serialize;

/// One detection rule.
struct Rule {
    id: &'static str,
    description: &'static str,
    pattern: &'static str,
    /// Index of the capture group holding the secret (0 = whole match).
    group: usize,
    /// Minimum Shannon entropy (bits per character) of the captured value.
    min_entropy: f64,
}

const RULES: &[Rule] = &[
    Rule {
        id: "aws-access-key-id",
        description: "AWS access key id",
        pattern: r"\b((?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16})\b",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "aws-secret-access-key",
        description: "AWS secret access key",
        pattern: r#"(?i)aws.{0,20}?(?:secret|private).{0,20}?['"]?\s*[:=]\s*['"]?([A-Za-z0-9/+=]{40})\b"#,
        group: 1,
        min_entropy: 3.5,
    },
    Rule {
        id: "github-token",
        description: "GitHub token",
        pattern: r"\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "gitlab-token",
        description: "GitLab personal access token",
        pattern: r"\b(glpat-[A-Za-z0-9_-]{20,})\b",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "slack-token",
        description: "Slack token",
        pattern: r"\b(xox[abposr]-[A-Za-z0-9-]{10,})\b",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "slack-webhook",
        description: "Slack webhook URL",
        pattern: r"(hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+)",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "google-api-key",
        description: "Google API key",
        pattern: r"\b(AIza[0-9A-Za-z_-]{35})",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "huggingface-token",
        description: "Hugging Face token",
        pattern: r"\b(hf_[A-Za-z0-9]{30,})\b",
        group: 1,
        min_entropy: 3.0,
    },
    Rule {
        id: "openai-api-key",
        description: "OpenAI-style API key",
        pattern: r"\b(sk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,})\b",
        group: 1,
        min_entropy: 3.5,
    },
    Rule {
        id: "stripe-secret-key",
        description: "Stripe secret key",
        pattern: r"\b([sr]k_live_[0-9A-Za-z]{20,})\b",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "private-key",
        description: "private key block",
        pattern: r"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "jwt",
        description: "JSON Web Token",
        pattern: r"\b(eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})",
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "password-in-url",
        description: "password in a URL",
        pattern: r#"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s/:@'"<>]+:([^\s/@'"<>]+)@[^\s/'"<>]+"#,
        group: 1,
        min_entropy: 0.0,
    },
    Rule {
        id: "secret-assignment",
        description: "password or secret assigned a value",
        pattern: r#"(?i)\b[a-z0-9_-]*(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token|access[_-]?token)[a-z0-9_-]*['"]?\s*[:=]\s*['"]?([^\s'",;]{8,})"#,
        group: 1,
        min_entropy: 3.0,
    },
    Rule {
        id: "high-entropy-string",
        description: "high-entropy string next to a secret-like word",
        pattern: r"(?i)(?:key|secret|token|passw|credential|authori[sz]|bearer)[^\n]{0,40}?\b([A-Za-z0-9+/_=-]{32,})",
        group: 1,
        min_entropy: 4.3,
    },
];

/// Values that are documentation placeholders, not secrets.
fn is_placeholder(value: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(value).to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "example",
        "placeholder",
        "changeme",
        "redacted",
        "xxxx",
        "****",
        "your_",
        "your-",
        "dummy",
        "<",
        "${",
        "{{",
        "%(",
        "password",
        "secret",
    ];
    WORDS.iter().any(|w| lower.contains(w)) || lower.chars().all(|c| c == 'x' || c == '*' || c == '.')
}

/// Shannon entropy in bits per byte.
pub fn entropy(value: &[u8]) -> f64 {
    if value.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for b in value {
        counts[*b as usize] += 1;
    }
    let n = value.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// A secret found in a file: where, and by which rule. The secret is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretFinding {
    pub rule_id: String,
    pub description: String,
    pub source: String,
    pub line: u64,
    pub column: u64,
    /// Length of the matched value, so a reader can find it without it being printed.
    pub length: usize,
}

impl std::fmt::Display for SecretFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: possible {} ({} characters, rule {}; value not shown)",
            self.source, self.line, self.column, self.description, self.length, self.rule_id
        )
    }
}

/// Literals at least one of which every rule's match contains (case-insensitively). A
/// chunk without any is skipped after one fast literal search.
const ANCHORS: &[&str] = &[
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "aws",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xox",
    "hooks.slack.com",
    "AIza",
    "hf_",
    "sk-",
    "k_live_",
    "PRIVATE KEY",
    "eyJ",
    "://",
    "passw",
    "pwd",
    "secret",
    "key",
    "token",
    "credential",
    "authori",
    "bearer",
];

/// The compiled rules. The full rule set is compiled only when a chunk contains an anchor,
/// so a clean run pays for one small literal matcher.
pub struct Scanner {
    prefilter: AhoCorasick,
    set: OnceLock<RegexSet>,
    rules: Vec<OnceLock<Regex>>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

// ASCII mode: secrets are ASCII, and Unicode classes would make the automata (and start-up,
// which matters for a CLI run per commit) several times larger.
fn ascii(pattern: &str) -> String {
    format!("(?-u){pattern}")
}

impl Scanner {
    /// One scanner for the whole process, for servers that scan many inputs: its literal
    /// matcher is built once, and the full rule set compiles once, on the first input that
    /// needs it, instead of once per input.
    pub fn shared() -> &'static Scanner {
        static SHARED: OnceLock<Scanner> = OnceLock::new();
        SHARED.get_or_init(Scanner::new)
    }

    pub fn new() -> Self {
        // Aho-Corasick builds in microseconds, where a case-insensitive regex alternation
        // costs milliseconds of start-up.
        let prefilter = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(ANCHORS)
            .expect("static anchors build");
        Scanner { prefilter, set: OnceLock::new(), rules: RULES.iter().map(|_| OnceLock::new()).collect() }
    }

    fn set(&self) -> &RegexSet {
        self.set.get_or_init(|| {
            RegexSet::new(RULES.iter().map(|r| ascii(r.pattern))).expect("static secret patterns compile")
        })
    }

    fn rule(&self, i: usize) -> &Regex {
        self.rules[i].get_or_init(|| Regex::new(&ascii(RULES[i].pattern)).expect("static secret pattern compiles"))
    }

    /// Ids of every rule, for `--allow-secret` checks.
    pub fn rule_ids() -> impl Iterator<Item = &'static str> {
        RULES.iter().map(|r| r.id)
    }

    /// Scans text held in memory (rendered cards).
    pub fn scan_str(&self, source: &str, text: &str) -> Vec<SecretFinding> {
        let mut out = Vec::new();
        self.scan_chunk(source, text.as_bytes(), 1, &mut out);
        out
    }

    /// Scans a stream a chunk at a time, in bounded memory.
    pub fn scan_reader<R: Read>(&self, source: &str, mut reader: R) -> std::io::Result<Vec<SecretFinding>> {
        const CHUNK: usize = 1 << 20;
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut line = 1u64;
        let mut eof = false;
        while !eof {
            // Fill up to CHUNK bytes (without zeroing a buffer first), then cut at the last
            // newline so lines stay whole.
            let want = CHUNK.saturating_sub(buf.len()).max(4096) as u64;
            let n = (&mut reader).take(want).read_to_end(&mut buf)?;
            if n == 0 || (n as u64) < want {
                eof = true;
            }
            let cut = if eof { buf.len() } else { buf.iter().rposition(|b| *b == b'\n').map_or(buf.len(), |p| p + 1) };
            self.scan_chunk(source, &buf[..cut], line, &mut out);
            line += buf[..cut].iter().filter(|b| **b == b'\n').count() as u64;
            buf.drain(..cut);
        }
        Ok(out)
    }

    fn scan_chunk(&self, source: &str, chunk: &[u8], first_line: u64, out: &mut Vec<SecretFinding>) {
        if !self.prefilter.is_match(chunk) {
            return;
        }
        let hits: Vec<usize> = self.set().matches(chunk).into_iter().collect();
        if hits.is_empty() {
            return;
        }
        for (i, text) in chunk.split(|b| *b == b'\n').enumerate() {
            for &r in &hits {
                let rule = &RULES[r];
                for caps in self.rule(r).captures_iter(text) {
                    let Some(m) = caps.get(rule.group) else { continue };
                    let value = m.as_bytes();
                    if rule.id != "private-key" && is_placeholder(value) {
                        continue;
                    }
                    if entropy(value) < rule.min_entropy {
                        continue;
                    }
                    if rule.id == "high-entropy-string" && !looks_random(value) {
                        continue;
                    }
                    let finding = SecretFinding {
                        rule_id: rule.id.to_string(),
                        description: rule.description.to_string(),
                        source: source.to_string(),
                        line: first_line + i as u64,
                        column: m.start() as u64 + 1,
                        length: value.len(),
                    };
                    // One report per place: a GitHub token is not also a high-entropy string.
                    if !out
                        .iter()
                        .any(|f| f.source == finding.source && f.line == finding.line && f.column == finding.column)
                    {
                        out.push(finding);
                    }
                }
            }
        }
    }
}

/// Mixed case and digits, and not a hex digest (sha256 values are legitimate in cards).
fn looks_random(value: &[u8]) -> bool {
    let hex = value.iter().all(|b| b.is_ascii_hexdigit());
    let upper = value.iter().any(u8::is_ascii_uppercase);
    let lower = value.iter().any(u8::is_ascii_lowercase);
    let digit = value.iter().any(u8::is_ascii_digit);
    !hex && upper && lower && digit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<String> {
        Scanner::new().scan_str("t", text).into_iter().map(|f| f.rule_id).collect()
    }

    // Fake credentials assembled at run time so this file does not trip other scanners.
    fn fake(prefix: &str, body: &str) -> String {
        format!("{prefix}{body}")
    }

    #[test]
    fn detects_common_credentials() {
        assert_eq!(ids(&format!("key = {}", fake("AKIA", "Q4ZJ7XN2LM5RT8WB"))), ["aws-access-key-id"]);
        assert_eq!(ids(&fake("token: ghp_", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5")), ["github-token"]);
        assert_eq!(ids(&fake("xoxb-", "123456789012-abcdefghijkl")), ["slack-token"]);
        assert_eq!(ids(&fake("-----BEGIN RSA ", "PRIVATE KEY-----")), ["private-key"]);
        assert_eq!(ids("db: postgres://admin:Zq8!x2Lw@db.internal/x"), ["password-in-url"]);
        assert_eq!(ids(&fake("hf_", "AbCdEfGhIjKlMnOpQrStUvWxYz01234567")), ["huggingface-token"]);
    }

    #[test]
    fn every_rule_fires_through_the_prefilter() {
        let cases = [
            (fake("glpat-", "aB3dE5fG7hJ9kL1mN3pQ"), "gitlab-token"),
            (
                fake("https://hooks.slack.com/services/T0123ABCD/B0123ABCD/", "aB3dE5fG7hJ9kL1mN3pQ5rS7"),
                "slack-webhook",
            ),
            (fake("AIza", "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"), "google-api-key"),
            (fake("sk-proj-", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7"), "openai-api-key"),
            (fake("sk_live_", "aB3dE5fG7hJ9kL1mN3pQ5rS7"), "stripe-secret-key"),
            (
                fake(
                    "eyJhbGciOiJIUzI1NiJ9.",
                    "eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                ),
                "jwt",
            ),
            (fake("aws_secret_access_key = ", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8aB3dE5f"), "aws-secret-access-key"),
            (fake("Authorization: Bearer ", "Zk3P9qLm2Xv8Rt6Yw4Ub1Nc7Hd5Gf0Ae2Si4Oj"), "high-entropy-string"),
        ];
        for (text, id) in cases {
            assert_eq!(ids(&text), [id], "{id}");
        }
    }

    #[test]
    fn ignores_placeholders_digests_and_prose() {
        assert!(ids("aws key AKIAIOSFODNN7EXAMPLE").is_empty());
        assert!(ids("url: postgres://user:${DB_PASSWORD}@host/db").is_empty());
        assert!(ids("sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 token").is_empty());
        assert!(ids("The model was trained with a secret sauce of data.").is_empty());
        assert!(ids("password: changeme").is_empty());
    }

    #[test]
    fn never_echoes_the_secret() {
        let secret = fake("ghp_", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5");
        let findings = Scanner::new().scan_str("f", &format!("x {secret}"));
        let shown = format!("{findings:?} {}", findings[0]);
        assert!(!shown.contains(&secret[4..]));
        assert_eq!(findings[0].column, 3);
    }

    #[test]
    fn reader_scan_counts_lines_across_chunks() {
        let mut text = "metric,value\n".repeat(200_000);
        text.push_str(&fake("secret_key = 'Zk3P9q", "Lm2Xv8Rt6Yw4Ub1Nc7Hd5Gf'\n"));
        let findings = Scanner::new().scan_reader("big.csv", text.as_bytes()).expect("scan");
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].line, 200_001);
    }
}
