//! Rendered cards compared with reviewed copies in `examples/card/generated/`.
//! After an intended change, regenerate with `CAIRN_UPDATE_GOLDEN=1 cargo test -p cairn-card
//! --test golden` and review the diff like any other change.

mod common;

use common::*;

#[test]
fn rendered_cards_match_the_reviewed_copies() {
    let golden_dir = examples().join("generated");
    let update = std::env::var("CAIRN_UPDATE_GOLDEN").as_deref() == Ok("1");
    let dir = tempfile::tempdir().expect("tmp");
    let mut stale = Vec::new();
    for (format, name) in [
        ("huggingface", "README.md"),
        ("google", "model_card.mct.json"),
        ("eu-ai-act", "MODEL_CARD.eu-ai-act.md"),
        ("eu-cra", "MODEL_CARD.eu-cra.md"),
        ("html", "model_card.html"),
        ("json", "model_card.json"),
    ] {
        let out = dir.path().join(name).display().to_string();
        card(&[
            "generate",
            &example("results.csv"),
            "--source",
            &example("card.yaml"),
            "--format",
            format,
            "--output",
            &out,
        ])
        .expect("generate");
        let got = read(&out);
        let golden = golden_dir.join(name);
        if update {
            std::fs::create_dir_all(&golden_dir).expect("mkdir");
            std::fs::write(&golden, &got).expect("write golden");
        } else if std::fs::read_to_string(&golden).ok().as_deref() != Some(got.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "rendered output differs from examples/card/generated/{stale:?}; review and regenerate with CAIRN_UPDATE_GOLDEN=1"
    );
}
