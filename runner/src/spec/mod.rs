//! The pipeline spec: a TOML file with one source, zero or more transforms and one sink.
//!
//! ```toml
//! [pipeline]
//! name = "iris-petals"                       # optional; defaults to the file name
//! batch_rows = 4096                          # rows per batch (default 4096)
//! plugin_dir = "../plugins/target/wasm32-wasip2/release"   # where `plugin = "name"` is found
//!
//! [source]
//! kind = "csv"                               # a built-in step ...
//! config = { url = "../data/iris.csv" }
//!
//! [[transform]]
//! name = "area"                              # optional; defaults to the kind or plugin name
//! plugin = "derive"                          # ... or a plugin: a name, or a path to a .wasm
//! [transform.config]                         # handed to the step (as JSON to a plugin)
//! columns = [{ name = "petal_area", expr = "petal_length * petal_width" }]
//!
//! [sink]
//! kind = "csv"
//! config = { url = "-" }                     # `-` is standard output
//! ```
//!
//! Every string value may use `${NAME}` (the environment variable NAME; an error if unset) or
//! `${NAME:-default}`; `$${` is a literal `${`. Unknown keys are errors. Every error names the
//! file, line and column, and says what was expected.
//!
//! Loading happens in two phases. [`Spec::load`] checks the shape shared by all steps (this
//! module); each step's `config` table is decoded later by the step itself, through
//! [`Spec::decode_config`], into its own typed struct. Both phases deserialize straight from
//! toml's spanned document, so an error deep inside a step's config still points at its line.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

mod policy;
mod s3;
mod sandbox;

pub use policy::{DeadLetterConfig, OnError};
pub use s3::S3Options;
pub use sandbox::{DEFAULT_CALL_SECONDS, DEFAULT_MEMORY_MB, DirGrant, Grants, Limits, Sandbox};

/// Rows per batch when the spec does not say.
pub const DEFAULT_BATCH_ROWS: usize = 4096;

/// A spec error, located in its file: `path:line:col: message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct SpecError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Where a step comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Implementation {
    /// A step built into the host: `kind = "csv"`.
    Builtin(String),
    /// A WebAssembly component: `plugin = "derive"` (a name looked up in the plugin
    /// directories) or `plugin = "path/to/x.wasm"` (relative to the spec file).
    Plugin(String),
}

/// The place of a step in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Transform,
    Sink,
}

impl Role {
    /// The WIT world a plugin for this role implements.
    pub fn world(&self) -> &'static str {
        match self {
            Role::Source => "source-plugin",
            Role::Transform => "transform-plugin",
            Role::Sink => "sink-plugin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Transform => "transform",
            Role::Sink => "sink",
        })
    }
}

/// One step of the pipeline, as the spec declares it.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Unique within the pipeline; used in logs, errors and the run summary. Defaults to
    /// `source` and `sink`, and to the kind or plugin name for a transform.
    pub name: String,
    pub role: Role,
    pub implementation: Implementation,
    /// Where `kind` or `plugin` is written, for errors about the implementation.
    pub implementation_at: Location,
    /// `workers = 4`: instances of a transform processing batches in parallel.
    pub workers: Option<NonZeroUsize>,
    /// `on_error = "skip"`: the step's error policy.
    pub on_error: OnError,
    /// The path of this step's table in the document (`source`, `transform.2`, `sink`).
    table: TablePath,
}

/// `[pipeline]`: options of the whole run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineOptions {
    /// `name = "iris"`: shown in logs and the summary (default: the spec's file name).
    pub name: Option<String>,
    /// `batch_rows = 4096`: rows per batch read from the source.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: NonZeroUsize,
    /// `plugin_dir = "plugins"`: where `plugin = "name"` is looked up, relative to the spec.
    pub plugin_dir: Option<PathBuf>,
}

fn default_batch_rows() -> NonZeroUsize {
    NonZeroUsize::new(DEFAULT_BATCH_ROWS).unwrap()
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions { name: None, batch_rows: default_batch_rows(), plugin_dir: None }
    }
}

/// A loaded, checked pipeline spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file it was read from.
    pub path: PathBuf,
    pub pipeline: PipelineOptions,
    pub source: StepSpec,
    pub transforms: Vec<StepSpec>,
    pub sink: StepSpec,
    /// The file's text: step configs are decoded from it on demand.
    text: Arc<str>,
}

/// A position in the spec file, for messages about a value found valid in shape but wrong in
/// meaning (a plugin that does not exist, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone)]
enum TablePath {
    Source,
    Transform(usize),
    Sink,
}

// The raw shapes serde checks. Each field's doc shows its TOML form.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    /// `[pipeline]`
    #[serde(default)]
    pipeline: PipelineOptions,
    /// `[source]`
    source: Option<Spanned<RawStep>>,
    /// `[[transform]]`, in order
    #[serde(default)]
    transform: Vec<Spanned<RawStep>>,
    /// `[sink]`
    sink: Option<Spanned<RawStep>>,
    /// `[s3]`: decoded by [`Spec::s3`], after interpolation; only its shape is checked here.
    #[allow(dead_code)]
    s3: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    /// `name = "score"`
    name: Option<String>,
    /// `kind = "csv"`: a built-in step.
    kind: Option<Spanned<String>>,
    /// `plugin = "derive"` or `plugin = "path/to/x.wasm"`.
    plugin: Option<Spanned<String>>,
    /// `config = { ... }`: decoded by the step itself; only its shape (a table) is checked here.
    #[allow(dead_code)]
    config: Option<toml::Table>,
    /// `assets = { model = "s3://bucket/model.onnx" }`: files the host fetches for a plugin.
    #[allow(dead_code)]
    assets: Option<BTreeMap<String, String>>,
    /// `workers = 4`: parallel instances of a transform (default: one per core for a plugin,
    /// one for a built-in step).
    workers: Option<NonZeroUsize>,
    /// `limits = { memory_mb = 512, call_seconds = 10, fuel = ... }`: a plugin's limits.
    #[allow(dead_code)]
    limits: Option<toml::Table>,
    /// `grants = { dirs = [...], env = [...], network = true }`: what a plugin may use.
    #[allow(dead_code)]
    grants: Option<toml::Table>,
    /// `on_error = "dead-letter"`: what to do with rows the step cannot handle.
    on_error: Option<OnError>,
    /// `dead_letter = { url = "out/rejected.jsonl" }`: where `dead-letter` writes them.
    #[allow(dead_code)]
    dead_letter: Option<toml::Table>,
}

impl Spec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the spec: {e}"),
        })?;
        Spec::parse(path, &text)
    }

    /// The file's text, as read (before `${...}` interpolation): what a plan file's digest is of.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Checks a spec given as text; `path` is used in messages and to resolve relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Spec, SpecError> {
        let doc = Document { path, text };
        let root = doc.parse()?;
        // Every string of the spec may use `${...}`: the tables decoded later (`config`, `[s3]`,
        // ...) are expanded when they are, from the text; what is read here is expanded here.
        let mut expanded = root.clone();
        let mut interpolated = Vec::new();
        doc.interpolate(&root, &mut expanded, &mut interpolated)?;
        let raw: RawSpec = doc.deserialize(&root, expanded, &interpolated)?;

        let mut names: Vec<String> = Vec::new();
        let mut step = |raw: Spanned<RawStep>, role: Role, table: TablePath| -> Result<StepSpec, SpecError> {
            let span = raw.span();
            let raw = raw.into_inner();
            let (implementation, at) = match (raw.kind, raw.plugin) {
                (Some(kind), None) => {
                    let at = kind.span();
                    (Implementation::Builtin(kind.into_inner()), at)
                }
                (None, Some(plugin)) => {
                    let at = plugin.span();
                    (Implementation::Plugin(plugin.into_inner()), at)
                }
                (Some(_), Some(plugin)) => {
                    return Err(doc.error_at(
                        plugin.span(),
                        format!("{role} step: set either `kind` (a built-in step) or `plugin` (a WebAssembly component), not both"),
                    ));
                }
                (None, None) => {
                    return Err(doc.error_at(
                        span,
                        format!("{role} step: missing `kind` (a built-in step) or `plugin` (a WebAssembly component)"),
                    ));
                }
            };
            let name = match raw.name {
                Some(name) => {
                    if names.contains(&name) {
                        return Err(
                            doc.error_at(span, format!("two steps are named `{name}`: step names must be unique"))
                        );
                    }
                    name
                }
                None => {
                    // The source and the sink are unique: their role names them. Transforms
                    // are named after what runs them.
                    let base = match (role, &implementation) {
                        (Role::Source | Role::Sink, _) => role.to_string(),
                        (Role::Transform, Implementation::Builtin(kind)) => kind.clone(),
                        (Role::Transform, Implementation::Plugin(plugin)) => plugin_stem(plugin),
                    };
                    let mut name = base.clone();
                    let mut n = 2;
                    while names.contains(&name) {
                        name = format!("{base}-{n}");
                        n += 1;
                    }
                    name
                }
            };
            names.push(name.clone());
            Ok(StepSpec {
                name,
                role,
                implementation,
                implementation_at: doc.location(at.start),
                workers: raw.workers,
                on_error: raw.on_error.unwrap_or_default(),
                table,
            })
        };
        let missing =
            |role: Role| doc.error_at(0..0, format!("missing the `[{role}]` table: a pipeline has exactly one {role}"));
        let source = step(raw.source.ok_or_else(|| missing(Role::Source))?, Role::Source, TablePath::Source)?;
        let transforms = raw
            .transform
            .into_iter()
            .enumerate()
            .map(|(i, raw)| step(raw, Role::Transform, TablePath::Transform(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let sink = step(raw.sink.ok_or_else(|| missing(Role::Sink))?, Role::Sink, TablePath::Sink)?;
        Ok(Spec { path: path.to_path_buf(), pipeline: raw.pipeline, source, transforms, sink, text: text.into() })
    }

    /// The pipeline's name: `[pipeline] name`, else the spec's file name without extension.
    pub fn name(&self) -> String {
        self.pipeline.name.clone().unwrap_or_else(|| {
            self.path.file_stem().map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned())
        })
    }

    /// The directory relative paths in the spec are resolved against.
    pub fn base_dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    /// All steps in pipeline order.
    pub fn steps(&self) -> impl Iterator<Item = &StepSpec> {
        std::iter::once(&self.source).chain(&self.transforms).chain(std::iter::once(&self.sink))
    }

    /// Decodes a step's `config` table (an empty table when absent) into `T`, after `${...}`
    /// interpolation. Errors point at the offending key or value.
    pub fn decode_config<T: DeserializeOwned>(&self, step: &StepSpec) -> Result<T, SpecError> {
        self.decode_table(step, "config")
    }

    /// A step's `assets` table (name → URL, interpolated); empty when absent.
    pub fn assets(&self, step: &StepSpec) -> Result<BTreeMap<String, String>, SpecError> {
        self.decode_table(step, "assets")
    }

    /// A step's `limits` and `grants` (defaults: nothing granted), if it declares either.
    pub fn sandbox(&self, step: &StepSpec) -> Result<Option<Sandbox>, SpecError> {
        let (has_limits, has_grants) = (self.has_table(step, "limits"), self.has_table(step, "grants"));
        if !has_limits && !has_grants {
            return Ok(None);
        }
        let limits: Limits = if has_limits { self.decode_table(step, "limits")? } else { Limits::default() };
        let grants: Grants = if has_grants { self.decode_table(step, "grants")? } else { Grants::default() };
        let grants = grants.resolve(self.base_dir()).map_err(|e| self.step_error(step, e))?;
        Ok(Some(Sandbox { limits, grants }))
    }

    /// A step's `dead_letter` table, if it has one; checked against its `on_error`.
    pub fn dead_letter(&self, step: &StepSpec) -> Result<Option<DeadLetterConfig>, SpecError> {
        let config: Option<DeadLetterConfig> =
            if self.has_table(step, "dead_letter") { Some(self.decode_table(step, "dead_letter")?) } else { None };
        match (step.on_error, &config) {
            (OnError::DeadLetter, None) => {
                Err(self.step_error(step, "`on_error = \"dead-letter\"` needs `dead_letter = { url = \"...\" }`"))
            }
            (OnError::Fail | OnError::Skip, Some(_)) => {
                Err(self.step_error(step, "`dead_letter` is only used with `on_error = \"dead-letter\"`"))
            }
            _ => Ok(config),
        }
    }

    /// Whether the step's table has the key `key`.
    fn has_table(&self, step: &StepSpec, key: &str) -> bool {
        let doc = Document { path: &self.path, text: &self.text };
        doc.parse().map(|root| doc.find(&root, Some(step), key).is_some()).unwrap_or(false)
    }

    /// The `[s3]` table: how to reach `s3://` URLs (defaults when absent).
    pub fn s3(&self) -> Result<S3Options, SpecError> {
        self.decode(None, "s3")
    }

    /// Decodes the table `key` of a step (an empty table when absent).
    fn decode_table<T: DeserializeOwned>(&self, step: &StepSpec, key: &str) -> Result<T, SpecError> {
        self.decode(Some(step), key).map_err(|mut error| {
            error.message = format!("step `{}`: {}", step.name, error.message);
            error
        })
    }

    /// Decodes the table `key` of a step, or of the document for `None`, after interpolation.
    fn decode<T: DeserializeOwned>(&self, step: Option<&StepSpec>, key: &str) -> Result<T, SpecError> {
        let doc = Document { path: &self.path, text: &self.text };
        let root = doc.parse()?;
        let (config, interpolated) = doc.table(&root, step, key)?;
        doc.deserialize(&root, config, &interpolated)
    }

    /// A step's `config` table as JSON text, after `${...}` interpolation: what plugins receive.
    pub fn config_json(&self, step: &StepSpec) -> Result<String, SpecError> {
        let value: serde_json::Value = self.decode_config(step)?;
        Ok(value.to_string())
    }

    /// A plugin refused the step's `config` table: an error located at that table (at the
    /// step's `plugin` value when it has none), quoting the plugin's `message`. Positions in the
    /// message (serde's "at line 1 column 24") are in the JSON the plugin received, not in the
    /// spec: the error says so.
    pub fn config_refused(&self, step: &StepSpec, plugin: &str, message: &str) -> SpecError {
        let doc = Document { path: &self.path, text: &self.text };
        let at = doc.parse().ok().and_then(|root| doc.find(&root, Some(step), "config").map(|c| c.span().start));
        let Location { line, column } = at.map_or_else(|| step.implementation_at.clone(), |at| doc.location(at));
        let json_position = message.contains(" line ") && message.contains(" column ");
        let note =
            if json_position { " (that position is in the config as JSON, as the plugin received it)" } else { "" };
        let table = if at.is_some() { "with its `config` table" } else { "(the step has no `config` table)" };
        SpecError {
            path: self.path.clone(),
            line,
            column,
            message: format!("step `{}`: plugin `{plugin}` refused to open {table}: {message}{note}", step.name),
        }
    }

    /// An error about a step, located at its `kind` or `plugin` value.
    pub fn step_error(&self, step: &StepSpec, message: impl fmt::Display) -> SpecError {
        SpecError {
            path: self.path.clone(),
            line: step.implementation_at.line,
            column: step.implementation_at.column,
            message: format!("step `{}`: {message}", step.name),
        }
    }
}

/// `derive` for `derive`, `x` for `path/to/x.wasm`.
fn plugin_stem(plugin: &str) -> String {
    Path::new(plugin).file_stem().map_or_else(|| plugin.to_string(), |s| s.to_string_lossy().into_owned())
}

/// A spec's text with its path: turns byte offsets into `path:line:col` errors.
struct Document<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Document<'a> {
    fn parse(&self) -> Result<Spanned<DeValue<'a>>, SpecError> {
        let root = DeTable::parse(self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            self.error_at(span, one_line(e.message()))
        })?;
        let span = root.span();
        Ok(Spanned::new(span, DeValue::Table(root.into_inner())))
    }

    fn location(&self, offset: usize) -> Location {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location { line, column }
    }

    fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> SpecError {
        let Location { line, column } = self.location(span.start);
        SpecError { path: self.path.to_path_buf(), line, column, message: message.into() }
    }

    /// A deserialization error, prefixed with the dotted path of the key it is about.
    fn toml_error(&self, e: toml::de::Error, root: &Spanned<DeValue<'_>>) -> SpecError {
        let span = e.span().unwrap_or(0..0);
        let mut message = one_line(e.message());
        // serde speaks Rust; say it in TOML's words.
        for (rust, toml) in [
            ("a map", "a table"),
            ("type: map", "type: table"),
            ("a sequence", "an array"),
            ("type: sequence", "type: array"),
            ("a nonzero usize", "a positive integer"),
        ] {
            message = message.replace(rust, toml);
        }
        let path = key_path(root, span.start);
        if path == "transform" && message.ends_with("expected an array") {
            message.push_str(" (write each transform as `[[transform]]`, with double brackets)");
        }
        if !path.is_empty() {
            message = format!("`{path}`: {message}");
        }
        self.error_at(span, message)
    }

    /// Deserializes `value` (part of `root`, `${...}` expanded at the spans `interpolated`),
    /// with errors located in the file. serde quotes offending values in its messages: one that
    /// came from the environment is never echoed, it may be a secret.
    fn deserialize<T: DeserializeOwned>(
        &self,
        root: &Spanned<DeValue<'a>>,
        value: Spanned<DeValue<'a>>,
        interpolated: &[Range<usize>],
    ) -> Result<T, SpecError> {
        T::deserialize(ValueDeserializer::from(value)).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let mut error = self.toml_error(e, root);
            if interpolated.iter().any(|span| span.start == at) {
                error.message =
                    format!("`{}`: invalid value (taken from an environment variable, not shown)", key_path(root, at));
            }
            error
        })
    }

    /// A step's (or the document's) table `key` with `${...}` interpolated, and the spans of interpolated strings.
    fn table(
        &self,
        root: &Spanned<DeValue<'a>>,
        step: Option<&StepSpec>,
        key: &str,
    ) -> Result<(Spanned<DeValue<'a>>, Vec<Range<usize>>), SpecError> {
        let config = self.find(root, step, key).cloned();
        let mut config = config.unwrap_or_else(|| Spanned::new(0..0, DeValue::Table(DeTable::new())));
        let mut interpolated = Vec::new();
        self.interpolate(root, &mut config, &mut interpolated)?;
        Ok((config, interpolated))
    }

    /// The value of `key` in a step's table (or the document's, for `None`).
    fn find<'r>(
        &self,
        root: &'r Spanned<DeValue<'a>>,
        step: Option<&StepSpec>,
        key: &str,
    ) -> Option<&'r Spanned<DeValue<'a>>> {
        let table = match step.map(|s| &s.table) {
            None => Some(root),
            Some(TablePath::Source) => root.get_ref().get("source"),
            Some(TablePath::Sink) => root.get_ref().get("sink"),
            Some(TablePath::Transform(i)) => root.get_ref().get("transform").and_then(|t| t.get_ref().get(*i)),
        };
        table.and_then(|t| t.get_ref().get(key))
    }

    /// Expands `${...}` in every string under `value` (part of `root`, for error paths).
    fn interpolate(
        &self,
        root: &Spanned<DeValue<'a>>,
        value: &mut Spanned<DeValue<'a>>,
        spans: &mut Vec<Range<usize>>,
    ) -> Result<(), SpecError> {
        let span = value.span();
        match value.get_mut() {
            DeValue::String(s) if s.contains('$') => {
                let expanded = interpolate(s)
                    .map_err(|m| self.error_at(span.clone(), format!("`{}`: {m}", key_path(root, span.start))))?;
                if expanded != **s {
                    spans.push(span);
                    *s = expanded.into();
                }
            }
            DeValue::Array(items) => {
                for item in items.iter_mut() {
                    self.interpolate(root, item, spans)?;
                }
            }
            DeValue::Table(table) => {
                for (_, item) in table.iter_mut() {
                    self.interpolate(root, item, spans)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// toml's messages can end with a newline or a period; keep one line without them.
fn one_line(message: &str) -> String {
    message.trim_end().trim_end_matches('.').replace('\n', " ")
}

/// The dotted path (`transform[1].config.columns`) of the innermost key whose key or value
/// covers `offset`; empty when none does. Children are searched even when their table's own
/// span does not cover the offset: a `[table]` header's span is not its contents.
fn key_path(root: &Spanned<DeValue<'_>>, offset: usize) -> String {
    fn find(value: &Spanned<DeValue<'_>>, offset: usize) -> Option<String> {
        let child = |prefix: String, item: &Spanned<DeValue<'_>>| {
            find(item, offset).map(|rest| {
                if rest.is_empty() || rest.starts_with('[') {
                    prefix.clone() + &rest
                } else {
                    format!("{prefix}.{rest}")
                }
            })
        };
        let found = match value.get_ref() {
            DeValue::Table(table) => table.iter().find_map(|(key, item)| {
                if key.span().contains(&offset) {
                    Some(key.get_ref().to_string())
                } else {
                    child(key.get_ref().to_string(), item)
                }
            }),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| child(format!("[{i}]"), item)),
            _ => None,
        };
        found.or_else(|| value.span().contains(&offset).then(String::new))
    }
    find(root, offset).unwrap_or_default()
}

/// Expands `${NAME}`, `${NAME:-default}` and `$${` in one string.
fn interpolate(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in \"{text}\""))?;
            let (name, default) = match after[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&after[..end], None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{}}}`: expected an environment variable name (letters, digits, `_`)",
                    &after[..end]
                ));
            }
            match (std::env::var(name), default) {
                (Ok(value), _) => out.push_str(&value),
                (Err(_), Some(default)) => out.push_str(default),
                (Err(_), None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` for a default)"
                    ));
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        // SAFETY: tests in this module are the only readers of these variables.
        unsafe { std::env::set_var("SPEC_TEST_SET", "v") };
        assert_eq!(interpolate("a${SPEC_TEST_SET}b").unwrap(), "avb");
        assert_eq!(interpolate("${SPEC_TEST_UNSET:-d}").unwrap(), "d");
        assert_eq!(interpolate("$${SPEC_TEST_SET} $5").unwrap(), "${SPEC_TEST_SET} $5");
        assert!(interpolate("${SPEC_TEST_UNSET}").unwrap_err().contains("`SPEC_TEST_UNSET` is not set"));
        assert!(interpolate("${bad-name}").is_err());
        assert!(interpolate("${OPEN").is_err());
    }
}
