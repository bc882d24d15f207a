//! Store records → wire types.

use cairn_api_types as api;
use cairn_store::{
    audit::AuditEvent,
    model::Model,
    namespace::Namespace,
    version::{Alias, Version},
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the epoch → RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn model(m: Model) -> api::Model {
    api::Model {
        full_name: m.full_name(),
        namespace: m.namespace,
        name: m.name,
        description: m.description,
        latest_version: m.latest_version,
        tags: m.tags,
        aliases: m.aliases,
        risk_tier: m.risk_tier,
        team: m.team,
        owners: m.owners,
        created_at: rfc3339(m.created_at),
        created_by: m.created_by,
        updated_at: rfc3339(m.updated_at),
        updated_by: m.updated_by,
    }
}

pub fn version(v: Version) -> api::Version {
    api::Version {
        model: format!("{}/{}", v.namespace, v.model),
        version: v.version,
        description: v.description,
        source: v.source,
        run_id: v.run_id,
        metadata: v.metadata,
        digest: v.digest,
        file_count: u64::try_from(v.file_count).unwrap_or(0),
        size: u64::try_from(v.size).unwrap_or(0),
        tags: v.tags,
        aliases: v.aliases,
        semver: v.semver,
        code_commit: v.code_commit,
        training_job: v.training_job,
        stage: v.stage,
        created_at: rfc3339(v.created_at),
        created_by: v.created_by,
        updated_at: rfc3339(v.updated_at),
        updated_by: v.updated_by,
    }
}

pub fn alias(a: Alias) -> api::Alias {
    api::Alias {
        alias: a.alias,
        version: a.version,
        created_at: rfc3339(a.created_at),
        created_by: a.created_by,
        updated_at: rfc3339(a.updated_at),
        updated_by: a.updated_by,
    }
}

pub fn namespace(n: Namespace) -> api::Namespace {
    api::Namespace {
        name: n.name,
        description: n.description,
        model_count: n.model_count,
        created_at: rfc3339(n.created_at),
        created_by: n.created_by,
    }
}

pub fn audit_event(e: AuditEvent) -> api::AuditEvent {
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    api::AuditEvent {
        id: e.id,
        occurred_at: rfc3339(e.occurred_at),
        actor: e.actor,
        key_id: e.key_id,
        action: e.action,
        target: e.target,
        outcome: e.outcome,
        before: parse(e.before_state),
        after: parse(e.after_state),
        request_id: e.request_id,
        source_ip: e.source_ip,
        user_agent: e.user_agent,
        hash: e.hash,
    }
}

/// A checkpoint as the API shows it.
pub fn checkpoint(c: cairn_audit::Checkpoint) -> api::Checkpoint {
    api::Checkpoint { seq: c.seq, head: c.head, signed_at: c.signed_at, key_id: c.key_id, signature: c.signature }
}

/// A signature as the API shows it.
pub fn signature(s: cairn_audit::statement::SignatureEnvelope) -> api::Signature {
    api::Signature {
        kind: s.kind,
        statement: s.statement,
        key_id: s.key_id,
        public_key: s.public_key,
        signature: s.signature,
    }
}

/// A signature the API received.
pub fn signature_in(s: api::Signature) -> cairn_audit::statement::SignatureEnvelope {
    cairn_audit::statement::SignatureEnvelope {
        kind: s.kind,
        statement: s.statement,
        key_id: s.key_id,
        public_key: s.public_key,
        signature: s.signature,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_milliseconds() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
