//! `on_error` and `dead_letter` of a step: what it does with input it cannot handle. Pure
//! configuration: the policy itself is `step::Policy`, the dead letters `builtin::dead_letter`.
//!
//! ```toml
//! [source]
//! kind = "csv"
//! on_error = "dead-letter"                       # fail (default) | skip | dead-letter
//! dead_letter = { url = "out/rejected.jsonl" }   # a JSON-lines file ...
//! # dead_letter = { url = "redis://127.0.0.1:6379/0", list = "rejected" }   # ... or a Redis list
//! ```

use serde::Deserialize;

/// `on_error = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Fail the run at the first error (the default).
    #[default]
    Fail,
    /// Drop what failed, count it, and go on.
    Skip,
    /// Write what failed to `dead_letter`, count it, and go on.
    DeadLetter,
}

/// `dead_letter = { url = "...", list = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// A path (relative to the spec) or `file://` for a JSON-lines file; `redis://` or
    /// `rediss://` for a Redis list.
    pub url: String,
    /// The Redis list to push rejected rows onto (Redis only).
    pub list: Option<String>,
}
