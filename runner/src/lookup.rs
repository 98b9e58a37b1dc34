//! `runner lookup SPEC VALUE...`: computes a row's key exactly as the pipeline's `row-key` step
//! does and reads what the pipeline's Redis sink stored under it.
//!
//! The values are typed as the pipeline types them: from a plan file's columns (`--plan`), or
//! else the source is opened and its first batch read, so a value given as `5` for a float
//! column is keyed as `5.0`, as in the pipeline.

use anyhow::{Context, bail};
use redis::AsyncCommands;

use crate::batch::{Batch, Column, ColumnType, Values};
use crate::builtin::redis_sink::RedisSinkConfig;
use crate::builtin::row_key::{RowKey, RowKeyConfig};
use crate::pipeline::{Plan, PlannedImplementation};
use crate::redis_client::{connect, redacted};

/// What is stored under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// `SET` sinks: the value.
    Value(String),
    /// `HSET` sinks: field → value.
    Hash(Vec<(String, String)>),
}

/// The outcome of a lookup.
#[derive(Debug, Clone)]
pub struct LookupResult {
    pub key: String,
    /// `None` when nothing is stored under the key.
    pub stored: Option<Stored>,
}

/// Keys `values` as the plan's pipeline does and reads the stored prediction.
pub async fn lookup(plan: Plan, values: &[String]) -> anyhow::Result<LookupResult> {
    let key_step = plan.steps.iter().find_map(|s| match &s.implementation {
        PlannedImplementation::Builtin(builtin) => builtin.config::<RowKeyConfig>().cloned(),
        _ => None,
    });
    let Some(key_config) = key_step else {
        bail!("the pipeline has no `row-key` step: its rows have no key to look up")
    };
    let sink = match &plan.steps.last().expect("a plan has a sink").implementation {
        PlannedImplementation::Builtin(builtin) => builtin.config::<RedisSinkConfig>().cloned(),
        PlannedImplementation::Plugin { .. } => None,
    };
    let Some(sink) = sink else { bail!("the pipeline's sink is not `redis`: there is nothing to look up") };

    // The key columns and their types, as the source delivers them: from the plan file, or
    // from the source's first batch.
    let frame = plan.frame();
    let types: Vec<(String, ColumnType)> = match plan.input() {
        Some(input) => input.columns.iter().map(|c| (c.name.clone(), c.ty)).collect(),
        None => {
            let sample = plan.first_batch().await?.context("the source is empty: cannot tell the columns' types")?;
            sample.columns().iter().map(|c| (c.name.clone(), c.values.column_type())).collect()
        }
    };
    let names: Vec<String> = if key_config.columns.is_empty() {
        types.iter().map(|(name, _)| name.clone()).collect()
    } else {
        key_config.columns.clone()
    };
    if values.len() != names.len() {
        bail!("expected {} values, for the key columns {}; got {}", names.len(), names.join(", "), values.len());
    }
    let mut columns = Vec::with_capacity(names.len());
    for (name, text) in names.iter().zip(values) {
        let ty = types.iter().find(|(column, _)| column == name).map(|&(_, ty)| ty).with_context(|| {
            format!("the source has no column `{name}`: `runner lookup` keys on source columns only")
        })?;
        columns.push(typed(name, ty, text)?);
    }
    let key = RowKey::new(key_config, frame).keys(&Batch::new(columns)?)?.remove(0);

    let shown = redacted(&sink.url);
    let mut connection = connect(&sink.url, sink.retry_seconds).await?;
    let stored = if sink.fields.is_empty() {
        let value: Option<String> = connection.get(&key).await.with_context(|| format!("reading {shown}"))?;
        value.map(Stored::Value)
    } else {
        let hash: Vec<(String, String)> = connection.hgetall(&key).await.with_context(|| format!("reading {shown}"))?;
        (!hash.is_empty()).then_some(Stored::Hash(hash))
    };
    Ok(LookupResult { key, stored })
}

/// One value as a one-row column of type `ty`, read as the CSV source reads a field (a missing
/// value, such as an empty one or `NA`, is a null).
fn typed(name: &str, ty: ColumnType, text: &str) -> anyhow::Result<Column> {
    let mut values = Values::with_capacity(ty, 1);
    let null =
        values.push_text(text).map_err(|expected| anyhow::anyhow!("`{text}` is not {expected} for column `{name}`"))?;
    Ok(Column { name: name.to_string(), values, nulls: null.then(|| vec![true]) })
}
