//! Moving batches across the component boundary.
//!
//! The host's `Batch` and the generated WIT `Batch` have the same shape, so a conversion moves
//! each column's vector (no per-value work); wasmtime then copies the vectors into or out of
//! the plugin's linear memory once. What a plugin returns is checked by `Batch::new`, so a
//! malformed batch is caught at the boundary, not three steps later.

use super::bindings::types as wit;
use crate::batch::{Batch, BatchError, Column, Values};

pub fn to_wit(batch: Batch) -> wit::Batch {
    let columns = batch
        .into_columns()
        .into_iter()
        .map(|c| wit::Column {
            name: c.name,
            values: match c.values {
                Values::F64(v) => wit::Values::F64(v),
                Values::S64(v) => wit::Values::S64(v),
                Values::String(v) => wit::Values::String(v),
                Values::Bool(v) => wit::Values::Bool(v),
            },
            nulls: c.nulls,
        })
        .collect();
    wit::Batch { columns }
}

pub fn from_wit(batch: wit::Batch) -> Result<Batch, BatchError> {
    let columns = batch
        .columns
        .into_iter()
        .map(|c| Column {
            name: c.name,
            values: match c.values {
                wit::Values::F64(v) => Values::F64(v),
                wit::Values::S64(v) => Values::S64(v),
                wit::Values::String(v) => Values::String(v),
                wit::Values::Bool(v) => Values::Bool(v),
            },
            nulls: c.nulls,
        })
        .collect();
    Batch::new(columns)
}
