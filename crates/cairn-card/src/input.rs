//! Reading inputs: the file policy (allowed types, size limit) and the parsers for
//! evaluation results, model configuration, dataset information and training logs.
//!
//! Every parser returns a partial [`Card`]; `generate` overlays them. Files are read through
//! a size-limited reader, CSV and logs row by row, so memory stays bounded by the number of
//! distinct metrics, not by the size of the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use crate::error::{CardError, Result};
use crate::model::{Card, Dataset, Metric};

/// The default per-file size limit (the security policy's 10 MB).
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 10 * 1024 * 1024;
/// File types accepted as card inputs.
pub const ALLOWED_EXTENSIONS: &[&str] = &["json", "yaml", "yml", "csv", "md", "log"];
/// Distinct metrics one results file may hold; keeps aggregation memory bounded.
pub const MAX_DISTINCT_METRICS: usize = 100_000;

/// Which files may be read, and how much of them.
#[derive(Debug, Clone)]
pub struct InputPolicy {
    pub max_bytes: u64,
}

impl Default for InputPolicy {
    fn default() -> Self {
        InputPolicy { max_bytes: DEFAULT_MAX_INPUT_BYTES }
    }
}

/// The lower-case extension of a path, if it is one we accept.
pub fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase())
}

/// A reader that fails once more than `limit` bytes have been read.
pub struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            // One probe byte tells a file of exactly `limit` bytes from a larger one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!("input exceeds {} bytes", self.limit))),
            };
        }
        let max = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl InputPolicy {
    /// Checks type and size, then opens the file behind a size-limited buffered reader.
    pub fn open(&self, path: &Path) -> Result<BufReader<LimitedReader<File>>> {
        self.open_with(path, ALLOWED_EXTENSIONS)
    }

    pub(crate) fn open_with(&self, path: &Path, allowed: &[&str]) -> Result<BufReader<LimitedReader<File>>> {
        match extension(path) {
            Some(ext) if allowed.contains(&ext.as_str()) => {}
            _ => {
                let allowed = allowed.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(" ");
                return Err(CardError::BadExtension { file: path.to_path_buf(), allowed });
            }
        }
        let file = File::open(path).map_err(|e| CardError::io(path, e))?;
        let meta = file.metadata().map_err(|e| CardError::io(path, e))?;
        if !meta.is_file() {
            return Err(CardError::Invalid(format!("{}: not a regular file", path.display())));
        }
        if meta.len() > self.max_bytes {
            return Err(CardError::TooLarge { file: path.to_path_buf(), limit: self.max_bytes });
        }
        let limited = LimitedReader { inner: file, remaining: self.max_bytes, limit: self.max_bytes };
        Ok(BufReader::with_capacity(64 * 1024, limited))
    }

    /// Reads a whole (small, size-limited) file as UTF-8 text.
    pub fn read_to_string(&self, path: &Path) -> Result<String> {
        self.read_to_string_with(path, ALLOWED_EXTENSIONS)
    }

    pub(crate) fn read_to_string_with(&self, path: &Path, allowed: &[&str]) -> Result<String> {
        let mut reader = self.open_with(path, allowed)?;
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(|e| self.map_read_error(path, e))?;
        String::from_utf8(bytes).map_err(|e| {
            let (line, column) = line_col_of_offset(e.as_bytes(), e.utf8_error().valid_up_to());
            CardError::parse(path, Some(line), Some(column), "file is not valid UTF-8")
        })
    }

    fn map_read_error(&self, path: &Path, e: std::io::Error) -> CardError {
        if e.to_string().starts_with("input exceeds") {
            CardError::TooLarge { file: path.to_path_buf(), limit: self.max_bytes }
        } else {
            CardError::io(path, e)
        }
    }
}

fn line_col_of_offset(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let col = before.iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
    (line, col)
}

/// Parses YAML text into `T`, with errors naming file, line and column.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(path: &Path, text: &str, line_offset: u64) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|e| CardError::from_yaml(path, e, line_offset))
}

/// Parses JSON text into `T`, with errors naming file, line and column.
pub fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| CardError::from_json(path, e))
}

fn parse_structured<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    match extension(path).as_deref() {
        Some("json") => parse_json(path, text),
        _ => parse_yaml(path, text, 0),
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation results

#[derive(Deserialize)]
#[serde(untagged)]
enum ConfidenceInterval {
    Pair([f64; 2]),
    Bounds { lower: f64, upper: f64 },
}

impl From<ConfidenceInterval> for [f64; 2] {
    fn from(ci: ConfidenceInterval) -> Self {
        match ci {
            ConfidenceInterval::Pair(p) => p,
            ConfidenceInterval::Bounds { lower, upper } => [lower, upper],
        }
    }
}

#[derive(Deserialize)]
struct MetricRecord {
    #[serde(alias = "metric", alias = "type")]
    name: String,
    value: f64,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    split: Option<String>,
    #[serde(default)]
    slice: Option<String>,
    #[serde(default)]
    confidence_interval: Option<ConfidenceInterval>,
    #[serde(default)]
    description: Option<String>,
}

impl From<MetricRecord> for Metric {
    fn from(r: MetricRecord) -> Self {
        Metric {
            name: r.name,
            value: r.value,
            dataset: r.dataset,
            split: r.split,
            slice: r.slice,
            confidence_interval: r.confidence_interval.map(Into::into),
            samples: None,
            description: r.description,
        }
    }
}

#[derive(Deserialize)]
struct RecordList {
    #[serde(alias = "results")]
    metrics: Vec<MetricRecord>,
    #[serde(default, alias = "model")]
    model_name: Option<String>,
    #[serde(default, alias = "datasets")]
    dataset: Option<OneOrMany>,
}

/// A string or a list of strings.
#[derive(Deserialize, serde::Serialize, Clone, Debug)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

fn results_card(metrics: Vec<Metric>, model_name: Option<String>, datasets: Vec<String>) -> Card {
    let mut card = Card::default();
    card.model.name = model_name;
    card.evaluation.datasets = datasets.iter().map(|n| Dataset { name: n.clone(), ..Dataset::default() }).collect();
    let single = if datasets.len() == 1 { datasets.first().cloned() } else { None };
    card.evaluation.metrics = metrics
        .into_iter()
        .map(|mut m| {
            if m.dataset.is_none() {
                m.dataset = single.clone();
            }
            m
        })
        .collect();
    card
}

fn metric_from_value(name: &str, value: &serde_json::Value, dataset: Option<&str>) -> Option<Metric> {
    use serde_json::Value;
    match value {
        Value::Number(n) => Some(Metric { dataset: dataset.map(str::to_string), ..Metric::new(name, n.as_f64()?) }),
        Value::Object(obj) => {
            let v = obj.get("value").or_else(|| obj.get("score"))?.as_f64()?;
            let ci = obj.get("confidence_interval").and_then(|c| {
                let a = c.as_array()?;
                Some([a.first()?.as_f64()?, a.get(1)?.as_f64()?])
            });
            let s = |k: &str| obj.get(k).and_then(|x| x.as_str()).map(str::to_string);
            Some(Metric {
                name: name.to_string(),
                value: v,
                dataset: s("dataset").or(dataset.map(str::to_string)),
                split: s("split"),
                slice: s("slice"),
                confidence_interval: ci,
                samples: None,
                description: s("description"),
            })
        }
        _ => None,
    }
}

/// Interprets a parsed JSON/YAML document as evaluation results.
fn results_from_value(path: &Path, text: &str, value: serde_json::Value) -> Result<Card> {
    use serde_json::Value;
    match value {
        Value::Array(_) => {
            let records: Vec<MetricRecord> = parse_structured(path, text)?;
            Ok(results_card(records.into_iter().map(Into::into).collect(), None, vec![]))
        }
        Value::Object(ref obj) if obj.get("metrics").or_else(|| obj.get("results")).is_some_and(Value::is_array) => {
            let list: RecordList = parse_structured(path, text)?;
            let datasets = list.dataset.map(OneOrMany::into_vec).unwrap_or_default();
            Ok(results_card(list.metrics.into_iter().map(Into::into).collect(), list.model_name, datasets))
        }
        Value::Object(obj) => {
            let mut metrics = Vec::new();
            let mut model_name = None;
            let mut datasets = Vec::new();
            for (key, v) in &obj {
                match key.as_str() {
                    "model_name" | "model" => model_name = v.as_str().map(str::to_string),
                    "dataset" | "datasets" => match v {
                        Value::String(s) => datasets.push(s.clone()),
                        Value::Array(a) => datasets.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string))),
                        _ => {}
                    },
                    _ => {
                        if let Some(m) = metric_from_value(key, v, None) {
                            metrics.push(m);
                        } else if let Value::Object(inner) = v {
                            // `{"imdb": {"accuracy": 0.9}}`: metrics grouped by dataset.
                            for (name, iv) in inner {
                                if let Some(m) = metric_from_value(name, iv, Some(key)) {
                                    metrics.push(m);
                                }
                            }
                        }
                    }
                }
            }
            if metrics.is_empty() {
                return Err(CardError::parse(
                    path,
                    None,
                    None,
                    "no numeric metrics found (expected {\"accuracy\": 0.95, …} or a list of {name, value} records)",
                ));
            }
            Ok(results_card(metrics, model_name, datasets))
        }
        _ => Err(CardError::parse(path, Some(1), Some(1), "expected an object or a list of metric records")),
    }
}

/// Evaluation results already parsed from JSON (the server's uploads): `{"accuracy": 0.9}`
/// or a list of `{name, value, dataset?, split?, slice?}` records; `name` labels errors.
pub fn results_from_json(name: &Path, value: serde_json::Value) -> Result<Card> {
    let text = value.to_string();
    results_from_value(name, &text, value)
}

/// Reads evaluation results (`.json`, `.yaml`/`.yml`, `.csv`).
pub fn read_results(path: &Path, policy: &InputPolicy) -> Result<Card> {
    match extension(path).as_deref() {
        Some("csv") => read_results_csv(path, policy),
        Some("json") | Some("yaml") | Some("yml") => {
            let text = policy.read_to_string(path)?;
            let value: serde_json::Value = parse_structured(path, &text)?;
            results_from_value(path, &text, value)
        }
        Some("log") => read_training_log(path, policy),
        _ => Err(CardError::BadExtension { file: path.to_path_buf(), allowed: ".json .yaml .yml .csv .log".into() }),
    }
}

/// A field, with surrounding ASCII whitespace trimmed (in place: no copy of the record).
fn field(record: &csv::ByteRecord, i: Option<usize>) -> &[u8] {
    i.and_then(|i| record.get(i)).unwrap_or(b"").trim_ascii()
}

#[derive(Default)]
struct Aggregate {
    sum: f64,
    count: u64,
}

/// Reads a results CSV row by row. Long layout: `metric,value[,dataset,split,slice]`.
/// Wide layout: one column per metric (plus optional dataset/split/slice columns).
/// Repeated rows for the same metric are averaged (`samples` records how many).
pub fn read_results_csv(path: &Path, policy: &InputPolicy) -> Result<Card> {
    let reader = policy.open(path)?;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::Headers)
        .buffer_capacity(64 * 1024)
        .from_reader(reader);
    let csv_err = |e: csv::Error, policy: &InputPolicy| -> CardError {
        if let csv::ErrorKind::Io(io) = e.kind()
            && io.to_string().starts_with("input exceeds")
        {
            return CardError::TooLarge { file: path.to_path_buf(), limit: policy.max_bytes };
        }
        let line = e.position().map(|p| p.line());
        let msg = match e.kind() {
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("invalid CSV: row has {len} fields, the header has {expected_len}")
            }
            csv::ErrorKind::Utf8 { err, .. } => {
                format!("invalid CSV: field {} is not UTF-8", err.field() + 1)
            }
            _ => format!("invalid CSV: {e}"),
        };
        let column = match e.kind() {
            csv::ErrorKind::Utf8 { err, .. } => Some(err.field() as u64 + 1),
            _ => None,
        };
        CardError::parse(path, line, column, msg)
    };
    let headers: Vec<String> =
        csv.headers().map_err(|e| csv_err(e, policy))?.iter().map(|h| h.to_ascii_lowercase()).collect();
    if headers.iter().all(|h| h.is_empty()) {
        return Err(CardError::parse(path, Some(1), Some(1), "empty CSV: expected a header row such as metric,value"));
    }
    let find = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let scope_cols = [find(&["dataset"]), find(&["split"]), find(&["slice", "subgroup"])];
    let long = (find(&["metric", "name", "metric_name"]), find(&["value", "score"]));

    let mut aggregates: HashMap<Vec<u8>, Aggregate> = HashMap::new();
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut key = Vec::with_capacity(128);
    let mut record = csv::ByteRecord::new();
    let mut add = |key: &[u8], value: f64, line: u64| -> Result<()> {
        if let Some(agg) = aggregates.get_mut(key) {
            agg.sum += value;
            agg.count += 1;
        } else {
            if aggregates.len() >= MAX_DISTINCT_METRICS {
                return Err(CardError::parse(
                    path,
                    Some(line),
                    None,
                    format!("more than {MAX_DISTINCT_METRICS} distinct metrics"),
                ));
            }
            aggregates.insert(key.to_vec(), Aggregate { sum: value, count: 1 });
            order.push(key.to_vec());
        }
        Ok(())
    };
    let parse_number = |bytes: &[u8], line: u64, col: usize| -> Result<f64> {
        std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<f64>().ok()).filter(|v| v.is_finite()).ok_or_else(|| {
            CardError::parse(
                path,
                Some(line),
                Some(col as u64 + 1),
                format!("invalid CSV: column \"{}\" is not a number", headers[col]),
            )
        })
    };
    let scope_key = |key: &mut Vec<u8>, record: &csv::ByteRecord| {
        for c in scope_cols {
            key.push(0);
            key.extend_from_slice(field(record, c));
        }
    };

    match long {
        (Some(name_col), Some(value_col)) => loop {
            match csv.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(csv_err(e, policy)),
            }
            let line = record.position().map_or(0, |p| p.line());
            let name = field(&record, Some(name_col));
            if name.is_empty() {
                return Err(CardError::parse(
                    path,
                    Some(line),
                    Some(name_col as u64 + 1),
                    "invalid CSV: empty metric name",
                ));
            }
            let value = parse_number(field(&record, Some(value_col)), line, value_col)?;
            key.clear();
            key.extend_from_slice(name);
            scope_key(&mut key, &record);
            add(&key, value, line)?;
        },
        _ => {
            let metric_cols: Vec<usize> = (0..headers.len())
                .filter(|i| {
                    !scope_cols.contains(&Some(*i))
                        && !["model", "model_name", "run", "run_id", "timestamp", "epoch", "step"]
                            .contains(&headers[*i].as_str())
                })
                .collect();
            if metric_cols.is_empty() {
                return Err(CardError::parse(
                    path,
                    Some(1),
                    Some(1),
                    "invalid CSV: no metric columns (expected metric,value or one column per metric)",
                ));
            }
            loop {
                match csv.read_byte_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => return Err(csv_err(e, policy)),
                }
                let line = record.position().map_or(0, |p| p.line());
                for &c in &metric_cols {
                    let raw = field(&record, Some(c));
                    if raw.is_empty() {
                        continue;
                    }
                    let value = parse_number(raw, line, c)?;
                    key.clear();
                    key.extend_from_slice(headers[c].as_bytes());
                    scope_key(&mut key, &record);
                    add(&key, value, line)?;
                }
            }
        }
    }
    if order.is_empty() {
        return Err(CardError::parse(path, None, None, "no metrics found in CSV"));
    }
    let opt = |b: &[u8]| (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned());
    let mut datasets = std::collections::BTreeSet::new();
    let metrics = order
        .iter()
        .map(|k| {
            let agg = &aggregates[k];
            let mut parts = k.split(|b| *b == 0);
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let dataset = parts.next().and_then(opt);
            if let Some(d) = &dataset {
                datasets.insert(d.clone());
            }
            Metric {
                name,
                value: agg.sum / agg.count as f64,
                dataset,
                split: parts.next().and_then(opt),
                slice: parts.next().and_then(opt),
                samples: (agg.count > 1).then_some(agg.count),
                ..Metric::default()
            }
        })
        .collect();
    let mut card = results_card(metrics, None, vec![]);
    card.evaluation.datasets = datasets.into_iter().map(|name| Dataset { name, ..Dataset::default() }).collect();
    Ok(card)
}

// ---------------------------------------------------------------------------------------
// Model configuration

#[derive(Deserialize, Default)]
#[serde(default)]
struct ModelConfig {
    #[serde(alias = "model_name")]
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    license: Option<String>,
    authors: Option<OneOrMany>,
    contact: Option<String>,
    base_model: Option<String>,
    language: Option<OneOrMany>,
    tags: Option<OneOrMany>,
    framework: Option<String>,
    architecture: Option<String>,
    model_type: Option<String>,
    library_name: Option<String>,
    pipeline_tag: Option<String>,
    hyperparameters: std::collections::BTreeMap<String, serde_json::Value>,
    epochs: Option<u64>,
}

/// Reads a model configuration (`.yaml`/`.yml`/`.json`): name, version, authors, license,
/// framework, architecture, hyperparameters.
pub fn read_model_config(path: &Path, policy: &InputPolicy) -> Result<Card> {
    let text = policy.read_to_string_with(path, &["yaml", "yml", "json"])?;
    let c: ModelConfig = parse_structured(path, &text)?;
    let mut card = Card::default();
    let m = &mut card.model;
    m.name = c.name;
    m.version = c.version;
    m.description = c.description;
    m.license = c.license;
    m.authors = c.authors.map(OneOrMany::into_vec).unwrap_or_default();
    m.contact = c.contact;
    m.base_model = c.base_model;
    m.language = c.language.map(OneOrMany::into_vec).unwrap_or_default();
    m.tags = c.tags.map(OneOrMany::into_vec).unwrap_or_default();
    m.framework = c.framework;
    m.architecture = c.architecture;
    m.model_type = c.model_type;
    m.library_name = c.library_name;
    m.pipeline_tag = c.pipeline_tag;
    card.training.hyperparameters = c.hyperparameters;
    card.training.epochs = c.epochs;
    Ok(card)
}

// ---------------------------------------------------------------------------------------
// Dataset information

#[derive(Deserialize)]
#[serde(untagged)]
enum DatasetEntry {
    Name(String),
    Full(Dataset),
}

impl From<DatasetEntry> for Dataset {
    fn from(e: DatasetEntry) -> Self {
        match e {
            DatasetEntry::Name(name) => Dataset { name, ..Dataset::default() },
            DatasetEntry::Full(d) => d,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DatasetList {
    One(DatasetEntry),
    Many(Vec<DatasetEntry>),
}

impl DatasetList {
    fn into_vec(self) -> Vec<Dataset> {
        match self {
            DatasetList::One(e) => vec![e.into()],
            DatasetList::Many(v) => v.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BiasAnalysis {
    bias_risks: Vec<String>,
    fairness_metrics: std::collections::BTreeMap<String, f64>,
    sensitive_attributes: Vec<String>,
    #[serde(alias = "bias_mitigation")]
    mitigations: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DatasetInfo {
    datasets: Option<DatasetList>,
    training_data: Option<DatasetList>,
    evaluation_data: Option<DatasetList>,
    preprocessing: Option<String>,
    bias_analysis: BiasAnalysis,
}

/// Reads dataset information (`.json`/`.yaml`): datasets, preprocessing, bias analysis.
pub fn read_dataset_info(path: &Path, policy: &InputPolicy) -> Result<Card> {
    let text = policy.read_to_string_with(path, &["json", "yaml", "yml"])?;
    let d: DatasetInfo = parse_structured(path, &text)?;
    let mut card = Card::default();
    let training: Vec<Dataset> = d.training_data.map(DatasetList::into_vec).unwrap_or_default();
    let general: Vec<Dataset> = d.datasets.map(DatasetList::into_vec).unwrap_or_default();
    card.training.datasets = if training.is_empty() { general.clone() } else { training };
    card.evaluation.datasets = d.evaluation_data.map(DatasetList::into_vec).unwrap_or_default();
    card.training.preprocessing = d.preprocessing;
    card.ethics.bias_risks = d.bias_analysis.bias_risks;
    card.ethics.fairness_metrics = d.bias_analysis.fairness_metrics;
    card.ethics.sensitive_attributes = d.bias_analysis.sensitive_attributes;
    card.ethics.mitigations = d.bias_analysis.mitigations;
    Ok(card)
}

// ---------------------------------------------------------------------------------------
// Training logs

const HYPERPARAMETERS: &[&str] = &[
    "learning_rate",
    "lr",
    "batch_size",
    "train_batch_size",
    "per_device_train_batch_size",
    "weight_decay",
    "warmup_steps",
    "warmup_ratio",
    "seed",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "optimizer",
    "dropout",
];

fn is_metric_name(name: &str) -> bool {
    const PARTS: &[&str] = &[
        "loss",
        "acc",
        "f1",
        "precision",
        "recall",
        "auc",
        "perplexity",
        "bleu",
        "rouge",
        "mse",
        "mae",
        "rmse",
        "r2",
        "wer",
        "cer",
        "map",
    ];
    PARTS.iter().any(|p| name.contains(p))
}

/// Reads a training log line by line (Keras, Hugging Face Trainer, PyTorch Lightning and
/// plain `key: value` styles): the last value of each metric, the highest epoch, the
/// hyperparameters logged, and the hardware line if any.
pub fn read_training_log(path: &Path, policy: &InputPolicy) -> Result<Card> {
    let reader = policy.open_with(path, &["log"])?;
    // `'loss': 0.31`, `loss: 0.31`, `loss=0.31`, `val_acc 0.9` after a dash.
    let pair = regex::Regex::new(
        r#"['"]?([A-Za-z_][A-Za-z0-9_./-]*)['"]?\s*[:=]\s*['"]?([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"#,
    )
    .expect("static regex");
    let epoch_re =
        regex::Regex::new(r"(?i)\bepoch\s*[:=]?\s*\[?\s*(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?").expect("static regex");
    let hardware_re = regex::Regex::new(r"(?i)\b(?:gpu|cuda device|device name)\s*[:=]\s*(.+)$").expect("static regex");
    let mut card = Card::default();
    let mut epochs: Option<f64> = None;
    let mut saw_anything = false;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| {
            if e.to_string().starts_with("input exceeds") {
                CardError::TooLarge { file: path.to_path_buf(), limit: policy.max_bytes }
            } else if e.kind() == std::io::ErrorKind::InvalidData {
                CardError::parse(path, Some(i as u64 + 1), None, "line is not valid UTF-8")
            } else {
                CardError::io(path, e)
            }
        })?;
        if let Some(c) = epoch_re.captures(&line)
            && let Ok(e) = c[1].parse::<f64>()
        {
            epochs = Some(epochs.map_or(e, |x: f64| x.max(e)));
            saw_anything = true;
        }
        if let Some(c) = hardware_re.captures(&line) {
            card.environment.hardware = Some(c[1].trim().to_string());
        }
        for c in pair.captures_iter(&line) {
            let name = c[1].to_ascii_lowercase();
            let Ok(value) = c[2].parse::<f64>() else {
                continue;
            };
            if name == "epoch" || name == "step" || name == "global_step" {
                continue;
            }
            if HYPERPARAMETERS.contains(&name.as_str()) {
                // The first value is the configured one; schedulers change lr later.
                card.training.hyperparameters.entry(name).or_insert_with(|| number_value(value));
                saw_anything = true;
            } else if is_metric_name(&name) {
                card.training.final_metrics.insert(name, value);
                saw_anything = true;
            }
        }
    }
    if !saw_anything {
        return Err(CardError::parse(
            path,
            None,
            None,
            "no epochs, metrics or hyperparameters found in the training log",
        ));
    }
    card.training.epochs = epochs.map(|e| e.ceil() as u64);
    Ok(card)
}

fn number_value(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 1e15 { serde_json::Value::from(v as i64) } else { serde_json::Value::from(v) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::File::create(&p).and_then(|mut f| f.write_all(text.as_bytes())).expect("write");
        p
    }

    #[test]
    fn flat_json_with_ci_and_dataset() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(
            &dir,
            "r.json",
            r#"{"model_name":"m","accuracy":0.9,"roc_auc":{"value":0.96,"confidence_interval":[0.95,0.98]},"dataset":"imdb","notes":"x"}"#,
        );
        let card = read_results(&p, &InputPolicy::default()).expect("parse");
        assert_eq!(card.model.name.as_deref(), Some("m"));
        assert_eq!(card.evaluation.metrics.len(), 2);
        assert!(card.evaluation.metrics.iter().all(|m| m.dataset.as_deref() == Some("imdb")));
        let auc = card.evaluation.metrics.iter().find(|m| m.name == "roc_auc").expect("auc");
        assert_eq!(auc.confidence_interval, Some([0.95, 0.98]));
    }

    #[test]
    fn record_list_json_and_yaml() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(&dir, "r.json", r#"[{"name":"f1","value":0.8,"dataset":"d","split":"test","slice":"en"}]"#);
        let card = read_results(&p, &InputPolicy::default()).expect("parse");
        assert_eq!(card.evaluation.metrics[0].slice.as_deref(), Some("en"));
        let p = write(&dir, "r.yaml", "metrics:\n  - name: f1\n    value: 0.8\n  - name: acc\n    value: 0.7\n");
        let card = read_results(&p, &InputPolicy::default()).expect("parse");
        assert_eq!(card.evaluation.metrics.len(), 2);
    }

    #[test]
    fn bad_record_names_line_and_column() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(&dir, "r.json", "[\n  {\"name\": \"f1\", \"value\": \"high\"}\n]");
        let err = read_results(&p, &InputPolicy::default()).expect_err("must fail").to_string();
        assert!(err.contains("r.json:2:"), "{err}");
    }

    #[test]
    fn csv_long_layout_aggregates_repeats() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(
            &dir,
            "r.csv",
            "metric,value,dataset,split,slice\naccuracy,0.8,d,test,\naccuracy,0.9,d,test,\nf1,0.5,d,test,en\n",
        );
        let card = read_results(&p, &InputPolicy::default()).expect("parse");
        let acc = &card.evaluation.metrics[0];
        assert!((acc.value - 0.85).abs() < 1e-12);
        assert_eq!(acc.samples, Some(2));
        assert_eq!(card.evaluation.metrics[1].slice.as_deref(), Some("en"));
    }

    #[test]
    fn csv_wide_layout() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(&dir, "r.csv", "dataset,accuracy,f1\nimdb,0.9,0.8\n");
        let card = read_results(&p, &InputPolicy::default()).expect("parse");
        assert_eq!(card.evaluation.metrics.len(), 2);
        assert_eq!(card.evaluation.datasets[0].name, "imdb");
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(&dir, "r.csv", "metric,value\naccuracy,0.9\nf1,abc\n");
        let err = read_results(&p, &InputPolicy::default()).expect_err("fail").to_string();
        assert!(err.contains("r.csv:3:2"), "{err}");
        let p = write(&dir, "u.csv", "metric,value\naccuracy,0.9,extra\n");
        let err = read_results(&p, &InputPolicy::default()).expect_err("fail").to_string();
        assert!(err.contains("u.csv:2"), "{err}");
    }

    #[test]
    fn size_limit_and_extension() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(&dir, "r.csv", "metric,value\naccuracy,0.9\n");
        let err = read_results(&p, &InputPolicy { max_bytes: 10 }).expect_err("fail");
        assert!(matches!(err, CardError::TooLarge { .. }));
        let p = write(&dir, "r.txt", "x");
        assert!(matches!(read_results(&p, &InputPolicy::default()), Err(CardError::BadExtension { .. })));
    }

    #[test]
    fn training_logs_of_several_styles() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(
            &dir,
            "t.log",
            "learning_rate: 2e-5\nbatch_size: 32\nepoch: 1, loss: 0.52, accuracy: 0.81\nEpoch 3/3\n750/750 - 3s - loss: 0.21 - accuracy: 0.92 - val_loss: 0.3\n{'loss': 0.2, 'learning_rate': 1e-05, 'epoch': 2.5}\nGPU: NVIDIA A100\n",
        );
        let card = read_training_log(&p, &InputPolicy::default()).expect("parse");
        assert_eq!(card.training.epochs, Some(3));
        assert_eq!(card.training.final_metrics["loss"], 0.2);
        assert_eq!(card.training.final_metrics["val_loss"], 0.3);
        assert_eq!(card.training.hyperparameters["learning_rate"], serde_json::json!(2e-5));
        assert_eq!(card.training.hyperparameters["batch_size"], serde_json::json!(32));
        assert_eq!(card.environment.hardware.as_deref(), Some("NVIDIA A100"));
    }

    #[test]
    fn config_and_dataset_info() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(
            &dir,
            "c.yaml",
            "name: m\nversion: 1.0.0\nauthors: ML Team\nlanguage: [en]\nhyperparameters: {epochs: 3}\n",
        );
        let card = read_model_config(&p, &InputPolicy::default()).expect("parse");
        assert_eq!(card.model.authors, ["ML Team"]);
        let p = write(
            &dir,
            "d.json",
            r#"{"datasets":["imdb"],"preprocessing":"lower","bias_analysis":{"bias_risks":["x"],"fairness_metrics":{"dp":0.02}}}"#,
        );
        let card = read_dataset_info(&p, &InputPolicy::default()).expect("parse");
        assert_eq!(card.training.datasets[0].name, "imdb");
        assert_eq!(card.ethics.fairness_metrics["dp"], 0.02);
        let p = write(&dir, "bad.yaml", "name: [unclosed\n");
        let err = read_model_config(&p, &InputPolicy::default()).expect_err("fail").to_string();
        assert!(err.contains("bad.yaml:"), "{err}");
    }
}
