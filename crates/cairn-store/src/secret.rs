//! Server-wide secrets kept in the database, so every replica shares them
//! (e.g. the key that signs page tokens).

use crate::{Store, StoreError, params};

impl Store {
    /// Returns the secret `name`, creating it with `generate` on first use. Safe when
    /// several replicas start at once: the first insert wins and everyone reads it.
    pub async fn get_or_create_secret(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            params![name, generate(), now],
        )
        .await?;
        let (value,): (String,) =
            conn.fetch_one("SELECT value FROM server_secrets WHERE name = $1", params![name]).await?;
        tx.commit().await?;
        Ok(value)
    }
}
