//! `kind = "discard"` sink: accepts every batch and keeps nothing. For benchmarks and dry runs,
//! where only the run summary matters.
//!
//! ```toml
//! [sink]
//! kind = "discard"
//! ```

use async_trait::async_trait;
use serde::Deserialize;

use crate::batch::Batch;
use crate::step::{Acks, Sink};

/// The `config` table of a `discard` sink: empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

pub struct DiscardSink;

#[async_trait]
impl Sink for DiscardSink {
    /// Every row is done with as soon as it arrives.
    async fn write(&mut self, batch: Batch) -> anyhow::Result<Acks> {
        Ok(Acks::rows(batch.rows() as u64))
    }

    async fn commit(&mut self) -> anyhow::Result<Acks> {
        Ok(Acks::default())
    }
}
