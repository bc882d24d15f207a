//! Untrusted input never panics a parser: arbitrary bytes give a card or an error.

use cairn_card::input::{self, InputPolicy};
use cairn_card::load::load_card;
use proptest::prelude::*;

fn check_all(bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = InputPolicy { max_bytes: 1 << 20 };
    for ext in ["json", "yaml", "csv", "log", "md"] {
        let path = dir.path().join(format!("input.{ext}"));
        std::fs::write(&path, bytes).expect("write");
        let _ = input::read_results(&path, &policy);
        let _ = input::read_model_config(&path, &policy);
        let _ = input::read_dataset_info(&path, &policy);
        let _ = load_card(&path, &policy);
        let scanner = cairn_card::secrets::Scanner::new();
        let _ = cairn_card::cli::scan_file(&scanner, &path, &policy);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_all(&bytes);
    }

    #[test]
    fn structured_looking_text(text in "(---\n)?([a-z_]{1,8}(: |,)[-0-9.e\\[\\]{}\"a-z ]{0,12}\n){0,12}(---\n)?(\\| [a-z]+ \\| [0-9.]+ \\|\n)?") {
        check_all(text.as_bytes());
    }
}
