//! Format detection and the readers for each format. Each reads through a bounded buffer and
//! records findings on the file's report; none loads or executes what it reads.

use std::io::{self, Read};

use aho_corasick::AhoCorasick;
use serde_json::Value;

use crate::pickle::{self, Walk};
use crate::source::{Input, Reader, Stream, array, bytes};
use crate::{FileReport, Finding, Format, Severity};

/// Largest text header read into memory: safetensors' own limit, and far above real ones.
const MAX_HEADER: u64 = 100_000_000;
/// Decompressed bytes read from one archive, so a zip bomb ends the scan instead of the server.
const MAX_ARCHIVE_BYTES: u64 = 8 << 30;
const MAX_ARCHIVE_ENTRIES: usize = 1 << 20;
/// Largest Keras `config.json` or chat template read into memory.
const MAX_CONFIG: u64 = 64 << 20;

const TEXT_EXTENSIONS: &[&str] = &[
    "txt",
    "md",
    "markdown",
    "rst",
    "json",
    "jsonl",
    "yaml",
    "yml",
    "toml",
    "ini",
    "cfg",
    "conf",
    "env",
    "py",
    "sh",
    "bash",
    "ipynb",
    "jinja",
    "j2",
    "properties",
    "xml",
    "html",
    "js",
    "ts",
    "r",
    "sql",
];

/// What a file is, from its name and its first bytes. The content wins where it is
/// unambiguous (a zip, a GGUF file, a protocol 2+ pickle), so a renamed file is still read for
/// what it is.
pub fn detect(path: &str, head: &[u8]) -> Format {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    let zip = head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06");
    let pickle = head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]);
    let hdf5 = head.starts_with(b"\x89HDF\r\n\x1a\n");
    if head.starts_with(b"GGUF") {
        return Format::Gguf;
    }
    let stem = name.split('.').next().unwrap_or("");
    if matches!(stem, "license" | "licence" | "copying" | "unlicense") || stem.starts_with("license-") {
        return Format::License;
    }
    match ext {
        "pkl" | "pickle" | "joblib" | "dill" | "pck" | "pk" => {
            if zip {
                Format::Zip
            } else {
                Format::Pickle
            }
        }
        "pt" | "pth" | "bin" | "ckpt" | "dat" | "data" | "model" | "sav" => {
            if zip {
                Format::Pytorch
            } else if pickle {
                Format::Pickle
            } else {
                Format::Other
            }
        }
        "npy" => Format::Numpy,
        "npz" | "zip" => Format::Zip,
        "keras" => Format::Keras,
        "h5" | "hdf5" | "hdf" if hdf5 => Format::KerasH5,
        "safetensors" => Format::Safetensors,
        "gguf" => Format::Gguf,
        "onnx" => Format::Onnx,
        e if TEXT_EXTENSIONS.contains(&e) => Format::Text,
        _ if matches!(name.as_str(), ".env" | "dockerfile" | "makefile" | "mlmodel") => Format::Text,
        _ if zip => Format::Zip,
        _ if pickle => Format::Pickle,
        _ => Format::Other,
    }
}

fn finding(rule: &str, severity: Severity, message: String, location: Option<String>) -> Finding {
    Finding { rule: rule.into(), severity, message, subject: String::new(), location }
}

fn merge(report: &mut FileReport, walk: Walk) {
    report.findings.extend(walk.findings);
    for i in walk.imports {
        if !report.imports.contains(&i) {
            report.imports.push(i);
        }
    }
    if let Some(e) = walk.error {
        report.fail(e);
    }
}

pub fn pickle_file(r: &mut Reader<'_>, report: &mut FileReport) {
    let mut head = [0u8; 2];
    let compressed = r.read_exact(&mut head).is_ok()
        && (head == [0x1f, 0x8b]
            || (head[0] == 0x78 && (u16::from(head[0]) << 8 | u16::from(head[1])).is_multiple_of(31)));
    r.seek_start();
    let mut walk = Walk::default();
    if compressed {
        // joblib's `compress=`: a zlib or gzip stream around the pickle, read as it inflates.
        let (gzip, limit) = (head[0] == 0x1f, MAX_ARCHIVE_BYTES);
        if gzip {
            pickle::walk(&mut Stream::new(flate2::read::MultiGzDecoder::new(&mut *r).take(limit)), "", &mut walk);
        } else {
            pickle::walk(&mut Stream::new(flate2::read::ZlibDecoder::new(&mut *r).take(limit)), "", &mut walk);
        }
    } else {
        pickle::walk(r, "", &mut walk);
    }
    merge(report, walk);
}

/// Zip archives: PyTorch checkpoints (`archive/data.pkl`), Keras 3 (`config.json`), NumPy
/// `.npz` and plain zips. Pickles and NumPy arrays inside are walked; entries whose names
/// would escape the directory they are extracted into are flagged.
pub fn archive(r: &mut Reader<'_>, report: &mut FileReport) {
    let mut zip = match zip::ZipArchive::new(r) {
        Ok(z) => z,
        Err(e) => {
            report.findings.push(finding(
                "archive.malformed",
                Severity::High,
                format!("not a readable zip archive: {e}"),
                None,
            ));
            return;
        }
    };
    if zip.len() > MAX_ARCHIVE_ENTRIES {
        report.fail(format!("the archive has {} entries, more than the scanner reads", zip.len()));
        return;
    }
    let mut budget = MAX_ARCHIVE_BYTES;
    let mut saw_config = false;
    for i in 0..zip.len() {
        let entry = match zip.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                report.fail(format!("entry {i}: {e}"));
                return;
            }
        };
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if entry.enclosed_name().is_none() {
            report.findings.push(Finding {
                rule: "archive.unsafe_path".into(),
                severity: Severity::High,
                message: format!("entry {name:?} would be extracted outside its directory"),
                subject: name.clone(),
                location: None,
            });
        }
        if entry.is_dir() {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let base = lower.rsplit('/').next().unwrap_or(&lower);
        let kind = if base.ends_with(".pkl") || base.ends_with(".pickle") {
            Format::Pickle
        } else if base.ends_with(".npy") {
            Format::Numpy
        } else if report.format == Format::Keras && lower == "config.json" {
            saw_config = true;
            Format::Keras
        } else {
            continue;
        };
        let before = budget;
        let mut input = Stream::new(entry.take(budget));
        match kind {
            Format::Pickle => {
                let mut walk = Walk::default();
                pickle::walk(&mut input, &name, &mut walk);
                merge(report, walk);
            }
            Format::Numpy => numpy(&mut input, &name, report),
            _ => {
                let mut b = Vec::new();
                match (&mut input).take(MAX_CONFIG + 1).read_to_end(&mut b) {
                    Ok(_) if b.len() as u64 <= MAX_CONFIG => keras_config(&b, &name, report),
                    Ok(_) => report.fail("config.json is larger than the scanner reads"),
                    Err(e) => report.fail(format!("{name}: {e}")),
                }
            }
        }
        budget = before.saturating_sub(input.position());
        if budget == 0 {
            report.fail("the archive decompresses to more than the scanner reads");
            return;
        }
    }
    if report.format == Format::Keras && !saw_config {
        report.fail("a .keras archive without config.json");
    }
}

/// Keras layer configs: any layer of class `Lambda` carries Python code that runs on load.
pub fn keras_config(json: &[u8], entry: &str, report: &mut FileReport) {
    let value: Value = match serde_json::from_slice(json) {
        Ok(v) => v,
        Err(e) => {
            report.fail(format!("{entry}: not JSON: {e}"));
            return;
        }
    };
    let mut stack = vec![&value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if map.get("class_name").and_then(Value::as_str) == Some("Lambda") {
                    let layer = map
                        .get("config")
                        .and_then(|c| c.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or("(unnamed)")
                        .to_string();
                    report.findings.push(Finding {
                        rule: "keras.lambda_layer".into(),
                        severity: Severity::Medium,
                        message: format!("Lambda layer {layer:?} holds Python code that runs when the model loads"),
                        subject: layer,
                        location: Some(entry.to_string()),
                    });
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
}

/// Keras HDF5 files keep the model config as a JSON attribute; its Lambda layers are found
/// by streaming the file for the serialised class name.
pub fn keras_h5(r: &mut Reader<'_>, report: &mut FileReport) {
    let patterns = [r#""class_name": "Lambda""#, r#""class_name":"Lambda""#];
    let ac = AhoCorasick::new(patterns).expect("static patterns build");
    let mut count = 0usize;
    let mut first = None;
    for m in ac.stream_find_iter(r) {
        match m {
            Ok(m) => {
                count += 1;
                first.get_or_insert(m.start());
            }
            Err(e) => {
                report.fail(format!("read: {e}"));
                break;
            }
        }
    }
    if let Some(at) = first {
        report.findings.push(Finding {
            rule: "keras.lambda_layer".into(),
            severity: Severity::Medium,
            message: format!(
                "{count} Lambda layer(s) in the model config hold Python code that runs when the model loads"
            ),
            subject: "Lambda".into(),
            location: Some(format!("offset {at}")),
        });
    }
}

/// NumPy `.npy`: a text header, then the data. Object arrays are pickles, and are walked.
pub fn numpy(r: &mut dyn Input, entry: &str, report: &mut FileReport) {
    let result = (|| -> io::Result<Option<u64>> {
        let magic: [u8; 6] = array(r)?;
        if &magic != b"\x93NUMPY" {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no NumPy magic"));
        }
        let [major, _minor] = array::<2>(r)?;
        let len = match major {
            1 => u64::from(u16::from_le_bytes(array(r)?)),
            2 | 3 => u64::from(u32::from_le_bytes(array(r)?)),
            v => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown .npy version {v}"))),
        };
        let header = bytes(r, len, 1 << 20, "the .npy header")?;
        let header = String::from_utf8_lossy(&header);
        let Some(descr) = header.split("'descr':").nth(1) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the .npy header has no descr"));
        };
        let descr = descr.split("'fortran_order'").next().unwrap_or(descr);
        let descr = descr.split("'shape'").next().unwrap_or(descr);
        let object = descr.contains("|O'") || descr.contains("'O'") || descr.contains("<O'") || descr.contains(">O'");
        Ok(object.then(|| r.position()))
    })();
    match result {
        Ok(Some(_)) => {
            let mut walk = Walk::default();
            pickle::walk(r, entry, &mut walk);
            merge(report, walk);
        }
        Ok(None) => {}
        Err(e) => {
            let at = if entry.is_empty() { String::new() } else { format!("{entry}: ") };
            report.findings.push(finding(
                "numpy.malformed",
                Severity::High,
                format!("{at}not a well-formed .npy file: {e}"),
                None,
            ));
        }
    }
}

fn malformed(report: &mut FileReport, rule: &str, message: String) {
    report.findings.push(finding(rule, Severity::High, message, None));
}

/// Bytes per element of a safetensors dtype, in bits.
fn safetensors_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        "F6_E2M3" | "F6_E3M2" => 6,
        "F4" => 4,
        _ => return None,
    })
}

/// safetensors: an 8-byte header length, a JSON header, then the tensor data. Every tensor's
/// offsets must lie in the data, agree with its dtype and shape, and tensors must neither
/// overlap nor leave gaps (the reference implementation refuses both).
pub fn safetensors(r: &mut Reader<'_>, report: &mut FileReport) {
    if let Err(msg) = safetensors_check(r) {
        malformed(report, "safetensors.malformed", format!("malformed safetensors file: {msg}"));
    }
}

fn safetensors_check(r: &mut Reader<'_>) -> Result<(), String> {
    let len = r.len();
    let n = u64::from_le_bytes(array(r).map_err(|_| "shorter than its 8-byte header length".to_string())?);
    if n > MAX_HEADER {
        return Err(format!("a header length of {n} bytes is larger than the {MAX_HEADER}-byte limit"));
    }
    if n.checked_add(8).is_none_or(|end| end > len) {
        return Err(format!("the header length {n} runs past the end of the {len}-byte file"));
    }
    let header = bytes(r, n, MAX_HEADER, "the header").map_err(|e| e.to_string())?;
    if header.first() != Some(&b'{') {
        return Err("the header does not start with '{'".into());
    }
    let value: Value = serde_json::from_slice(&header).map_err(|e| format!("the header is not JSON: {e}"))?;
    let Value::Object(map) = value else { return Err("the header is not a JSON object".into()) };
    let data_len = len - 8 - n;
    let mut spans = Vec::with_capacity(map.len());
    for (name, info) in &map {
        if name == "__metadata__" {
            let ok = info.as_object().is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err("__metadata__ must map strings to strings".into());
            }
            continue;
        }
        let dtype = info.get("dtype").and_then(Value::as_str).ok_or(format!("tensor {name:?} has no dtype"))?;
        let bits = safetensors_bits(dtype).ok_or(format!("tensor {name:?} has unknown dtype {dtype:?}"))?;
        let shape = info.get("shape").and_then(Value::as_array).ok_or(format!("tensor {name:?} has no shape"))?;
        let mut count: u64 = 1;
        for d in shape {
            let d = d.as_u64().ok_or(format!("tensor {name:?} has a shape that is not a list of sizes"))?;
            count = count.checked_mul(d).ok_or(format!("tensor {name:?} has a shape whose size overflows"))?;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|o| o.len() == 2)
            .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
            .ok_or(format!("tensor {name:?} has no [begin, end] data_offsets"))?;
        let (begin, end) = offsets;
        if begin > end {
            return Err(format!("tensor {name:?} ends before it begins ({begin} > {end})"));
        }
        if end > data_len {
            return Err(format!("tensor {name:?} ends at {end}, past the {data_len} bytes of data"));
        }
        let bits_total = count.checked_mul(bits).ok_or(format!("tensor {name:?} is too large"))?;
        if !bits_total.is_multiple_of(8) || bits_total / 8 != end - begin {
            return Err(format!(
                "tensor {name:?} ({dtype}, {count} elements) needs {} bytes but its offsets span {}",
                bits_total.div_ceil(8),
                end - begin
            ));
        }
        spans.push((begin, end, name.clone()));
    }
    spans.sort();
    let mut expected = 0u64;
    for (begin, end, name) in &spans {
        if *begin < expected {
            return Err(format!("tensor {name:?} overlaps the tensor before it"));
        }
        if *begin > expected {
            return Err(format!("{} bytes of unaccounted data before tensor {name:?}", begin - expected));
        }
        expected = *end;
    }
    if expected != data_len {
        return Err(format!("{} bytes of data after the last tensor", data_len - expected));
    }
    Ok(())
}

/// GGUF value types with a fixed size, in bytes.
fn gguf_fixed(t: u32) -> Option<u64> {
    Some(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

/// (elements per block, bytes per block) of the ggml tensor types whose layout is stable.
fn ggml_block(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        30 => (1, 2),     // BF16
        _ => return None,
    })
}

/// Markers of template code reaching Python internals (server-side template injection through
/// a chat template, as in llama.cpp bindings that render GGUF templates with Jinja).
const TEMPLATE_MARKERS: &[&str] =
    &["__class__", "__globals__", "__subclasses__", "__builtins__", "__import__", "__mro__", "__base__", "__init__"];

fn template_findings(template: &str, location: &str, report: &mut FileReport) {
    let hits: Vec<&str> = TEMPLATE_MARKERS.iter().copied().filter(|m| template.contains(m)).collect();
    if !hits.is_empty() {
        report.findings.push(Finding {
            rule: "template.code_access".into(),
            severity: Severity::High,
            message: format!(
                "the chat template reaches Python internals ({}), a template-injection pattern",
                hits.join(", ")
            ),
            subject: hits[0].to_string(),
            location: Some(location.to_string()),
        });
    }
}

/// GGUF: magic, version, counts, metadata key/values, tensor infos, aligned data. Everything
/// must lie in the file, tensors must be aligned and must not overlap.
pub fn gguf(r: &mut Reader<'_>, report: &mut FileReport) {
    let mut template = None;
    let result = gguf_check(r, &mut template);
    if let Some(t) = template {
        template_findings(&t, "tokenizer.chat_template", report);
    }
    if let Err(msg) = result {
        malformed(report, "gguf.malformed", format!("malformed GGUF file: {msg}"));
    }
}

fn gguf_check(r: &mut Reader<'_>, template: &mut Option<String>) -> Result<(), String> {
    let len = r.len();
    let e = |e: io::Error| e.to_string();
    let magic: [u8; 4] = array(r).map_err(e)?;
    if &magic != b"GGUF" {
        return Err("no GGUF magic".into());
    }
    let version = u32::from_le_bytes(array(r).map_err(e)?);
    if !(1..=3).contains(&version) {
        return Err(format!("unknown version {version}"));
    }
    let count = |r: &mut Reader<'_>| -> io::Result<u64> {
        if version == 1 { Ok(u64::from(u32::from_le_bytes(array(r)?))) } else { Ok(u64::from_le_bytes(array(r)?)) }
    };
    let tensors = count(r).map_err(e)?;
    let kvs = count(r).map_err(e)?;
    // Each entry takes at least a few bytes: counts beyond the file's size are lies.
    if tensors > len / 8 || kvs > len / 8 {
        return Err(format!("{tensors} tensors and {kvs} metadata entries cannot fit in {len} bytes"));
    }
    let read_len = |r: &mut Reader<'_>| -> Result<u64, String> {
        let n = count(r).map_err(e)?;
        if n > len - r.position().min(len) {
            return Err(format!("a string of {n} bytes runs past the end of the file"));
        }
        Ok(n)
    };
    let mut alignment = 32u64;
    for _ in 0..kvs {
        let klen = read_len(r)?;
        let key = String::from_utf8_lossy(&bytes(r, klen, 1 << 16, "a metadata key").map_err(e)?).into_owned();
        let t = u32::from_le_bytes(array(r).map_err(e)?);
        match t {
            8 => {
                let n = read_len(r)?;
                if key == "tokenizer.chat_template" || key.starts_with("tokenizer.chat_template.") {
                    let b = bytes(r, n, MAX_CONFIG, "the chat template").map_err(e)?;
                    let t = String::from_utf8_lossy(&b).into_owned();
                    match template {
                        Some(all) => all.push_str(&t),
                        None => *template = Some(t),
                    }
                } else {
                    r.skip(n).map_err(e)?;
                }
            }
            9 => {
                let et = u32::from_le_bytes(array(r).map_err(e)?);
                let n = count(r).map_err(e)?;
                if let Some(size) = gguf_fixed(et) {
                    let total = n.checked_mul(size).ok_or("an array's size overflows")?;
                    r.skip(total).map_err(e)?;
                } else if et == 8 {
                    if n > len {
                        return Err(format!("an array of {n} strings cannot fit in the file"));
                    }
                    for _ in 0..n {
                        let s = read_len(r)?;
                        r.skip(s).map_err(e)?;
                    }
                } else {
                    return Err(format!("metadata {key:?} is an array of unsupported type {et}"));
                }
            }
            t => {
                let size = gguf_fixed(t).ok_or(format!("metadata {key:?} has unknown type {t}"))?;
                if key == "general.alignment" && t == 4 {
                    alignment = u64::from(u32::from_le_bytes(array(r).map_err(e)?));
                    if alignment == 0 || !alignment.is_power_of_two() {
                        return Err(format!("general.alignment {alignment} is not a power of two"));
                    }
                } else {
                    r.skip(size).map_err(e)?;
                }
            }
        }
    }
    let mut spans = Vec::new();
    for _ in 0..tensors {
        let nlen = read_len(r)?;
        let name = String::from_utf8_lossy(&bytes(r, nlen, 1 << 16, "a tensor name").map_err(e)?).into_owned();
        let dims = u32::from_le_bytes(array(r).map_err(e)?);
        if dims > 8 {
            return Err(format!("tensor {name:?} has {dims} dimensions"));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let d = count(r).map_err(e)?;
            elements = elements.checked_mul(d).ok_or(format!("tensor {name:?} has a size that overflows"))?;
        }
        let t = u32::from_le_bytes(array(r).map_err(e)?);
        let offset = u64::from_le_bytes(array(r).map_err(e)?);
        if !offset.is_multiple_of(alignment) {
            return Err(format!("tensor {name:?} at offset {offset} is not aligned to {alignment}"));
        }
        let size = match ggml_block(t) {
            Some((block, bytes)) => {
                if !elements.is_multiple_of(block) {
                    return Err(format!("tensor {name:?} has {elements} elements, not whole blocks of {block}"));
                }
                Some((elements / block).checked_mul(bytes).ok_or(format!("tensor {name:?} is too large"))?)
            }
            None if t < 64 => None,
            None => return Err(format!("tensor {name:?} has unknown type {t}")),
        };
        spans.push((offset, size, name));
    }
    let data_start = r.position().div_ceil(alignment) * alignment;
    if tensors > 0 && data_start > len {
        return Err("the tensor data starts past the end of the file".into());
    }
    let data_len = len.saturating_sub(data_start);
    spans.sort_by_key(|s| s.0);
    for i in 0..spans.len() {
        let (offset, size, name) = &spans[i];
        let next = spans.get(i + 1).map_or(data_len, |n| n.0);
        if *offset > data_len {
            return Err(format!("tensor {name:?} starts past the end of the data"));
        }
        if let Some(size) = size {
            let end = offset.checked_add(*size).ok_or("a tensor's end overflows")?;
            if end > data_len {
                return Err(format!("tensor {name:?} ends at {end}, past the {data_len} bytes of data"));
            }
            if end > next {
                return Err(format!("tensor {name:?} overlaps the next tensor"));
            }
        } else if i + 1 < spans.len() && *offset == next {
            return Err(format!("tensor {name:?} starts where the next tensor starts"));
        }
    }
    Ok(())
}

fn varint(r: &mut dyn Input) -> io::Result<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let [b] = array::<1>(r)?;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "a varint longer than 10 bytes"))
}

/// The fields of one protobuf message ending at `end`: `(field, wire type, length)` for
/// length-delimited fields (positioned at their start), after skipping the others.
fn proto_fields(
    r: &mut dyn Input,
    end: u64,
    mut on: impl FnMut(&mut dyn Input, u64, u64) -> Result<bool, String>,
) -> Result<(), String> {
    let e = |e: io::Error| e.to_string();
    while r.position() < end {
        let key = varint(r).map_err(e)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err("field number 0".into());
        }
        match wire {
            0 => {
                varint(r).map_err(e)?;
            }
            1 => r.skip(8).map_err(e)?,
            5 => r.skip(4).map_err(e)?,
            2 => {
                let n = varint(r).map_err(e)?;
                let stop = r.position().checked_add(n).filter(|&s| s <= end).ok_or("a field runs past its message")?;
                if !on(r, field, stop)? {
                    r.skip(stop - r.position()).map_err(e)?;
                }
                if r.position() != stop {
                    return Err("a nested message does not end where its length says".into());
                }
            }
            w => return Err(format!("field {field} has wire type {w}, which ONNX does not use")),
        }
        if r.position() > end {
            return Err("a field runs past its message".into());
        }
    }
    Ok(())
}

/// ONNX: the protobuf structure of the `ModelProto` must be sound (every length within its
/// message, an `ir_version` and a `graph`), and initializers stored as external data must
/// name files inside the model directory.
pub fn onnx(r: &mut Reader<'_>, report: &mut FileReport) {
    let len = r.len();
    let mut saw_ir = false;
    let mut saw_graph = false;
    let mut escapes = Vec::new();
    let result = proto_fields(r, len, |r, field, stop| match field {
        7 => {
            saw_graph = true;
            proto_fields(r, stop, |r, field, stop| {
                if field != 5 {
                    return Ok(false);
                }
                // TensorProto.external_data (13): key/value entries; "location" is a path.
                proto_fields(r, stop, |r, field, stop| {
                    if field != 13 {
                        return Ok(false);
                    }
                    let mut key = String::new();
                    let mut value = String::new();
                    proto_fields(r, stop, |r, field, stop| {
                        let n = stop - r.position();
                        let b = bytes(r, n, 1 << 16, "an external data entry").map_err(|e| e.to_string())?;
                        let s = String::from_utf8_lossy(&b).into_owned();
                        match field {
                            1 => key = s,
                            2 => value = s,
                            _ => {}
                        }
                        Ok(true)
                    })?;
                    if key == "location" && escapes_dir(&value) {
                        escapes.push(value);
                    }
                    Ok(true)
                })?;
                Ok(true)
            })?;
            Ok(true)
        }
        _ => Ok(false),
    });
    // ir_version is a varint (field 1), so it is found with a second, shallow pass.
    if result.is_ok() {
        r.seek_start();
        let _ = proto_varint_fields(r, len, |field| {
            if field == 1 {
                saw_ir = true;
            }
        });
    }
    for path in escapes {
        report.findings.push(Finding {
            rule: "onnx.external_data_path".into(),
            severity: Severity::High,
            message: format!("an initializer's external data location {path:?} points outside the model directory"),
            subject: path,
            location: None,
        });
    }
    match result {
        Err(msg) => malformed(report, "onnx.malformed", format!("malformed ONNX file: {msg}")),
        Ok(()) if !saw_ir || !saw_graph => {
            malformed(report, "onnx.malformed", "not an ONNX model: it has no ir_version or no graph".to_string())
        }
        Ok(()) => {}
    }
}

fn proto_varint_fields(r: &mut dyn Input, end: u64, mut on: impl FnMut(u64)) -> Result<(), String> {
    let e = |e: io::Error| e.to_string();
    while r.position() < end {
        let key = varint(r).map_err(e)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(r).map_err(e)?;
                on(field);
            }
            1 => r.skip(8).map_err(e)?,
            5 => r.skip(4).map_err(e)?,
            2 => {
                let n = varint(r).map_err(e)?;
                r.skip(n).map_err(e)?;
            }
            _ => return Err("bad wire type".into()),
        }
    }
    Ok(())
}

/// A relative path that stays inside the directory it is resolved against.
fn escapes_dir(path: &str) -> bool {
    let p = path.replace('\\', "/");
    p.starts_with('/') || p.as_bytes().get(1) == Some(&b':') || p.split('/').any(|c| c == "..")
}

/// Text files: secrets (the card secret scanner's rules), and chat templates that reach
/// Python internals.
pub fn text(secrets: &cairn_card::secrets::Scanner, path: &str, r: &mut Reader<'_>, report: &mut FileReport) {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let template = name == "tokenizer_config.json" || name.ends_with(".jinja") || name.ends_with(".j2");
    if template && r.len() <= MAX_CONFIG {
        let mut all = Vec::new();
        if r.read_to_end(&mut all).is_ok() {
            template_findings(&String::from_utf8_lossy(&all), path, report);
        }
        r.seek_start();
    }
    match secrets.scan_reader(path, &mut *r) {
        Ok(found) => {
            for f in found {
                report.findings.push(Finding {
                    rule: format!("secret.{}", f.rule_id),
                    severity: Severity::High,
                    message: format!("possible {} ({} characters; value not shown)", f.description, f.length),
                    subject: f.rule_id,
                    location: Some(format!("line {}, column {}", f.line, f.column)),
                });
            }
        }
        Err(e) => report.fail(format!("read: {e}")),
    }
}
