/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist; the message names it.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this to this thing (e.g. decide their own request).
    #[error("{0}")]
    Forbidden(String),
    /// The thing to create exists already, or a change conflicts with current state.
    #[error("{0}")]
    Conflict(String),
    /// A commit references blobs that were never uploaded; the message lists them.
    #[error("{0}")]
    MissingBlobs(String),
    /// Another operation holds the thing right now (completion, garbage collection);
    /// retrying shortly succeeds.
    #[error("{0}")]
    Busy(String),
    /// The request is well-formed but not acceptable (e.g. a bad filter).
    #[error("{0}")]
    Invalid(String),
    /// A search filter names an unknown field or compares a field with the wrong type.
    #[error(transparent)]
    Filter(#[from] cairn_core::filter::FilterError),
    /// Bad settings (URL, options).
    #[error("{0}")]
    Config(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether this is a unique-constraint violation from the database.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}
