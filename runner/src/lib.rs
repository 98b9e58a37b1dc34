//! `runner`: streams typed, columnar batches from a source through transforms to a sink, where
//! every step is built into the host or is a sandboxed WebAssembly component plugin.
//!
//! # Layout
//!
//! The modules form one chain: each uses only modules above it in this list, and `builtin` and
//! `plugin`, side by side, never use each other (`tests/layers.rs` checks it).
//!
//! - [`format`]: text forms of values (Python's float text, row-key text, pandas's missing
//!   values) and the bound on untrusted text the runner prints.
//! - [`batch`]: the columnar [`batch::Batch`] every step consumes and produces, and reading a
//!   value from text.
//! - [`spec`]: the TOML pipeline spec: parsing, `${ENV}` interpolation, located errors, and
//!   every configuration type (limits and grants, error policies, dead letters, `[s3]`).
//! - [`object_url`]: data, asset and output URLs resolved to an `object_store` store and path.
//! - [`redis_client`]: connecting to Redis with retries, URLs shown without passwords.
//! - [`step`]: the `Source` / `Transform` / `Sink` traits (the one seam of the pipeline), row
//!   errors, the error policy, the progress counters, shards and plan files, and what a step
//!   opens with.
//! - [`report`]: the run summary: per-step counts and timings, as text or JSON.
//! - [`metrics`]: a run's counts pushed to a Prometheus Pushgateway while it goes and at its end.
//! - [`builtin`]: the steps built into the host, each defined once by an `impl Kind`, and the
//!   registry of kinds.
//! - [`plugin`]: the wasmtime engine, the compiled-component cache, the sandbox, the WIT
//!   bindings, and the adapters that make a component a step.
//! - [`pipeline`]: plans a spec (checks every step) and runs it as tasks joined by bounded
//!   channels.
//! - [`lookup`]: `runner lookup`: a row's key, computed as the pipeline does, and its value.
//! - [`scaffold`]: `runner plugin new`: a new plugin crate from the templates in `templates/`.
//!
//! The binary (`main.rs`) parses arguments, watches for signals, and maps outcomes to exit
//! codes.

pub mod batch;
pub mod builtin;
pub mod format;
pub mod lookup;
pub mod metrics;
pub mod object_url;
pub mod pipeline;
pub mod plugin;
pub mod redis_client;
pub mod report;
pub mod scaffold;
pub mod spec;
pub mod step;
