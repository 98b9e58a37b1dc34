//! Tree ensembles as ONNX describes them (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`),
//! or as XGBoost saves them ([`xgboost`]), compiled once into a flat, cache-friendly layout and
//! evaluated many rows at a time.
//!
//! Why not tract's own op: it decodes every node from a generic tensor on each visit and finds a
//! leaf's weights by iterating over all leaves before it (docs/performance.md compares the two).
//! Here a node is 16 bytes (four to a cache line), each tree's nodes are laid out breadth-first
//! so the top levels share cache lines, a leaf points straight at its weights, and rows are
//! scored in blocks, tree by tree, so a tree stays in cache while a block of rows walks it.
//! When every branch uses the same comparison (XGBoost: `<`, scikit-learn: `<=`), the walk is
//! monomorphised for it.
//!
//! When the trees read few features at few distinct thresholds (Iris: 4 features, 31
//! thresholds, 300 trees), the whole ensemble is a function of which interval between
//! thresholds each feature falls in: 4,860 cells for Iris. The forest then also tabulates its
//! scores per cell, computed by the walk itself, and scores a row by locating its cell and
//! reading the table: the same bits as the walk, at a cost independent of the number of trees.
//!
//! Semantics follow the ONNX spec (as onnxruntime implements it): a missing value (NaN) takes the
//! branch `nodes_missing_value_tracks_true` says, scores are aggregated over trees (sum, average,
//! min or max), then `base_values` are added, then the post-transform (softmax or logistic) is
//! applied and, for classifiers, the best target taken (the first of equal scores). Sums run in
//! tree order in `f32`, as tract does, so results match tract's op to within a few units in the
//! last place.
//!
//! Modules:
//! - `onnx`: the ONNX attribute vocabulary ([`Cmp`], [`Aggregate`], [`PostTransform`]) and
//!   [`OnnxTrees`], the parallel-array form every ensemble is compiled from;
//! - `compile`: [`Forest::compile`], validation and the breadth-first node layout;
//! - `forest`: the compiled [`Forest`], its public API and the scoring pipeline;
//! - `node`: the 16-byte node and its bits, and the node-by-node walk;
//! - `levels`: trees padded to complete binary trees, walked several rows in lockstep;
//! - `table`: the finished scores tabulated over the threshold grid, and finding a row's cell;
//! - `simd`: counting a value's bin over padded thresholds (WebAssembly SIMD spelled out);
//! - [`xgboost`]: XGBoost's JSON model format, read into [`OnnxTrees`];
//! - `testing` (tests only): the shared deterministic pseudo-random generator and test ensembles.

mod compile;
mod forest;
mod levels;
mod node;
mod onnx;
mod simd;
mod table;
#[cfg(test)]
mod testing;
pub mod xgboost;

pub use forest::Forest;
pub use onnx::{Aggregate, Cmp, OnnxTrees, PostTransform};
