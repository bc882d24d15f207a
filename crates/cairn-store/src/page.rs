use serde::{Deserialize, Serialize};

use crate::Param;

/// The sort value of the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CursorKey {
    /// An integer sort key (times, numbers).
    Int(i64),
    /// A text sort key (names).
    Text(String),
}

impl From<CursorKey> for Param {
    fn from(k: CursorKey) -> Self {
        match k {
            CursorKey::Int(i) => Param::Int(i),
            CursorKey::Text(s) => Param::Text(s),
        }
    }
}

/// Where the next page starts: after the row with this sort key and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort key of the last row returned.
    pub key: CursorKey,
    /// The id of the last row returned (breaks ties).
    pub id: i64,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
}

/// Builds `IN ($a, $b, …)` placeholders starting at `first`.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    let mut s = String::from("(");
    for i in 0..count {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('$');
        s.push_str(&(first + i).to_string());
    }
    s.push(')');
    s
}
