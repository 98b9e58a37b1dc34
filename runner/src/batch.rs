//! The columnar batch the host passes between steps.
//!
//! A [`Batch`] is a list of named, typed columns of equal length: the same shape as the WIT
//! `batch` record, so crossing into a plugin moves whole vectors instead of building a value per
//! cell. The constructor checks the invariants once; every step can then rely on them.

use std::fmt;

use crate::format::{PythonFloats, is_na, number_text, parse_bool};

/// How [`Values::write_text`] writes a value as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextStyle {
    /// Files and Redis: floats as Python writes them (`5.0`, `1e-05`, so they read back as
    /// floats), booleans `true`/`false`.
    Plain,
    /// Python's `str()` of the value pandas hands the original flow in a row (row keys):
    /// booleans `True`/`False`, and with `ints_as_floats` integers as floats (`5.0`), as pandas
    /// upcasts them in a row of integer and float columns.
    Python { ints_as_floats: bool },
}

/// The values of one column: one vector per type, as in the WIT `values` variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F64(Vec<f64>),
    S64(Vec<i64>),
    String(Vec<String>),
    Bool(Vec<bool>),
    /// Text again (column type `string`), dictionary-encoded: what a plugin returns for labels
    /// and categories, so a class name crosses the boundary once per batch, not once per row.
    Dictionary(Dictionary),
}

/// Dictionary-encoded text: row `i` holds `values[keys[i]]`. [`Batch::new`] checks the keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Dictionary {
    pub values: Vec<String>,
    pub keys: Vec<u32>,
}

/// A column's type, as written in a spec (`"f64"`, `"s64"`, `"string"`, `"bool"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    F64,
    S64,
    String,
    Bool,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::F64 => "f64",
            ColumnType::S64 => "s64",
            ColumnType::String => "string",
            ColumnType::Bool => "bool",
        })
    }
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::F64(v) => v.len(),
            Values::S64(v) => v.len(),
            Values::String(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Dictionary(d) => d.keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn column_type(&self) -> ColumnType {
        match self {
            Values::F64(_) => ColumnType::F64,
            Values::S64(_) => ColumnType::S64,
            Values::String(_) | Values::Dictionary(_) => ColumnType::String,
            Values::Bool(_) => ColumnType::Bool,
        }
    }

    /// The text at `row` of a `string` column, whichever its encoding; `None` for other types.
    ///
    /// # Panics
    /// If `row` is out of range, or a dictionary key is: [`Batch::new`] checks the keys of every
    /// batch, so a column of a batch is safe.
    pub fn text(&self, row: usize) -> Option<&str> {
        match self {
            Values::String(v) => Some(&v[row]),
            Values::Dictionary(d) => Some(&d.values[d.keys[row] as usize]),
            _ => None,
        }
    }

    /// The column with dictionary-encoded text spelled out, one string per row.
    ///
    /// # Panics
    /// If a dictionary key is out of range (not for a column of a [`Batch`], whose keys are checked).
    pub fn decoded(self) -> Values {
        match self {
            Values::Dictionary(d) => Values::String(d.keys.iter().map(|&k| d.values[k as usize].clone()).collect()),
            other => other,
        }
    }

    /// Appends one field of text read as this column's type, as the CSV source and
    /// `runner lookup` read values: numbers may have spaces around them, booleans are
    /// `True`/`true`/`TRUE` (or false), and a missing value ([`is_na`]: empty, `NA`, `NaN`, ...)
    /// appends a placeholder and returns `Ok(true)`. `Err` says what was expected.
    pub fn push_text(&mut self, text: &str) -> Result<bool, &'static str> {
        let null = is_na(text);
        match self {
            Values::F64(v) => {
                v.push(if null { 0.0 } else { number_text(text).parse().map_err(|_| "a number (f64)")? })
            }
            Values::S64(v) => {
                v.push(if null { 0 } else { number_text(text).parse().map_err(|_| "an integer (s64)")? })
            }
            Values::Bool(v) => v.push(!null && parse_bool(text).ok_or("true or false")?),
            Values::String(v) => v.push(if null { String::new() } else { text.to_string() }),
            Values::Dictionary(_) => return Err("plain text (a dictionary is not read from text)"),
        }
        Ok(null)
    }

    /// Appends the value at `row` as text in `style` (the caller writes nulls its own way).
    /// `floats` remembers the texts of recent floats: tabular data repeats its values.
    pub fn write_text(&self, row: usize, style: TextStyle, floats: &mut PythonFloats, out: &mut String) {
        match (self, style) {
            (Values::F64(v), _) => floats.write(out, v[row]),
            // Upcast as numpy does (the nearest float, ties to even), then written as a float.
            (Values::S64(v), TextStyle::Python { ints_as_floats: true }) => floats.write(out, v[row] as f64),
            (Values::S64(v), _) => out.push_str(itoa::Buffer::new().format(v[row])),
            (Values::Bool(v), TextStyle::Plain) => out.push_str(if v[row] { "true" } else { "false" }),
            (Values::Bool(v), TextStyle::Python { .. }) => out.push_str(if v[row] { "True" } else { "False" }),
            (Values::String(_) | Values::Dictionary(_), _) => out.push_str(self.text(row).unwrap_or_default()),
        }
    }

    /// Shortens the column to `len` values.
    pub fn truncate(&mut self, len: usize) {
        match self {
            Values::F64(v) => v.truncate(len),
            Values::S64(v) => v.truncate(len),
            Values::String(v) => v.truncate(len),
            Values::Bool(v) => v.truncate(len),
            Values::Dictionary(d) => d.keys.truncate(len),
        }
    }

    /// An empty vector of the given type, with room for `capacity` values.
    pub fn with_capacity(ty: ColumnType, capacity: usize) -> Values {
        match ty {
            ColumnType::F64 => Values::F64(Vec::with_capacity(capacity)),
            ColumnType::S64 => Values::S64(Vec::with_capacity(capacity)),
            ColumnType::String => Values::String(Vec::with_capacity(capacity)),
            ColumnType::Bool => Values::Bool(Vec::with_capacity(capacity)),
        }
    }
}

/// One named column and its optional null mask (`true` = null).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub values: Values,
    pub nulls: Option<Vec<bool>>,
}

impl Column {
    pub fn new(name: impl Into<String>, values: Values) -> Column {
        Column { name: name.into(), values, nulls: None }
    }

    pub fn is_null(&self, row: usize) -> bool {
        self.nulls.as_ref().is_some_and(|n| n[row])
    }
}

/// A batch whose columns all have the same length and distinct names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    columns: Vec<Column>,
    rows: usize,
}

/// Why a list of columns is not a valid batch.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    /// Two columns have different lengths.
    #[error("columns of unequal length: `{first}` has {first_len} rows but `{column}` has {len}")]
    UnequalLength { first: String, first_len: usize, column: String, len: usize },
    /// A null mask does not have one entry per row.
    #[error("column `{column}` has {len} values but a null mask of {mask_len}")]
    NullMaskLength { column: String, len: usize, mask_len: usize },
    /// Two columns share a name.
    #[error("duplicate column name `{0}`")]
    DuplicateName(String),
    /// A dictionary-encoded column points past its dictionary.
    #[error("column `{column}`, row {row}: key {key} is outside its dictionary of {len} values")]
    DictionaryKey { column: String, row: usize, key: u32, len: usize },
}

impl Batch {
    /// Checks the invariants and builds the batch, in time linear in its size (a batch from a
    /// plugin may have any number of columns).
    pub fn new(columns: Vec<Column>) -> Result<Batch, BatchError> {
        let rows = columns.first().map_or(0, |c| c.values.len());
        // Names are compared pairwise while that is cheaper than hashing them.
        let mut names = (columns.len() > 16).then(|| std::collections::HashSet::with_capacity(columns.len()));
        for (i, column) in columns.iter().enumerate() {
            let len = column.values.len();
            if len != rows {
                return Err(BatchError::UnequalLength {
                    first: columns[0].name.clone(),
                    first_len: rows,
                    column: column.name.clone(),
                    len,
                });
            }
            if let Some(mask) = &column.nulls
                && mask.len() != len
            {
                return Err(BatchError::NullMaskLength { column: column.name.clone(), len, mask_len: mask.len() });
            }
            let duplicate = match &mut names {
                Some(names) => !names.insert(column.name.as_str()),
                None => columns[..i].iter().any(|c| c.name == column.name),
            };
            if duplicate {
                return Err(BatchError::DuplicateName(column.name.clone()));
            }
            if let Values::Dictionary(d) = &column.values
                && let Some(row) = d.keys.iter().position(|&k| k as usize >= d.values.len())
            {
                let (column, key, len) = (column.name.clone(), d.keys[row], d.values.len());
                return Err(BatchError::DictionaryKey { column, row, key, len });
            }
        }
        Ok(Batch { columns, rows })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn into_columns(self) -> Vec<Column> {
        self.columns
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The batch without row `row`.
    pub fn without_row(&self, row: usize) -> Batch {
        fn drop_at<T: Clone>(v: &[T], row: usize) -> Vec<T> {
            v.iter().enumerate().filter(|(i, _)| *i != row).map(|(_, x)| x.clone()).collect()
        }
        let columns = self
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                values: match &c.values {
                    Values::F64(v) => Values::F64(drop_at(v, row)),
                    Values::S64(v) => Values::S64(drop_at(v, row)),
                    Values::String(v) => Values::String(drop_at(v, row)),
                    Values::Bool(v) => Values::Bool(drop_at(v, row)),
                    Values::Dictionary(d) => {
                        Values::Dictionary(Dictionary { values: d.values.clone(), keys: drop_at(&d.keys, row) })
                    }
                },
                nulls: c.nulls.as_ref().map(|n| drop_at(n, row)),
            })
            .collect();
        Batch { columns, rows: self.rows.saturating_sub(1) }
    }

    /// The names and types of the columns, in order.
    pub fn schema(&self) -> Schema {
        self.columns.iter().map(|c| (c.name.clone(), c.values.column_type())).collect()
    }
}

/// Column names and types, in order.
pub type Schema = Vec<(String, ColumnType)>;

/// Says how `later` differs from `first`, if it does: the columns of a step's output must not
/// change from batch to batch, or the steps after it would misread them.
pub fn schema_change(first: &Schema, later: &Schema) -> Option<String> {
    for ((name, ty), (later_name, later_ty)) in first.iter().zip(later) {
        if name != later_name {
            return Some(format!("column `{later_name}` is where `{name}` was"));
        }
        if ty != later_ty {
            return Some(format!("column `{name}` changed from {ty} to {later_ty}"));
        }
    }
    match later.len().cmp(&first.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!("column `{}` appeared", later[first.len()].0)),
        std::cmp::Ordering::Less => Some(format!("column `{}` disappeared", first[later.len()].0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unequal_lengths_and_duplicates() {
        let a = Column::new("a", Values::F64(vec![1.0, 2.0]));
        let b = Column::new("b", Values::S64(vec![1]));
        assert_eq!(
            Batch::new(vec![a.clone(), b]).unwrap_err().to_string(),
            "columns of unequal length: `a` has 2 rows but `b` has 1"
        );
        assert_eq!(Batch::new(vec![a.clone(), a.clone()]).unwrap_err(), BatchError::DuplicateName("a".into()));
        let mut masked = a.clone();
        masked.nulls = Some(vec![true]);
        assert!(matches!(Batch::new(vec![masked]), Err(BatchError::NullMaskLength { .. })));
    }

    #[test]
    fn dictionary_text_reads_like_plain_text() {
        let names = vec!["setosa".to_string(), "virginica".to_string()];
        let dict = Values::Dictionary(Dictionary { values: names, keys: vec![1, 0, 1] });
        assert_eq!(dict.column_type(), ColumnType::String);
        assert_eq!(dict.len(), 3);
        assert_eq!((0..3).map(|r| dict.text(r).unwrap()).collect::<Vec<_>>(), ["virginica", "setosa", "virginica"]);
        let plain = dict.clone().decoded();
        assert_eq!(plain, Values::String(vec!["virginica".into(), "setosa".into(), "virginica".into()]));
        assert_eq!(Values::F64(vec![1.0]).text(0), None);

        let batch = Batch::new(vec![Column::new("label", dict)]).unwrap();
        let dropped = batch.without_row(1);
        assert_eq!(dropped.columns()[0].values.text(1), Some("virginica"));

        let bad = Values::Dictionary(Dictionary { values: vec!["a".into()], keys: vec![0, 0, 3] });
        assert_eq!(
            Batch::new(vec![Column::new("label", bad)]).unwrap_err().to_string(),
            "column `label`, row 2: key 3 is outside its dictionary of 1 values"
        );
    }
}
