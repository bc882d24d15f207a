//! Text search over model names and descriptions — the web UI's search box compiles to
//! `(full_name ILIKE '%…%' OR description ILIKE '%…%')` — on SQLite and PostgreSQL: case is
//! ignored, `%` and `_` in the text are literal once escaped, and on PostgreSQL the trigram
//! indexes of migration 0018 serve such patterns (a leading wildcard, which no B-tree can).

use cairn_core::ModelRef;
use cairn_core::filter::parse;
use cairn_store::model::{ListModels, NewModel};
use cairn_store::{AuditContext, Store};

cairn_test_utils::store_suite!(search_box_matches_names_and_descriptions);

fn ctx() -> AuditContext {
    AuditContext { actor: "user:olga".into(), ..AuditContext::default() }
}

async fn search(store: &Store, filter: &str) -> Vec<String> {
    let q = ListModels { filter: Some(parse(filter).unwrap()), limit: 100, ..Default::default() };
    let mut names: Vec<String> =
        store.list_models(&q).await.unwrap().items.into_iter().map(|m| m.full_name().to_string()).collect();
    names.sort();
    names
}

fn search_box(text: &str) -> String {
    let pattern = format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let quoted = pattern.replace('\'', "''");
    format!("(full_name ILIKE '{quoted}' OR description ILIKE '{quoted}')")
}

async fn search_box_matches_names_and_descriptions(store: Store, url: String) {
    for (name, description) in [
        ("nlp/bert-base", "A BERT encoder for sentiment"),
        ("nlp/gpt_small", "Generates support replies; 100% synthetic data"),
        ("cv/yolo", "Detects objects. Fine-tuned from bert? No."),
        ("cv/resnet", "Image classifier"),
    ] {
        let mut m = NewModel::named(ModelRef::parse(name).unwrap());
        m.description = description.into();
        store.create_model(&ctx(), &m).await.unwrap();
    }
    assert_eq!(
        search(&store, &search_box("BERT")).await,
        ["cv/yolo", "nlp/bert-base"],
        "name or description, any case"
    );
    assert_eq!(search(&store, &search_box("t_s")).await, ["nlp/gpt_small"], "_ is literal");
    assert_eq!(search(&store, &search_box("100%")).await, ["nlp/gpt_small"], "% is literal");
    assert_eq!(search(&store, &search_box("classif")).await, ["cv/resnet"]);
    assert!(search(&store, &search_box("nothing-like-this")).await.is_empty());

    if url.starts_with("postgres") {
        // The planner may pick either on four rows; with sequential scans priced out, the
        // plan shows the trigram indexes serving the escaped ILIKE patterns.
        let mut tx = store.db().begin().await.unwrap();
        let mut conn = tx.conn();
        conn.execute("SET LOCAL enable_seqscan = off", vec![]).await.unwrap();
        let plan: Vec<(String,)> = conn
            .fetch_all(
                "EXPLAIN SELECT id FROM models m WHERE m.full_name ILIKE $1 ESCAPE '\\' OR m.description ILIKE $1 ESCAPE '\\'",
                vec!["%bert%".to_owned().into()],
            )
            .await
            .unwrap();
        let plan: String = plan.into_iter().map(|(l,)| l + "\n").collect();
        assert!(plan.contains("models_full_name_trgm") && plan.contains("models_description_trgm"), "{plan}");
    }
    store.close().await;
}
