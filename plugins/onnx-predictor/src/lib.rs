//! `onnx-predictor`: a transform plugin that scores each batch with a tabular ONNX model.
//!
//! - [`predictor`]: loads a model with tract-onnx and scores `[rows, features]` inputs.
//! - [`ops`]: our tree ensembles, registered in tract's op registry (see `forest`).
//! - `guest` (wasm32 only): the WIT glue: config, the model asset, batches in and out.
//!
//! Everything but `guest` builds natively too, so the benchmark can run the same code with and
//! without WebAssembly.

pub mod ops;
pub mod predictor;

#[cfg(target_arch = "wasm32")]
mod guest;
