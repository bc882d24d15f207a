//! Signatures over versions. When a version is committed the server signs a
//! [`VersionStatement`] (model, number, manifest digest, time) in the same transaction; the
//! pusher may add their own signatures over a [`PushStatement`] (model, manifest digest),
//! which are checked here before they are stored.

use std::sync::Arc;

use cairn_audit::SigningKey;
use cairn_audit::statement::{PUSH_TYPE, PushStatement, SignatureEnvelope, VersionStatement};
use cairn_core::{ModelRef, VersionSelector};

use crate::db::Conn;
use crate::{Store, StoreError, params};

/// Most signatures a pusher may attach to one version.
pub const MAX_USER_SIGNATURES: usize = 8;

#[derive(sqlx::FromRow)]
struct Row {
    kind: String,
    statement: String,
    key_id: String,
    public_key: String,
    signature: String,
}

/// Checks the pusher's signatures, and stores them with the server's own.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn attach(
    conn: &mut Conn<'_>,
    signer: Option<&Arc<SigningKey>>,
    now: i64,
    version_id: i64,
    model: &ModelRef,
    number: i64,
    digest: &str,
    user: &[SignatureEnvelope],
) -> Result<(), StoreError> {
    if user.len() > MAX_USER_SIGNATURES {
        return Err(StoreError::Invalid(format!("at most {MAX_USER_SIGNATURES} signatures per version")));
    }
    let model_name = model.to_string();
    for (i, sig) in user.iter().enumerate() {
        check_user_signature(sig, &model_name, digest)
            .map_err(|e| StoreError::Invalid(format!("signature {}: {e}", i + 1)))?;
    }
    let server = signer
        .map(|key| SignatureEnvelope::sign("server", &VersionStatement::new(&model_name, number, digest, now), key));
    for sig in server.iter().chain(user) {
        // Nothing here needs the result: on SQLite it goes with the transaction's next call.
        conn.defer(
            "INSERT INTO version_signatures (version_id, kind, statement, key_id, public_key, signature, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            params![version_id, &sig.kind, &sig.statement, &sig.key_id, &sig.public_key, &sig.signature, now],
        )
        .await?;
    }
    Ok(())
}

/// Why a pusher's signature is refused, if it is.
pub fn check_user_signature(sig: &SignatureEnvelope, model: &str, digest: &str) -> Result<(), String> {
    if sig.kind != "user" {
        return Err(format!("kind must be \"user\", not {:?}", sig.kind));
    }
    if sig.statement.len() > 4096 || sig.public_key.len() > 4096 || sig.signature.len() > 512 {
        return Err("too long".into());
    }
    let statement: PushStatement = serde_json::from_str(&sig.statement)
        .map_err(|e| format!("the statement is not a {PUSH_TYPE} statement: {e}"))?;
    if statement.r#type != PUSH_TYPE {
        return Err(format!("the statement's type is {:?}, expected {PUSH_TYPE:?}", statement.r#type));
    }
    if statement.model != model {
        return Err(format!("the statement names model {:?}, not {model:?}", statement.model));
    }
    if statement.manifest_digest != digest {
        return Err(format!(
            "the statement signs manifest {}, but the version's manifest is {digest}",
            statement.manifest_digest
        ));
    }
    if sig.verify_self().is_none() {
        return Err(
            "the signature does not verify with the public key it carries (or the key id does not match it)".into()
        );
    }
    Ok(())
}

impl Store {
    /// The signatures of a version: the server's first, then the pusher's, in order.
    pub async fn version_signatures(
        &self,
        model: &ModelRef,
        selector: &VersionSelector,
    ) -> Result<Vec<SignatureEnvelope>, StoreError> {
        let version = self.get_version(model, selector).await?;
        self.signatures_of(&version).await
    }

    /// [`Store::version_signatures`] of a version the caller has read already.
    pub async fn signatures_of(&self, version: &crate::version::Version) -> Result<Vec<SignatureEnvelope>, StoreError> {
        let rows: Vec<Row> = self
            .db
            .read()
            .await?
            .conn()
            .fetch_all(
                "SELECT kind, statement, key_id, public_key, signature FROM version_signatures \
                 WHERE version_id = $1 ORDER BY CASE WHEN kind = 'server' THEN 0 ELSE 1 END, id",
                params![version.id],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| SignatureEnvelope {
                kind: r.kind,
                statement: r.statement,
                key_id: r.key_id,
                public_key: r.public_key,
                signature: r.signature,
            })
            .collect())
    }
}
