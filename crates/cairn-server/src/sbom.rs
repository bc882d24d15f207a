//! A CycloneDX 1.6 ML-BOM for a version (docs/SUPPLY_CHAIN.md): the model as a
//! `machine-learning-model` component with its manifest digest, licences and model card; every
//! file with its SHA-256; the datasets its card names (`data` components); its base model; and
//! the dependencies between them. Built from what the registry holds, nothing is guessed.

use cairn_card::Card;
use cairn_core::FileEntry;
use cairn_store::version::Version;
use serde_json::{Value, json};

/// The media type of the document.
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json; version=1.6";

/// What the BOM is made from.
pub struct Inputs<'a> {
    pub version: &'a Version,
    pub files: &'a [FileEntry],
    /// The version's card, when it has one.
    pub card: Option<&'a Card>,
    /// SPDX ids (or `LicenseRef-…`) from the licence files artifact scanning identified.
    pub file_licenses: &'a [String],
    /// The inputs recorded as its lineage (datasets, runs, code, base models).
    pub lineage: &'a [cairn_store::lineage::LineageEdge],
    /// Whether scanning found nothing (`None`: not scanned).
    pub scan_clean: Option<bool>,
    /// RFC 3339 time of generation.
    pub timestamp: String,
    pub serial: uuid::Uuid,
}

fn licence(id: &str) -> Value {
    if cairn_scan::license::is_spdx_id(id) { json!({"license": {"id": id}}) } else { json!({"license": {"name": id}}) }
}

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' }).collect()
}

fn property(name: &str, value: impl ToString) -> Value {
    json!({"name": name, "value": value.to_string()})
}

/// The ML-BOM document.
pub fn build(i: &Inputs<'_>) -> Value {
    let v = i.version;
    let full = format!("{}/{}", v.namespace, v.model);
    let model_ref = format!("model:{full}:{}", v.version);
    let mut licences: Vec<String> = i.file_licenses.to_vec();
    if let Some(id) = i.card.and_then(|c| c.model.license.as_deref()).and_then(cairn_scan::license::from_card)
        && !licences.contains(&id)
    {
        licences.push(id);
    }

    let mut components = Vec::new();
    let mut depends = Vec::new();
    let mut dataset_refs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    if let Some(card) = i.card {
        for (d, purpose) in card
            .training
            .datasets
            .iter()
            .map(|d| (d, "training"))
            .chain(card.evaluation.datasets.iter().map(|d| (d, "evaluation")))
        {
            let bom_ref = format!("dataset:{}", slug(&d.name));
            if !seen.insert(bom_ref.clone()) {
                continue;
            }
            let mut data = json!({"type": "dataset", "name": d.name});
            if let Some(desc) = &d.description {
                data["description"] = json!(desc);
            }
            if !d.sensitive_data.is_empty() {
                data["sensitiveData"] = json!(d.sensitive_data);
            }
            let mut c = json!({
                "type": "data", "bom-ref": bom_ref, "name": d.name, "data": [data],
                "properties": [property("cairn:dataset.purpose", purpose)],
            });
            if let Some(id) = &d.id {
                c["version"] = json!(id);
            }
            if let Some(l) = d.license.as_deref().and_then(cairn_scan::license::from_card) {
                c["licenses"] = json!([licence(&l)]);
            }
            if let Some(link) = &d.link {
                c["externalReferences"] = json!([{"type": "distribution", "url": link}]);
            }
            components.push(c);
            dataset_refs.push(json!({"ref": bom_ref}));
            depends.push(bom_ref);
        }
        if let Some(base) = card.model.base_model.as_deref().filter(|b| !b.trim().is_empty()) {
            let bom_ref = format!("base-model:{}", slug(base));
            seen.insert(bom_ref.clone());
            components.push(json!({
                "type": "machine-learning-model", "bom-ref": bom_ref, "name": base,
                "properties": [property("cairn:relation", "base_model")],
            }));
            depends.push(bom_ref);
        }
    }
    // Recorded lineage: datasets and base models become components, runs and code properties.
    let mut lineage_props = Vec::new();
    for e in i.lineage {
        match e.kind.as_str() {
            "dataset" => {
                let bom_ref = format!("dataset:{}", slug(&e.name));
                if !seen.insert(bom_ref.clone()) {
                    continue;
                }
                let mut c = json!({
                    "type": "data", "bom-ref": bom_ref, "name": e.name,
                    "data": [{"type": "dataset", "name": e.name}],
                    "properties": [property("cairn:dataset.purpose", "training"), property("cairn:lineage", "recorded")],
                });
                if !e.reference.is_empty() {
                    c["version"] = json!(e.reference);
                }
                if let Some(h) = hash(&e.digest) {
                    c["hashes"] = json!([h]);
                } else if !e.digest.is_empty() {
                    c["properties"].as_array_mut().expect("an array").push(property("cairn:digest", &e.digest));
                }
                if !e.uri.is_empty() {
                    c["externalReferences"] = json!([{"type": "distribution", "url": e.uri}]);
                }
                components.push(c);
                dataset_refs.push(json!({"ref": bom_ref}));
                depends.push(bom_ref);
            }
            "base_model" => {
                let label = if e.reference.is_empty() { e.name.clone() } else { format!("{}@{}", e.name, e.reference) };
                let bom_ref = format!("base-model:{}", slug(&label));
                if !seen.insert(bom_ref.clone()) {
                    continue;
                }
                let mut c = json!({
                    "type": "machine-learning-model", "bom-ref": bom_ref, "name": e.name,
                    "properties": [property("cairn:relation", "base_model"),
                                   property("cairn:registry", e.parent_version_id.is_some())],
                });
                if !e.reference.is_empty() {
                    c["version"] = json!(e.reference);
                }
                components.push(c);
                depends.push(bom_ref);
            }
            "run" => lineage_props.push(property("cairn:lineage.run", format!("{}:{}", e.platform, e.name))),
            _ => lineage_props.push(property("cairn:lineage.code", format!("{}@{}", e.name, e.reference))),
        }
    }
    let files: Vec<Value> = i
        .files
        .iter()
        .map(|f| {
            json!({
                "type": "file", "bom-ref": format!("file:{}", f.path.as_str()), "name": f.path.as_str(),
                "hashes": [{"alg": "SHA-256", "content": f.sha256}],
                "properties": [property("cairn:size", f.size)],
            })
        })
        .collect();

    let mut model = json!({
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "group": v.namespace,
        "name": v.model,
        "version": v.version.to_string(),
        "hashes": [{"alg": "SHA-256", "content": v.digest.trim_start_matches("sha256:")}],
        "components": files,
        "properties": [property("cairn:manifest-digest", &v.digest), property("cairn:files", v.file_count)],
    });
    if !v.description.is_empty() {
        model["description"] = json!(v.description);
    }
    if !licences.is_empty() {
        model["licenses"] = Value::Array(licences.iter().map(|l| licence(l)).collect());
    }
    if let Some(clean) = i.scan_clean {
        model["properties"].as_array_mut().expect("an array").push(property("cairn:scan.clean", clean));
    }
    if let Some(sv) = &v.semver {
        model["properties"].as_array_mut().expect("an array").push(property("cairn:semver", sv));
    }
    model["properties"].as_array_mut().expect("an array").extend(lineage_props);
    if let Some(card) = i.card {
        model["modelCard"] = model_card(card, &dataset_refs);
        if !card.model.authors.is_empty() {
            model["authors"] = json!(card.model.authors.iter().map(|a| json!({"name": a})).collect::<Vec<_>>());
        }
    }

    let mut dependencies = vec![json!({"ref": model_ref, "dependsOn": depends})];
    for d in &depends {
        dependencies.push(json!({"ref": d, "dependsOn": []}));
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", i.serial),
        "version": 1,
        "metadata": {
            "timestamp": i.timestamp,
            "tools": {"components": [{"type": "application", "name": "cairn", "version": env!("CARGO_PKG_VERSION")}]},
            "component": model,
            "properties": [property("cairn:model", &full)],
        },
        "components": components,
        "dependencies": dependencies,
    })
}

/// A CycloneDX hash from `algorithm:hex`, for the algorithms CycloneDX names.
fn hash(digest: &str) -> Option<Value> {
    let (alg, hex) = digest.split_once(':')?;
    let (name, len) = match alg {
        "md5" => ("MD5", 32),
        "sha1" => ("SHA-1", 40),
        "sha256" => ("SHA-256", 64),
        "sha384" => ("SHA-384", 96),
        "sha512" => ("SHA-512", 128),
        _ => return None,
    };
    (hex.len() == len).then(|| json!({"alg": name, "content": hex}))
}

fn model_card(card: &Card, datasets: &[Value]) -> Value {
    let mut params = serde_json::Map::new();
    if let Some(task) = card.model.pipeline_tag.as_deref().or(card.evaluation.task.as_deref()) {
        params.insert("task".into(), json!(task));
    }
    if let Some(a) = &card.model.architecture {
        params.insert("modelArchitecture".into(), json!(a));
    }
    if let Some(t) = &card.model.model_type {
        params.insert("architectureFamily".into(), json!(t));
    }
    if !datasets.is_empty() {
        params.insert("datasets".into(), json!(datasets));
    }
    let metrics: Vec<Value> = card
        .evaluation
        .metrics
        .iter()
        .map(|m| {
            let mut x = json!({"type": m.name, "value": m.value.to_string()});
            let slice: Vec<&str> =
                [m.dataset.as_deref(), m.split.as_deref(), m.slice.as_deref()].into_iter().flatten().collect();
            if !slice.is_empty() {
                x["slice"] = json!(slice.join("/"));
            }
            if let Some([lo, hi]) = m.confidence_interval {
                x["confidenceInterval"] = json!({"lowerBound": lo.to_string(), "upperBound": hi.to_string()});
            }
            x
        })
        .collect();
    let mut considerations = serde_json::Map::new();
    if !card.intended_use.primary_users.is_empty() {
        considerations.insert("users".into(), json!(card.intended_use.primary_users));
    }
    if !card.intended_use.primary_uses.is_empty() {
        considerations.insert("useCases".into(), json!(card.intended_use.primary_uses));
    }
    if !card.limitations.known.is_empty() {
        considerations.insert("technicalLimitations".into(), json!(card.limitations.known));
    }
    if !card.limitations.tradeoffs.is_empty() {
        considerations.insert("performanceTradeoffs".into(), json!(card.limitations.tradeoffs));
    }
    let ethics: Vec<Value> = card.ethics.considerations.iter().map(|c| json!({"name": c})).collect();
    if !ethics.is_empty() {
        considerations.insert("ethicalConsiderations".into(), json!(ethics));
    }
    let mut mc = json!({});
    if !params.is_empty() {
        mc["modelParameters"] = Value::Object(params);
    }
    if !metrics.is_empty() {
        mc["quantitativeAnalysis"] = json!({"performanceMetrics": metrics});
    }
    if !considerations.is_empty() {
        mc["considerations"] = Value::Object(considerations);
    }
    mc
}
