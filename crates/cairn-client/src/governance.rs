//! Governance (docs/GOVERNANCE.md, docs/POLICIES.md): the lifecycle of a version and its
//! reviews, policies and their dry runs, policy exceptions, the card attached to a version,
//! evaluation suites and evaluation results.
//!
//! A version is named by a model reference (`ns/name`) and a selector: a number, `@alias` or
//! a semver label such as `1.4.2`.

use cairn_api_types as api;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Client, ClientError, model_path, seg};

/// A lifecycle action that moves a version (`POST …/versions/{v}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    /// Draft (or changes requested) → submitted for review.
    Submit,
    /// Approved → staging or production.
    Promote,
    /// Production → deprecated.
    Deprecate,
    /// Deprecated → retired.
    Retire,
}

impl LifecycleAction {
    /// The path segment of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Promote => "promote",
            Self::Deprecate => "deprecate",
            Self::Retire => "retire",
        }
    }
}

/// A rendering of a version's card (`GET …/card?format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CardFormat {
    /// A Hugging Face README.md with YAML front matter.
    Huggingface,
    /// Model Card Toolkit JSON.
    Google,
    /// The EU AI Act technical documentation (Markdown).
    EuAiAct,
    /// The EU Cyber Resilience Act documentation (Markdown).
    EuCra,
    /// HTML.
    Html,
    /// The canonical card (JSON).
    #[default]
    Json,
}

impl CardFormat {
    /// The value of the `format` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Huggingface => "huggingface",
            Self::Google => "google",
            Self::EuAiAct => "eu-ai-act",
            Self::EuCra => "eu-cra",
            Self::Html => "html",
            Self::Json => "json",
        }
    }
}

#[derive(Debug, Serialize)]
struct LimitQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct PoliciesQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    all_versions: bool,
}

#[derive(Debug, Serialize)]
struct PolicyQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
}

#[derive(Debug, Serialize)]
struct FormatQuery<'a> {
    format: &'a str,
}

#[derive(Debug, Serialize)]
struct AgainstQuery<'a> {
    against: &'a str,
}

/// `…/models/{ns}/{name}/versions/{v}`.
fn version_path(model: &str, version: &str) -> String {
    format!("{}/versions/{}", model_path(model), seg(version))
}

impl Client {
    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.write(Method::POST, path, body).await
    }

    /// `GET …/versions/{v}/lifecycle`: stage, what it waits for, transitions, reviews and the
    /// last policy results.
    pub async fn lifecycle(&self, model: &str, version: &str) -> Result<api::Lifecycle, ClientError> {
        self.get(&format!("{}/lifecycle", version_path(model, version))).await
    }

    /// `POST …/versions/{v}/{submit|promote|deprecate|retire}`. A refusal is a 409 with code
    /// `illegal_transition` or `policy_blocked` (the message names the blocking rules).
    pub async fn lifecycle_action(
        &self,
        model: &str,
        version: &str,
        action: LifecycleAction,
        req: &api::LifecycleRequest,
    ) -> Result<api::Lifecycle, ClientError> {
        self.post(&format!("{}/{}", version_path(model, version), action.as_str()), req).await
    }

    /// `POST …/versions/{v}/reviews`: approve, reject or comment in a reviewer role (403
    /// `not_a_reviewer` or `approval_refused` when the caller may not).
    pub async fn review(
        &self,
        model: &str,
        version: &str,
        req: &api::ReviewRequest,
    ) -> Result<api::Lifecycle, ClientError> {
        self.post(&format!("{}/reviews", version_path(model, version)), req).await
    }

    /// `POST …/versions/{v}/policy-check`: a dry run of the active policies, or of the
    /// document in `req.policy`. Nothing is stored.
    pub async fn policy_check(
        &self,
        model: &str,
        version: &str,
        req: &api::PolicyCheckRequest,
    ) -> Result<api::PolicyCheck, ClientError> {
        self.post(&format!("{}/policy-check", version_path(model, version)), req).await
    }

    /// `GET …/versions/{v}/policy-results`: recorded rule results, evaluations newest first
    /// and each one's rules in order.
    pub async fn policy_results(
        &self,
        model: &str,
        version: &str,
        limit: Option<usize>,
    ) -> Result<Vec<api::PolicyResult>, ClientError> {
        self.get_q(&format!("{}/policy-results", version_path(model, version)), &LimitQuery { limit }).await
    }

    /// `GET …/versions/{v}/exceptions`.
    pub async fn version_exceptions(
        &self,
        model: &str,
        version: &str,
    ) -> Result<api::PolicyExceptionList, ClientError> {
        self.get(&format!("{}/exceptions", version_path(model, version))).await
    }

    /// `POST …/versions/{v}/exceptions`: asks for one policy to be waived for this version.
    pub async fn request_exception(
        &self,
        model: &str,
        version: &str,
        req: &api::RequestException,
    ) -> Result<api::PolicyException, ClientError> {
        self.post(&format!("{}/exceptions", version_path(model, version)), req).await
    }

    /// `GET …/versions/{v}/card?format=`: the card rendered, as text.
    pub async fn card(&self, model: &str, version: &str, format: CardFormat) -> Result<String, ClientError> {
        let url = format!("{}{}/card", self.base, version_path(model, version));
        let req = self.authorised(self.http.get(url)).query(&FormatQuery { format: format.as_str() });
        let resp = self.check(req.send().await?).await?;
        Ok(resp.text().await?)
    }

    /// `PUT …/versions/{v}/card`: attaches (or in draft, replaces) the card.
    pub async fn put_card(&self, model: &str, version: &str, req: &api::PutCard) -> Result<api::CardInfo, ClientError> {
        self.write(Method::PUT, &format!("{}/card", version_path(model, version)), req).await
    }

    /// `GET …/versions/{v}/card/info`: source digest, completeness and findings.
    pub async fn card_info(&self, model: &str, version: &str) -> Result<api::CardInfo, ClientError> {
        self.get(&format!("{}/card/info", version_path(model, version))).await
    }

    /// `GET …/versions/{v}/card/diff?against=`: `{from, to, diff, text}`.
    pub async fn card_diff(&self, model: &str, version: &str, against: &str) -> Result<serde_json::Value, ClientError> {
        self.get_q(&format!("{}/card/diff", version_path(model, version)), &AgainstQuery { against }).await
    }

    /// `GET …/versions/{v}/evaluations`: results, oldest first.
    pub async fn evaluations(&self, model: &str, version: &str) -> Result<api::EvalResultList, ClientError> {
        self.get(&format!("{}/evaluations", version_path(model, version))).await
    }

    /// `POST …/versions/{v}/evaluations`: results judged against the suite's thresholds.
    pub async fn submit_evaluation(
        &self,
        model: &str,
        version: &str,
        req: &api::SubmitEvaluation,
    ) -> Result<api::EvalResult, ClientError> {
        self.post(&format!("{}/evaluations", version_path(model, version)), req).await
    }

    /// `POST /api/v1/policies`: a changed document becomes a new version (`created` true in
    /// the answer); the same document only changes its status.
    pub async fn apply_policy(&self, req: &api::ApplyPolicy) -> Result<api::Policy, ClientError> {
        self.post("/api/v1/policies", req).await
    }

    /// `GET /api/v1/policies`: the latest version of each policy, or all of them.
    pub async fn list_policies(
        &self,
        status: Option<&str>,
        all_versions: bool,
    ) -> Result<api::PolicyList, ClientError> {
        self.get_q("/api/v1/policies", &PoliciesQuery { status, all_versions }).await
    }

    /// `GET /api/v1/policies/{name}?version=`.
    pub async fn get_policy(&self, name: &str, version: Option<i64>) -> Result<api::Policy, ClientError> {
        self.get_q(&format!("/api/v1/policies/{}", seg(name)), &PolicyQuery { version }).await
    }

    /// `PATCH /api/v1/policies/{name}/versions/{version}`.
    pub async fn set_policy_status(&self, name: &str, version: i64, status: &str) -> Result<api::Policy, ClientError> {
        let path = format!("/api/v1/policies/{}/versions/{version}", seg(name));
        self.write(Method::PATCH, &path, &api::SetPolicyStatus { status: status.to_owned() }).await
    }

    /// `GET /api/v1/policy-exceptions`: exceptions waiting for a decision.
    pub async fn pending_exceptions(&self) -> Result<api::PolicyExceptionList, ClientError> {
        self.get("/api/v1/policy-exceptions").await
    }

    /// `POST /api/v1/policy-exceptions/{id}/decision`.
    pub async fn decide_exception(
        &self,
        id: &str,
        req: &api::DecideException,
    ) -> Result<api::PolicyException, ClientError> {
        self.post(&format!("/api/v1/policy-exceptions/{}/decision", seg(id)), req).await
    }

    /// `GET /api/v1/namespaces/{ns}/eval-suites`.
    pub async fn list_eval_suites(&self, namespace: &str) -> Result<api::EvalSuiteList, ClientError> {
        self.get(&format!("/api/v1/namespaces/{}/eval-suites", seg(namespace))).await
    }

    /// `GET /api/v1/namespaces/{ns}/eval-suites/{name}`.
    pub async fn get_eval_suite(&self, namespace: &str, name: &str) -> Result<api::EvalSuite, ClientError> {
        self.get(&format!("/api/v1/namespaces/{}/eval-suites/{}", seg(namespace), seg(name))).await
    }

    /// `PUT /api/v1/namespaces/{ns}/eval-suites/{name}`: creates or replaces a suite.
    pub async fn put_eval_suite(
        &self,
        namespace: &str,
        name: &str,
        req: &api::PutEvalSuite,
    ) -> Result<api::EvalSuite, ClientError> {
        let path = format!("/api/v1/namespaces/{}/eval-suites/{}", seg(namespace), seg(name));
        self.write(Method::PUT, &path, req).await
    }

    /// `DELETE /api/v1/namespaces/{ns}/eval-suites/{name}`.
    pub async fn delete_eval_suite(&self, namespace: &str, name: &str) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/namespaces/{}/eval-suites/{}", seg(namespace), seg(name))).await
    }
}

/// Filters of the evaluation job list.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalJobQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

fn job_path(id: &str, action: &str) -> String {
    format!("/api/v1/eval-jobs/{}/{action}", seg(id))
}

/// Evaluation jobs (docs/GOVERNANCE.md#evaluation-jobs).
impl Client {
    /// `POST …/versions/{v}/eval-jobs`: queues a suite to run on a version (or returns the job
    /// already queued or running for it).
    pub async fn queue_eval_job(
        &self,
        model: &str,
        version: &str,
        req: &api::QueueEvalJob,
    ) -> Result<api::EvalJob, ClientError> {
        self.post(&format!("{}/eval-jobs", version_path(model, version)), req).await
    }

    /// `GET /api/v1/eval-jobs`.
    pub async fn eval_jobs(&self, q: &EvalJobQuery) -> Result<api::EvalJobList, ClientError> {
        self.get_q("/api/v1/eval-jobs", q).await
    }

    /// `GET /api/v1/eval-jobs/{id}`.
    pub async fn eval_job(&self, id: &str) -> Result<api::EvalJob, ClientError> {
        self.get(&format!("/api/v1/eval-jobs/{}", seg(id))).await
    }

    /// `POST /api/v1/eval-jobs/claim`: the next job to run, or `None` when there is none.
    pub async fn claim_eval_job(&self, req: &api::ClaimEvalJob) -> Result<Option<api::ClaimedEvalJob>, ClientError> {
        self.send::<_, (), _>(Method::POST, "/api/v1/eval-jobs/claim", None, Some(req)).await
    }

    /// `POST /api/v1/eval-jobs/{id}/heartbeat`: renews the lease; returns the job as it is.
    pub async fn heartbeat_eval_job(&self, id: &str, req: &api::EvalJobHeartbeat) -> Result<api::EvalJob, ClientError> {
        self.post(&job_path(id, "heartbeat"), req).await
    }

    /// `POST /api/v1/eval-jobs/{id}/complete`.
    pub async fn complete_eval_job(
        &self,
        id: &str,
        req: &api::CompleteEvalJob,
    ) -> Result<api::CompletedEvalJob, ClientError> {
        self.post(&job_path(id, "complete"), req).await
    }

    /// `POST /api/v1/eval-jobs/{id}/fail`.
    pub async fn fail_eval_job(&self, id: &str, req: &api::FailEvalJob) -> Result<api::EvalJob, ClientError> {
        self.post(&job_path(id, "fail"), req).await
    }

    /// `POST /api/v1/eval-jobs/{id}/cancel`.
    pub async fn cancel_eval_job(&self, id: &str, req: &api::CancelEvalJob) -> Result<api::EvalJob, ClientError> {
        self.post(&job_path(id, "cancel"), req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_paths_encode_each_segment() {
        assert_eq!(version_path("nlp/ner", "1.4.2"), "/api/v1/models/nlp/ner/versions/1.4.2");
        assert_eq!(version_path("nlp/ner", "@prod"), "/api/v1/models/nlp/ner/versions/@prod");
        assert_eq!(version_path("nlp/ner", "a/b"), "/api/v1/models/nlp/ner/versions/a%2Fb");
    }
}
