//! Each format reader on files built here byte by byte (pickles as the protocol defines them,
//! safetensors written by the reference crate, GGUF, ONNX, zip archives), benign and hostile.

use std::io::Write;

use cairn_scan::{FileReport, Format, Scanner, Severity, Status};

fn scan(path: &str, bytes: &[u8]) -> FileReport {
    Scanner::new().scan(path, &bytes.to_vec())
}

fn rules(r: &FileReport) -> Vec<String> {
    r.findings.iter().map(|f| format!("{}:{}", f.rule, f.subject)).collect()
}

/// A protocol-4 pickle calling `module.name(arg)` through STACK_GLOBAL with memoised strings.
fn p4_call(module: &str, name: &str, arg: &str) -> Vec<u8> {
    let mut b = vec![0x80, 4];
    for s in [module, name] {
        b.push(0x8c);
        b.push(s.len() as u8);
        b.extend_from_slice(s.as_bytes());
        b.push(0x94); // MEMOIZE
    }
    b.push(0x93); // STACK_GLOBAL
    b.push(0x8c);
    b.push(arg.len() as u8);
    b.extend_from_slice(arg.as_bytes());
    b.push(0x85); // TUPLE1
    b.push(b'R');
    b.push(b'.');
    b
}

#[test]
fn protocol_0_global_and_reduce_is_critical() {
    let r = scan("model.pkl", b"cos\nsystem\n(S'echo pwned'\ntR.");
    assert_eq!(r.format, Format::Pickle);
    assert_eq!(r.status, Status::Scanned);
    assert_eq!(rules(&r), ["pickle.unsafe_import:os.system"]);
    assert_eq!(r.max_severity(), Some(Severity::Critical));
    assert_eq!(r.imports, ["os.system"]);
}

#[test]
fn protocol_4_stack_global_is_resolved_through_the_memo() {
    let r = scan("model.pkl", &p4_call("subprocess", "check_output", "id"));
    assert_eq!(rules(&r), ["pickle.unsafe_import:subprocess.check_output"]);
    // Strings pushed, memoised, popped, and fetched back in another order: the import is the
    // one the unpickler would resolve, not the last two strings seen.
    let mut b = vec![0x80, 4];
    for s in ["system", "os", "decoy"] {
        b.push(0x8c);
        b.push(s.len() as u8);
        b.extend_from_slice(s.as_bytes());
        b.push(0x94);
        b.push(b'0'); // POP
    }
    b.extend_from_slice(&[b'h', 1, b'h', 0, 0x93, b')', b'R', b'.']);
    let r = scan("x.pkl", &b);
    assert_eq!(rules(&r), ["pickle.unsafe_import:os.system"], "{r:?}");
}

#[test]
fn benign_globals_are_listed_but_not_flagged() {
    let r = scan("state.pkl", &p4_call("collections", "OrderedDict", "x"));
    assert!(r.findings.is_empty(), "{r:?}");
    assert_eq!(r.imports, ["collections.OrderedDict"]);
    let r = scan("n.pkl", b"\x80\x02K\x05.");
    assert!(r.findings.is_empty() && r.imports.is_empty() && r.status == Status::Scanned);
}

#[test]
fn builtins_are_flagged_by_name() {
    let r = scan("m.pkl", &p4_call("builtins", "exec", "print(1)"));
    assert_eq!(r.max_severity(), Some(Severity::Critical));
    let r = scan("m.pkl", &p4_call("builtins", "dict", "x"));
    assert!(r.findings.is_empty());
    let r = scan("m.pkl", &p4_call("webbrowser", "open", "http://x"));
    assert_eq!(r.max_severity(), Some(Severity::High));
    let r = scan("m.pkl", &p4_call("os.path", "join", "x"));
    assert_eq!(r.max_severity(), Some(Severity::Critical), "submodules of os are os");
    let r = scan("m.pkl", &p4_call("ossify", "x", "x"));
    assert!(r.findings.is_empty(), "a module that only starts with os is not os");
}

#[test]
fn non_constant_imports_and_extension_codes_are_flagged() {
    // STACK_GLOBAL on the result of a call: the name cannot be known without running it.
    let mut b = p4_call("collections", "OrderedDict", "x");
    b.pop();
    b.extend_from_slice(&[0x8c, 1, b'y', 0x93, b'.']);
    let r = scan("m.pkl", &b);
    assert!(rules(&r).contains(&"pickle.unresolved_import:".to_string()), "{r:?}");
    let r = scan("m.pkl", b"\x80\x02\x82\x01).");
    assert_eq!(r.findings[0].rule, "pickle.extension_import");
}

#[test]
fn names_pushed_deep_in_the_stack_are_still_flagged() {
    // 100,000 values under a mark, then an import: past the depth where names are kept, the
    // import cannot be resolved, and that is itself a finding (never a silent pass).
    let mut b = vec![0x80, 4, b'('];
    for _ in 0..100_000 {
        b.extend_from_slice(&[b'K', 1]);
    }
    b.extend_from_slice(&[0x8c, 2, b'o', b's', 0x8c, 6]);
    b.extend_from_slice(b"system");
    b.extend_from_slice(&[0x93, b')', b'R', b'l', b'.']);
    let r = scan("deep.pkl", &b);
    assert_eq!(r.status, Status::Scanned, "{r:?}");
    assert_eq!(r.findings.len(), 1, "{r:?}");
    assert_eq!((r.findings[0].rule.as_str(), r.findings[0].severity), ("pickle.unresolved_import", Severity::High));
}

#[test]
fn malformed_pickles_are_incomplete_with_findings_kept() {
    let mut b = p4_call("os", "system", "id");
    b.pop(); // no STOP
    let r = scan("m.pkl", &b);
    assert_eq!(r.status, Status::Incomplete);
    assert_eq!(rules(&r), ["pickle.unsafe_import:os.system"]);
    assert!(r.error.as_deref().unwrap().contains("without STOP"), "{r:?}");
    let r = scan("m.pkl", b"\x80\x04\xff.");
    assert_eq!(r.status, Status::Incomplete);
    assert!(r.error.unwrap().contains("unknown opcode 0xff"));
    let r = scan("m.pkl", b"\x80\x02R.");
    assert!(r.error.unwrap().contains("underflow"));
    // A length that runs past the end.
    let r = scan("m.pkl", b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f.");
    assert_eq!(r.status, Status::Incomplete);
}

#[test]
fn several_pickles_in_one_file_are_all_walked() {
    // Legacy PyTorch files: magic, protocol, sys info, then the data pickle, then raw bytes.
    let mut b = b"\x80\x02K\x01.".to_vec();
    b.extend_from_slice(b"\x80\x02K\x02.");
    b.extend(p4_call("posix", "system", "id"));
    b.extend_from_slice(&[0x00, 0x01, 0x02, 0xff]);
    let r = scan("legacy.pt", &b);
    assert_eq!(r.format, Format::Pickle);
    assert_eq!(r.status, Status::Scanned, "{r:?}");
    assert_eq!(rules(&r), ["pickle.unsafe_import:posix.system"]);
}

fn zip_of(entries: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, data) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    out.into_inner()
}

#[test]
fn pytorch_zip_checkpoints_are_scanned_inside() {
    let bad = zip_of(&[("archive/data.pkl", &p4_call("os", "system", "id")), ("archive/data/0", b"\0\0\0\0")], false);
    let r = scan("pytorch_model.bin", &bad);
    assert_eq!(r.format, Format::Pytorch);
    assert_eq!(rules(&r), ["pickle.unsafe_import:os.system"]);
    assert!(r.findings[0].location.as_deref().unwrap().starts_with("archive/data.pkl"));
    let good = zip_of(&[("archive/data.pkl", &p4_call("torch._utils", "_rebuild_tensor_v2", "x"))], true);
    let r = scan("model.pt", &good);
    assert!(r.findings.is_empty() && r.status == Status::Scanned, "{r:?}");
    let slip = zip_of(&[("../../etc/cron.d/x", b"x")], false);
    let r = scan("weights.zip", &slip);
    assert_eq!(r.findings[0].rule, "archive.unsafe_path");
    let r = scan("model.pt", b"PK\x03\x04 not really a zip");
    assert_eq!(r.findings[0].rule, "archive.malformed");
}

#[test]
fn keras_lambda_layers_are_flagged_in_both_formats() {
    let config = br#"{"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "d"}},
        {"class_name": "Lambda", "config": {"name": "sneaky", "function": "..."}}]}}"#;
    let r = scan("model.keras", &zip_of(&[("config.json", config), ("model.weights.h5", b"")], true));
    assert_eq!(r.format, Format::Keras);
    assert_eq!(rules(&r), ["keras.lambda_layer:sneaky"]);
    assert_eq!(r.max_severity(), Some(Severity::Medium));
    let clean = br#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense"}]}}"#;
    assert!(scan("m.keras", &zip_of(&[("config.json", clean)], true)).findings.is_empty());
    let mut h5 = b"\x89HDF\r\n\x1a\n".to_vec();
    h5.extend(vec![0u8; 70_000]);
    h5.extend_from_slice(br#"{"class_name": "Lambda", "config": {}}"#);
    let r = scan("model.h5", &h5);
    assert_eq!(r.format, Format::KerasH5);
    assert_eq!(r.findings[0].rule, "keras.lambda_layer");
}

fn npy(descr: &str, body: &[u8]) -> Vec<u8> {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}");
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(body);
    b
}

#[test]
fn numpy_object_arrays_are_walked_as_pickles() {
    let r = scan("a.npy", &npy("<f4", &[0u8; 8]));
    assert!(r.findings.is_empty() && r.status == Status::Scanned);
    let r = scan("a.npy", &npy("|O", &p4_call("runpy", "run_path", "/tmp/x")));
    assert_eq!(rules(&r), ["pickle.unsafe_import:runpy.run_path"]);
    let npz = zip_of(&[("w.npy", &npy("<f4", &[0u8; 8])), ("o.npy", &npy("|O", &p4_call("os", "system", "x")))], true);
    let r = scan("arrays.npz", &npz);
    assert_eq!(rules(&r), ["pickle.unsafe_import:os.system"]);
    let r = scan("a.npy", b"not numpy");
    assert_eq!(r.findings[0].rule, "numpy.malformed");
}

fn safetensors_file() -> Vec<u8> {
    use safetensors::{Dtype, tensor::TensorView};
    let a = vec![0u8; 2 * 3 * 4];
    let b = vec![1u8; 4 * 2];
    let tensors = vec![
        ("a", TensorView::new(Dtype::F32, vec![2, 3], &a).unwrap()),
        ("b", TensorView::new(Dtype::BF16, vec![4], &b).unwrap()),
    ];
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors, Some(meta)).unwrap()
}

fn with_header(file: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend_from_slice(&file[8 + n..]);
    out
}

#[test]
fn safetensors_headers_are_validated() {
    let good = safetensors_file();
    let r = scan("model.safetensors", &good);
    assert_eq!((r.format, r.status), (Format::Safetensors, Status::Scanned));
    assert!(r.findings.is_empty(), "{r:?}");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with_header(&good, |h| h["b"]["data_offsets"] = serde_json::json!([24, 40])), "past the"),
        (with_header(&good, |h| h["b"]["data_offsets"] = serde_json::json!([24, 28])), "needs 8 bytes"),
        (
            with_header(&good, |h| {
                h["a"]["data_offsets"] = serde_json::json!([0, 8]);
                h["a"]["shape"] = serde_json::json!([2]);
            }),
            "unaccounted",
        ),
        (with_header(&good, |h| h["a"]["dtype"] = serde_json::json!("F128")), "unknown dtype"),
        (with_header(&good, |h| h["__metadata__"] = serde_json::json!({"x": 1})), "__metadata__"),
        ([&u64::MAX.to_le_bytes()[..], b"{}"].concat(), "limit"),
        ([&100u64.to_le_bytes()[..], b"{}"].concat(), "runs past"),
        ([&2u64.to_le_bytes()[..], b"[]"].concat(), "start with"),
        ([good.as_slice(), b"trailing"].concat(), "after the last tensor"),
    ];
    for (file, expect) in cases {
        let r = scan("model.safetensors", &file);
        assert_eq!(r.findings.len(), 1, "{expect}: {r:?}");
        assert_eq!(r.findings[0].rule, "safetensors.malformed");
        assert!(r.findings[0].message.contains(expect), "{expect}: {}", r.findings[0].message);
    }
    // Overlap: b moved onto a, then the header is otherwise consistent in size.
    let overlap = with_header(&good, |h| {
        h["b"]["data_offsets"] = serde_json::json!([0, 8]);
    });
    assert!(scan("m.safetensors", &overlap).findings[0].message.contains("overlaps"));
}

fn gguf_string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 file with one F32 tensor of `elements` at `offset` and an optional template.
fn gguf_file(elements: u64, offset: u64, data: usize, template: Option<&str>) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&(1 + u64::from(template.is_some())).to_le_bytes());
    gguf_string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    gguf_string(&mut b, "llama");
    if let Some(t) = template {
        gguf_string(&mut b, "tokenizer.chat_template");
        b.extend_from_slice(&8u32.to_le_bytes());
        gguf_string(&mut b, t);
    }
    gguf_string(&mut b, "w");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&elements.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // F32
    b.extend_from_slice(&offset.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend(vec![0u8; data]);
    b
}

#[test]
fn gguf_headers_are_validated_and_templates_checked() {
    let r = scan("m.gguf", &gguf_file(8, 0, 32, Some("{{ messages[0]['content'] }}")));
    assert_eq!(r.format, Format::Gguf);
    assert!(r.findings.is_empty(), "{r:?}");
    let r = scan("m.gguf", &gguf_file(16, 0, 32, None));
    assert!(r.findings[0].message.contains("past the"), "{r:?}");
    let r = scan("m.gguf", &gguf_file(4, 3, 32, None));
    assert!(r.findings[0].message.contains("not aligned"), "{r:?}");
    let mut truncated = gguf_file(8, 0, 32, None);
    truncated.truncate(40);
    assert_eq!(scan("m.gguf", &truncated).findings[0].rule, "gguf.malformed");
    let evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}";
    let r = scan("m.gguf", &gguf_file(8, 0, 32, Some(evil)));
    assert_eq!(r.findings[0].rule, "template.code_access");
    assert_eq!(r.max_severity(), Some(Severity::High));
}

fn pb_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn pb_bytes(b: &mut Vec<u8>, field: u64, data: &[u8]) {
    pb_varint(b, (field << 3) | 2);
    pb_varint(b, data.len() as u64);
    b.extend_from_slice(data);
}

fn onnx_model(location: &str) -> Vec<u8> {
    let mut entry = Vec::new();
    pb_bytes(&mut entry, 1, b"location");
    pb_bytes(&mut entry, 2, location.as_bytes());
    let mut tensor = Vec::new();
    pb_bytes(&mut tensor, 8, b"weight");
    pb_bytes(&mut tensor, 13, &entry);
    let mut graph = Vec::new();
    pb_bytes(&mut graph, 2, b"main");
    pb_bytes(&mut graph, 5, &tensor);
    let mut model = Vec::new();
    pb_varint(&mut model, 1 << 3);
    pb_varint(&mut model, 9);
    pb_bytes(&mut model, 2, b"pytorch");
    pb_bytes(&mut model, 7, &graph);
    model
}

#[test]
fn onnx_structure_and_external_data_paths_are_checked() {
    let r = scan("model.onnx", &onnx_model("weights.bin"));
    assert_eq!(r.format, Format::Onnx);
    assert!(r.findings.is_empty(), "{r:?}");
    for bad in ["../../home/user/.ssh/id_rsa", "/etc/passwd", "C:\\Windows\\x", "a/../../b"] {
        let r = scan("model.onnx", &onnx_model(bad));
        assert_eq!(rules(&r), [format!("onnx.external_data_path:{bad}")]);
    }
    let mut cut = onnx_model("w.bin");
    cut.truncate(cut.len() - 3);
    assert_eq!(scan("model.onnx", &cut).findings[0].rule, "onnx.malformed");
    assert_eq!(scan("model.onnx", b"plain text").findings[0].rule, "onnx.malformed");
}

#[test]
fn text_files_are_checked_for_secrets_and_licences_identified() {
    let r = scan("config.yaml", b"name: x\naws_access_key_id: AKIAIOSFODNN7EXAMPLF\n");
    assert_eq!(r.format, Format::Text);
    assert!(r.findings.iter().any(|f| f.rule.starts_with("secret.")), "{r:?}");
    assert!(!serde_json::to_string(&r).unwrap().contains("AKIAIOSFODNN7EXAMPLF"), "the secret is never echoed");
    let r = scan("LICENSE", b"                Apache License\n           Version 2.0, January 2004\n");
    assert_eq!(r.format, Format::License);
    assert_eq!(r.license.as_deref(), Some("Apache-2.0"));
    let r = scan("tokenizer_config.json", br#"{"chat_template": "{{ cycler.__init__.__globals__.os.popen('id') }}"}"#);
    assert_eq!(r.findings[0].rule, "template.code_access");
    let r = scan("weights.raw", &[0x42; 100]);
    assert_eq!((r.format, r.status), (Format::Other, Status::Skipped));
}

#[test]
fn content_decides_over_the_extension() {
    assert_eq!(scan("renamed.txt", &gguf_file(8, 0, 32, None)).format, Format::Gguf);
    let r = scan("model", &p4_call("os", "system", "x"));
    assert_eq!(r.format, Format::Pickle, "an extension-less protocol 2+ pickle is still read");
    assert_eq!(r.max_severity(), Some(Severity::Critical));
}

#[test]
fn long_runs_of_numbers_across_read_windows_keep_the_stack_exact() {
    // Names memoised first, then a list of 300,000 numbers of every small kind appended in
    // batches of 1,000 (as Python writes long lists) — far more than one read window — then
    // the names fetched back for a STACK_GLOBAL. Miscounting the stack anywhere in the run
    // would lose the import or break the walk.
    let mut b = vec![0x80, 4];
    for s in ["os", "system"] {
        b.push(0x8c);
        b.push(s.len() as u8);
        b.extend_from_slice(s.as_bytes());
        b.push(0x94); // MEMOIZE
        b.push(b'0'); // POP
    }
    b.push(b']');
    for batch in 0..300u32 {
        b.push(b'(');
        for i in 0..1000u32 {
            match (batch + i) % 4 {
                0 => b.extend_from_slice(&[b'K', (i % 256) as u8]),
                1 => {
                    b.push(b'M');
                    b.extend_from_slice(&(i as u16).to_le_bytes());
                }
                2 => {
                    b.push(b'J');
                    b.extend_from_slice(&(-(i as i32)).to_le_bytes());
                }
                _ => {
                    b.push(b'G');
                    b.extend_from_slice(&f64::from(i).to_be_bytes());
                }
            }
        }
        b.push(b'e'); // APPENDS
    }
    b.extend_from_slice(&[b'N', b'a', 0x88, b'a', b'0']); // APPEND twice, POP the list
    b.extend_from_slice(&[b'h', 0, b'h', 1, 0x93, b')', b'R', b'.']);
    assert!(b.len() > 1 << 20, "{} bytes", b.len());
    let r = scan("state.pkl", &b);
    assert_eq!(r.status, Status::Scanned, "{:?}", r.error);
    assert_eq!(rules(&r), ["pickle.unsafe_import:os.system"]);

    // The same run with one APPENDS too many has no mark to close: the walk says so.
    let mut broken = b[..b.len() - 13].to_vec();
    broken.extend_from_slice(b"e.");
    assert_eq!(scan("state.pkl", &broken).status, Status::Incomplete);
}

#[test]
fn numbers_between_a_mark_and_a_tuple_keep_their_values() {
    // A joblib array whose shape is a 4-tuple built with MARK … TUPLE: its numbers go through
    // the walker's fast path for runs of numbers and must come out exact, because the shape
    // says how many raw bytes follow (2 × 3 × 1 × 1 float64 = 48 bytes, here 0xff, which is
    // no opcode). A miscount would walk into them, and the import after them would be lost.
    let mut b = vec![0x80, 2];
    // Items pushed and appended around nested marks, and a list closed by APPENDS.
    b.extend_from_slice(&[b']', b'(', b'(', b'K', 1, b'e', b'K', 2, b'a', b'K', 3, b'e', b'0']);
    b.extend_from_slice(b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n)R}(");
    b.extend_from_slice(b"\x8c\x05dtypecnumpy\ndtype\n\x8c\x02f8\x85R");
    b.extend_from_slice(b"\x8c\x05shape(K\x02K\x03K\x01K\x01t");
    b.extend_from_slice(b"ub");
    b.extend_from_slice(&[0xff; 48]);
    b.extend_from_slice(b"0cos\nsystem\n.");
    let r = scan("model.joblib", &b);
    assert_eq!(r.status, Status::Scanned, "{:?}", r.error);
    assert_eq!(rules(&r), ["pickle.unsafe_import:os.system"]);

    // One dimension more: the shape is 2 × 3 × 1 × 2, so 96 bytes are skipped where 48 are,
    // the walk runs past the end, and says so.
    let at = b.windows(5).position(|w| w == b"K\x01K\x01t").unwrap();
    let mut wrong = b.clone();
    wrong[at + 3] = 2;
    assert_eq!(scan("model.joblib", &wrong).status, Status::Incomplete);

    // An APPEND right after a MARK has nothing to append: the walk stops there.
    let mut bad = vec![0x80, 2, b']', b'(', b'a'];
    bad.extend_from_slice(b"e.");
    let r = scan("state.pkl", &bad);
    assert_eq!(r.status, Status::Incomplete);
    assert!(r.error.as_deref().unwrap_or_default().contains("stack underflow"), "{:?}", r.error);
}
