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
use crate::step::Sink;

/// The `config` table of a `discard` sink: empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

pub struct DiscardSink;

#[async_trait]
impl Sink for DiscardSink {
    async fn write(&mut self, _batch: Batch) -> anyhow::Result<()> {
        Ok(())
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
