//! Moving batches across the component boundary, for each contract version.
//!
//! The host's `Batch` and the generated WIT `Batch` have the same shape, so a conversion moves
//! each column's vector (no per-value work); wasmtime then copies the vectors into or out of
//! the plugin's linear memory once. Text goes to plugins as `%string` only (dictionary-encoded
//! columns are spelled out first), so a plugin needs to read one encoding; it may return
//! either. What a plugin returns is checked by `Batch::new`, so a malformed batch is caught at
//! the boundary, not three steps later.

use super::bindings::{v0_1, v0_2};
use crate::batch::{Batch, BatchError, Column, Dictionary, Values};

/// An error a plugin returned through the contract (`types.error`), whatever its version.
pub struct CallError {
    pub message: String,
    pub row: Option<u32>,
}

/// Implements the conversions for one version's generated types; `$dictionary` maps the
/// version's dictionary case, if it has one.
macro_rules! convert {
    ($wit:path $(, $dictionary:ident)?) => {
        use $wit as wit;

        impl From<Batch> for wit::Batch {
            fn from(batch: Batch) -> wit::Batch {
                let columns = batch
                    .into_columns()
                    .into_iter()
                    .map(|c| wit::Column {
                        name: c.name,
                        values: match c.values.decoded() {
                            Values::F64(v) => wit::Values::F64(v),
                            Values::S64(v) => wit::Values::S64(v),
                            Values::String(v) => wit::Values::String(v),
                            Values::Bool(v) => wit::Values::Bool(v),
                            Values::Dictionary(_) => unreachable!("decoded() spells dictionaries out"),
                        },
                        nulls: c.nulls,
                    })
                    .collect();
                wit::Batch { columns }
            }
        }

        impl TryFrom<wit::Batch> for Batch {
            type Error = BatchError;

            fn try_from(batch: wit::Batch) -> Result<Batch, BatchError> {
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
                            $(wit::Values::$dictionary(d) => Values::Dictionary(Dictionary { values: d.values, keys: d.keys }),)?
                        },
                        nulls: c.nulls,
                    })
                    .collect();
                Batch::new(columns)
            }
        }

        impl From<wit::Error> for CallError {
            fn from(e: wit::Error) -> CallError {
                CallError { message: e.message, row: e.row }
            }
        }
    };
}

mod current {
    use super::*;
    convert!(v0_2::types, Dictionary);
}

mod v0_1_0 {
    use super::*;
    convert!(v0_1::types);
}
