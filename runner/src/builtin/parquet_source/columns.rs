//! Arrow columns into batch columns, typed as pandas's `read_parquet` types them (pyarrow's
//! `to_pandas` with numpy dtypes), so the row keys are the original flow's:
//!
//! | Arrow type                              | batch type   | pandas dtype            |
//! |-----------------------------------------|--------------|-------------------------|
//! | int8..int64, uint8..uint64, no nulls    | `s64`        | int                     |
//! | the same with a null anywhere           | `f64`        | float64 (null: NaN)     |
//! | float64                                 | `f64`        | float64                 |
//! | float32                                 | `f64` (exact) | float32                |
//! | bool                                    | `bool`       | bool; object with nulls (None) |
//! | utf8, large_utf8, utf8_view             | `string`     | str (null: NaN)         |
//! | dictionary of utf8                      | `string` (dictionary) | category (null: NaN) |
//! | null                                    | `string`, all null | str (NaN)         |
//!
//! Whether an integer column has a null is read from the footers' statistics of every object,
//! so every shard types it alike, reading no rows. A float32 is widened exactly: pandas's
//! `apply(axis=1)` hands the original flow its float64 too (`5.099999904632568` for the float32
//! nearest 5.1), so the keys agree. Dates, times, decimals, binary and nested columns are not
//! read: the error names the column and its type; leave it out with `columns`.

use std::sync::Arc;

use anyhow::bail;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

use super::footers::Footer;
use crate::batch::{Column, ColumnType, Dictionary, Values};
use crate::step::{PlanMismatch, PlannedColumn, SourcePlan};

/// How one column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// Integers; as floats when the column has a null anywhere in the input.
    Int {
        as_float: bool,
    },
    Float64,
    Float32,
    Bool,
    Text,
    /// Dictionary-encoded text, kept so.
    Dictionary,
    /// A column of nulls only.
    Null,
}

impl Read {
    /// Every way, by the name a plan file gives it.
    const NAMED: [(Read, &'static str); 8] = [
        (Read::Int { as_float: false }, "int"),
        (Read::Int { as_float: true }, "int-as-float"),
        (Read::Float64, "float64"),
        (Read::Float32, "float32"),
        (Read::Bool, "bool"),
        (Read::Text, "text"),
        (Read::Dictionary, "dictionary"),
        (Read::Null, "null"),
    ];

    fn name(self) -> &'static str {
        Read::NAMED.iter().find(|(read, _)| *read == self).map_or("?", |(_, name)| name)
    }

    /// The batch type it makes.
    fn column_type(self) -> ColumnType {
        match self {
            Read::Int { as_float: false } => ColumnType::S64,
            Read::Int { as_float: true } | Read::Float64 | Read::Float32 => ColumnType::F64,
            Read::Bool => ColumnType::Bool,
            Read::Text | Read::Dictionary | Read::Null => ColumnType::String,
        }
    }
}

/// How a plan file records a column.
pub(super) fn planned_column(planned: &Planned) -> PlannedColumn {
    PlannedColumn {
        name: planned.name.clone(),
        ty: planned.read.column_type(),
        read: planned.read.name().to_string(),
        index: Some(planned.index),
    }
}

/// A plan file's columns, as [`plan`] would have planned them.
pub(super) fn from_plan(input: &SourcePlan) -> Result<Vec<Planned>, PlanMismatch> {
    let planned = input.columns.iter().map(|column| {
        let read = Read::NAMED.iter().find(|(_, name)| *name == column.read).map(|(read, _)| *read);
        match (read, column.index) {
            (Some(read), Some(index)) if read.column_type() == column.ty => {
                Ok(Planned { name: column.name.clone(), index, read })
            }
            _ => Err(PlanMismatch(format!(
                "the plan's column `{}` ({} read as `{}`) is not one a parquet source reads",
                column.name, column.ty, column.read
            ))),
        }
    });
    planned.collect()
}

/// One column the source reads: its name, its index among the file's columns, and how.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub(super) name: String,
    pub(super) index: usize,
    pub(super) read: Read,
}

/// Columns pandas makes an index of, rather than a column (`df.to_parquet()` of a frame with
/// a named or non-default index).
fn is_pandas_index(name: &str) -> bool {
    name.starts_with("__index_level_")
}

/// The names of the input's columns, as the source gives them.
pub(super) fn names(footer: &Footer) -> Vec<String> {
    let fields = footer.metadata.schema().fields();
    fields.iter().map(|f| f.name().clone()).filter(|name| !is_pandas_index(name)).collect()
}

/// How to read each of the columns `wanted` (all of them when empty), from the first object's
/// schema and every object's statistics.
pub(super) fn plan(footers: &[Footer], wanted: &[String]) -> anyhow::Result<Vec<Planned>> {
    let Some(first) = footers.first() else { return Ok(Vec::new()) };
    let schema = first.metadata.schema();
    let names = if wanted.is_empty() { names(first) } else { wanted.to_vec() };
    let mut planned = Vec::with_capacity(names.len());
    for name in names {
        let Some((index, field)) = schema.column_with_name(&name) else {
            bail!("{}: no column `{name}` (its columns: {})", first.name, self::names(first).join(", "));
        };
        let read = match field.data_type() {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Read::Int { as_float: has_nulls(footers, index, &name)? },
            DataType::Float64 => Read::Float64,
            DataType::Float32 => Read::Float32,
            DataType::Boolean => Read::Bool,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Read::Text,
            DataType::Dictionary(_, values) if matches!(**values, DataType::Utf8 | DataType::LargeUtf8) => {
                Read::Dictionary
            }
            DataType::Null => Read::Null,
            other => bail!(
                "{}: column `{name}` is of type {other}, which the parquet source does not read (it reads \
                 integers, floats, booleans, strings and dictionary-encoded strings; dates and times are not \
                 supported yet): leave it out with `columns = [...]` in the source's config",
                first.name
            ),
        };
        planned.push(Planned { name, index, read });
    }
    Ok(planned)
}

/// Whether column `index` (a flat one: its leaf is its index) holds a null in any row group of
/// any object, from the footers' statistics.
fn has_nulls(footers: &[Footer], index: usize, name: &str) -> anyhow::Result<bool> {
    for footer in footers {
        let metadata = footer.metadata.metadata();
        let descriptor = metadata.file_metadata().schema_descr().column(index);
        if descriptor.max_def_level() == 0 {
            continue; // required: no nulls
        }
        for group in metadata.row_groups() {
            match group.column(index).statistics().and_then(|s| s.null_count_opt()) {
                Some(0) => {}
                Some(_) => return Ok(true),
                None if group.num_rows() == 0 => {}
                None => bail!(
                    "{}: the footer has no null count for integer column `{name}`, so its type cannot be told \
                     without reading it (pandas makes an integer column with nulls float64); write the file \
                     with statistics",
                    footer.name
                ),
            }
        }
    }
    Ok(false)
}

/// Arrow `array` (column `planned` of `object`) as a batch column.
pub(super) fn column(planned: &Planned, array: &ArrayRef, object: &str) -> anyhow::Result<Column> {
    let nulls: Option<Vec<bool>> =
        array.logical_nulls().filter(|n| n.null_count() > 0).map(|n| (0..array.len()).map(|i| n.is_null(i)).collect());
    let values = match planned.read {
        Read::Int { as_float } => {
            let ints = ints(array, &planned.name, object)?;
            if as_float { Values::F64(ints.into_iter().map(|v| v as f64).collect()) } else { Values::S64(ints) }
        }
        Read::Float64 => Values::F64(array.as_primitive::<arrow_array::types::Float64Type>().values().to_vec()),
        Read::Float32 => {
            let floats = array.as_primitive::<arrow_array::types::Float32Type>().values();
            Values::F64(floats.iter().map(|&v| f64::from(v)).collect())
        }
        Read::Bool => Values::Bool(array.as_boolean().values().iter().collect()),
        Read::Text => Values::String(texts(array)),
        Read::Dictionary => Values::Dictionary(dictionary(array)),
        Read::Null => Values::String(vec![String::new(); array.len()]),
    };
    let nulls = match planned.read {
        Read::Null => Some(vec![true; array.len()]).filter(|n| !n.is_empty()),
        _ => nulls,
    };
    Ok(Column { name: planned.name.clone(), values, nulls })
}

/// An integer column's values as i64 (a null's slot holds 0 or whatever the writer left).
fn ints(array: &ArrayRef, name: &str, object: &str) -> anyhow::Result<Vec<i64>> {
    macro_rules! widen {
        ($t:ty) => {
            array.as_primitive::<$t>().values().iter().map(|&v| i64::from(v)).collect()
        };
    }
    Ok(match array.data_type() {
        DataType::Int8 => widen!(Int8Type),
        DataType::Int16 => widen!(Int16Type),
        DataType::Int32 => widen!(Int32Type),
        DataType::Int64 => array.as_primitive::<Int64Type>().values().to_vec(),
        DataType::UInt8 => widen!(UInt8Type),
        DataType::UInt16 => widen!(UInt16Type),
        DataType::UInt32 => widen!(UInt32Type),
        DataType::UInt64 => {
            let values = array.as_primitive::<UInt64Type>();
            let mut out = Vec::with_capacity(values.len());
            for (row, &v) in values.values().iter().enumerate() {
                match i64::try_from(v) {
                    Ok(v) => out.push(v),
                    Err(_) if values.is_null(row) => out.push(0),
                    Err(_) => bail!("{object}: column `{name}` holds {v}, beyond the largest s64 (2^63 - 1)"),
                }
            }
            out
        }
        other => unreachable!("planned as an integer column: {other}"),
    })
}

/// A text column's values (a null's slot holds "").
fn texts(array: &ArrayRef) -> Vec<String> {
    let owned = |v: Option<&str>| v.unwrap_or_default().to_string();
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(owned).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(owned).collect(),
        DataType::Utf8View => array.as_string_view().iter().map(owned).collect(),
        other => unreachable!("planned as a text column: {other}"),
    }
}

/// A dictionary column as a batch dictionary: its values once, a key per row (a null's key
/// points at some value; the null mask says it is null).
fn dictionary(array: &ArrayRef) -> Dictionary {
    let dictionary = array.as_any_dictionary();
    let values: Arc<dyn Array> = dictionary.values().clone();
    let mut texts = texts(&values);
    let keys: Vec<u32> = dictionary.normalized_keys().into_iter().map(|k| k as u32).collect();
    let len = texts.len() as u32;
    if keys.iter().any(|&k| k >= len) {
        // Only null rows point past the values (or into an empty dictionary): give them one.
        texts.push(String::new());
        let keys = keys.into_iter().map(|k| if k >= len { len } else { k }).collect();
        return Dictionary { values: texts, keys };
    }
    Dictionary { values: texts, keys }
}
