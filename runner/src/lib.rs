//! `runner`: streams typed, columnar batches from a source through transforms to a sink, where
//! every step is built into the host or is a sandboxed WebAssembly component plugin.
//!
//! # Layout
//!
//! - [`spec`]: the TOML pipeline spec: parsing, `${ENV}` interpolation, located errors.
//! - [`batch`]: the columnar [`batch::Batch`] every step consumes and produces.
//! - [`step`]: the `Source` / `Transform` / `Sink` traits, the one seam of the pipeline.
//! - [`pipeline`]: plans a spec (checks every step), runs it as a chain of tasks joined by
//!   bounded channels, and reports per-step counts and timings.
//! - [`report`]: the run summary: per-step counts and timings, as text or JSON.
//! - [`builtin`]: the steps built into the host, one file each, and the `kind` registry.
//! - [`plugin`]: the wasmtime engine, the compiled-component cache, the sandbox, the WIT
//!   bindings, and the adapters that make a component a step.
//! - [`lookup`]: `runner lookup`: a row's key, computed as the pipeline does, and its value.
//! - [`scaffold`]: `runner plugin new`: a new plugin crate from the templates in `templates/`.
//! - [`object_url`]: resolves data and asset URLs to an `object_store` store and path.
//! - [`format`](mod@format): text forms of values (Python-compatible floats).
//!
//! `builtin` and `plugin` depend on `step` and `batch`, never on each other; `pipeline`
//! depends on the traits and on the two registries, never on a concrete step's internals.
//! The binary (`main.rs`) only parses arguments and maps errors to exit codes.

pub mod batch;
pub mod builtin;
pub mod format;
pub mod lookup;
pub mod object_url;
pub mod pipeline;
pub mod plugin;
pub mod redis_client;
pub mod report;
pub mod scaffold;
pub mod spec;
pub mod step;
