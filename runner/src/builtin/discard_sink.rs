//! `kind = "discard"` sink: accepts every batch and keeps nothing. For benchmarks and dry runs,
//! where only the run summary matters.
//!
//! ```toml
//! [sink]
//! kind = "discard"
//! ```

use async_trait::async_trait;
use serde::Deserialize;

use super::{Kind, Opened};
use crate::batch::Batch;
use crate::spec::Role;
use crate::step::{Acks, Sink, StepContext};

/// The `config` table of a `discard` sink: empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

pub struct DiscardSink;

/// `kind = "discard"` in a sink.
#[async_trait]
impl Kind for DiscardSink {
    const ROLE: Role = Role::Sink;
    const NAME: &'static str = "discard";
    type Config = DiscardConfig;

    async fn open(_config: &DiscardConfig, _context: &StepContext) -> anyhow::Result<Opened> {
        Ok(Opened::Sink(Box::new(DiscardSink)))
    }
}

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
