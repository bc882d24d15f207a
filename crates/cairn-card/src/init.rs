//! `cairn card init`: documented card sources for common kinds of model.

use minijinja::{Environment, context};

use crate::model::{CARD_SCHEMA, Card};

/// The kinds of model `init` has a template for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum InitTemplate {
    Generic,
    NlpClassification,
    ComputerVision,
    Llm,
    Tabular,
}

struct Hints {
    model_type: &'static str,
    framework: &'static str,
    architecture_hint: &'static str,
    library_name: &'static str,
    pipeline_tag: &'static str,
    language: &'static str,
    tags: &'static str,
    out_of_scope_hint: &'static str,
    factors_hint: &'static str,
    metrics_hint: &'static str,
    bias_hint: &'static str,
    limitation_hint: &'static str,
}

fn hints(t: InitTemplate) -> Hints {
    match t {
        InitTemplate::Generic => Hints {
            model_type: "",
            framework: "",
            architecture_hint: "a gradient-boosted tree ensemble",
            library_name: "",
            pipeline_tag: "",
            language: "",
            tags: "",
            out_of_scope_hint: "decisions about individuals without human review",
            factors_hint: "data source, time period",
            metrics_hint: "accuracy, f1 …",
            bias_hint: "under-represented groups in the training data",
            limitation_hint: "performance outside the training distribution is unknown",
        },
        InitTemplate::NlpClassification => Hints {
            model_type: "text classifier",
            framework: "pytorch",
            architecture_hint: "BERT-base encoder with a linear classification head",
            library_name: "transformers",
            pipeline_tag: "text-classification",
            language: "en",
            tags: "text-classification",
            out_of_scope_hint: "content moderation without human review",
            factors_hint: "language variety, text length, domain",
            metrics_hint: "accuracy, f1, precision, recall per class",
            bias_hint: "dialects and demographic groups under-represented in the data",
            limitation_hint: "sarcasm and domain shift reduce accuracy",
        },
        InitTemplate::ComputerVision => Hints {
            model_type: "image classifier",
            framework: "pytorch",
            architecture_hint: "ResNet-50 / ViT-B/16",
            library_name: "timm",
            pipeline_tag: "image-classification",
            language: "",
            tags: "image-classification, vision",
            out_of_scope_hint: "biometric identification of people",
            factors_hint: "lighting, camera, skin tone, image resolution",
            metrics_hint: "accuracy, top5_accuracy, mAP, IoU",
            bias_hint: "skin-tone and geography imbalance in images",
            limitation_hint: "low-light and out-of-distribution images",
        },
        InitTemplate::Llm => Hints {
            model_type: "causal language model",
            framework: "pytorch",
            architecture_hint: "decoder-only transformer, 7B parameters",
            library_name: "transformers",
            pipeline_tag: "text-generation",
            language: "en",
            tags: "text-generation, llm",
            out_of_scope_hint: "medical, legal or financial advice without review",
            factors_hint: "prompt language, task domain, context length",
            metrics_hint: "perplexity, exact_match, toxicity rate",
            bias_hint: "stereotypes present in web-scale text",
            limitation_hint: "hallucinated facts; knowledge cut-off",
        },
        InitTemplate::Tabular => Hints {
            model_type: "tabular classifier",
            framework: "scikit-learn",
            architecture_hint: "gradient-boosted trees (XGBoost)",
            library_name: "sklearn",
            pipeline_tag: "tabular-classification",
            language: "",
            tags: "tabular-classification",
            out_of_scope_hint: "credit or hiring decisions without human review",
            factors_hint: "region, customer segment, time period",
            metrics_hint: "roc_auc, accuracy, f1, calibration error",
            bias_hint: "proxies for protected attributes among the features",
            limitation_hint: "feature drift over time",
        },
    }
}

/// Renders the documented card source for a kind of model.
pub fn init_source(template: InitTemplate, output_name: &str) -> String {
    let h = hints(template);
    let kind = clap::ValueEnum::to_possible_value(&template).map(|v| v.get_name().to_string()).unwrap_or_default();
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.render_str(
        include_str!("../templates/init.yaml.j2"),
        context! {
            kind, schema => CARD_SCHEMA, output => output_name,
            model_type => h.model_type, framework => h.framework, architecture_hint => h.architecture_hint,
            library_name => h.library_name, pipeline_tag => h.pipeline_tag, language => h.language, tags => h.tags,
            out_of_scope_hint => h.out_of_scope_hint, factors_hint => h.factors_hint, metrics_hint => h.metrics_hint,
            bias_hint => h.bias_hint, limitation_hint => h.limitation_hint,
        },
    )
    .expect("the embedded init template renders (tested)")
}

/// A card with every field filled in (the example in `templates/example.yaml`).
pub fn full_example_card() -> Card {
    serde_saphyr::from_str(include_str!("../templates/example.yaml")).expect("embedded example card parses (tested)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_init_template_parses_as_a_card() {
        for t in [
            InitTemplate::Generic,
            InitTemplate::NlpClassification,
            InitTemplate::ComputerVision,
            InitTemplate::Llm,
            InitTemplate::Tabular,
        ] {
            let text = init_source(t, "card.yaml");
            let card: Card = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert_eq!(card.schema.as_deref(), Some(CARD_SCHEMA));
        }
    }

    #[test]
    fn example_card_parses() {
        let card = full_example_card();
        assert!(!card.evaluation.metrics.is_empty());
    }
}
