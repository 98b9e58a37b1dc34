//! The compiled [`Forest`], its public API, and the scoring pipeline: the table when there is
//! one, else blocks of rows walked tree by tree (padded levels or node by node, monomorphised
//! for the comparison all branches share), then aggregation, base values, the post-transform
//! and each row's best target.

use std::fmt;

use crate::levels::Levels;
use crate::node::{MIXED, Node};
use crate::table::Table;
use crate::{Aggregate, Cmp, PostTransform};

/// A compiled tree ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    /// Root node of each tree, in tree order.
    pub(crate) roots: Vec<u32>,
    pub(crate) nodes: Vec<Node>,
    /// `(target, weight)` of every leaf, contiguous per leaf.
    pub(crate) leaves: Vec<(u32, f32)>,
    pub(crate) n_targets: usize,
    /// Inputs must have more features than this.
    pub(crate) max_feature: usize,
    pub(crate) aggregate: Aggregate,
    pub(crate) base_values: Vec<f32>,
    pub(crate) post_transform: PostTransform,
    /// The comparison every branch uses, if they all use the same one.
    pub(crate) uniform: Option<Cmp>,
    /// The same trees padded to complete binary trees, when they all use one comparison and
    /// padding costs little: then rows are scored without a branch per node.
    pub(crate) levels: Option<Levels>,
    /// The scores tabulated per cell of the threshold grid, when the grid is small.
    pub(crate) table: Option<Table>,
}

impl fmt::Display for Forest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} trees, {} nodes, {} targets, {:?}, post-transform {:?}",
            self.roots.len(),
            self.nodes.len(),
            self.n_targets,
            self.aggregate,
            self.post_transform
        )
    }
}

/// Rows scored together: tree by tree over a block, so each tree stays in cache.
const BLOCK_ROWS: usize = 64;

/// The index of a row's highest score, the first of equal ones (as ONNX's `ArgMax`).
#[inline]
fn best(row: &[f32]) -> i32 {
    (1..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as i32
}

impl Forest {
    pub fn n_targets(&self) -> usize {
        self.n_targets
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// The smallest number of input features the ensemble can read.
    pub fn min_features(&self) -> usize {
        self.max_feature + 1
    }

    /// Scores `input`, rows of `n_features` values, into `output`, rows of `n_targets()`
    /// values: aggregated tree outputs plus base values, post-transformed.
    pub fn predict(&self, input: &[f32], n_features: usize, output: &mut [f32]) -> Result<(), String> {
        self.predict_best(input, n_features, output, &mut [])
    }

    /// [`Forest::predict`], and each row's best target (the first of equal scores) into
    /// `best`, one per row, unless `best` is empty.
    pub fn predict_best(
        &self,
        input: &[f32],
        n_features: usize,
        output: &mut [f32],
        best: &mut [i32],
    ) -> Result<(), String> {
        if n_features < self.min_features() {
            return Err(format!(
                "the ensemble reads feature #{}, but rows have {n_features} features",
                self.max_feature
            ));
        }
        if n_features == 0 || !input.len().is_multiple_of(n_features) {
            return Err(format!("input of {} values is not rows of {n_features} features", input.len()));
        }
        let rows = input.len() / n_features;
        if output.len() != rows * self.n_targets {
            return Err(format!("output has {} values, expected {}", output.len(), rows * self.n_targets));
        }
        if !best.is_empty() && best.len() != rows {
            return Err(format!("room for {} best targets, expected {rows}", best.len()));
        }
        match &self.table {
            Some(table) => table.predict(self, input, n_features, output, best),
            None => {
                self.score(input, n_features, output);
                self.finish_rows(output, best);
            }
        }
        Ok(())
    }

    /// The last steps of scoring, on rows of aggregated scores: the post-transform, then each
    /// row's best target unless `best` is empty.
    pub(crate) fn finish_rows(&self, scores: &mut [f32], best: &mut [i32]) {
        for (r, row) in scores.chunks_exact_mut(self.n_targets).enumerate() {
            self.post_transform.apply(row);
            if let Some(b) = best.get_mut(r) {
                *b = self::best(row);
            }
        }
    }

    /// [`Forest::predict`] without the table and before the post-transform, on checked arguments.
    pub(crate) fn score(&self, input: &[f32], n_features: usize, output: &mut [f32]) {
        // Sums of one weight per leaf (boosted trees): walk and add in one pass.
        if let (Some(levels @ Levels { single: Some(_), .. }), Some(cmp), Aggregate::Sum | Aggregate::Average) =
            (&self.levels, self.uniform, self.aggregate)
        {
            match cmp {
                Cmp::Leq => levels.sum::<0>(input, n_features, output, self.n_targets),
                Cmp::Lt => levels.sum::<1>(input, n_features, output, self.n_targets),
                Cmp::Gte => levels.sum::<2>(input, n_features, output, self.n_targets),
                Cmp::Gt => levels.sum::<3>(input, n_features, output, self.n_targets),
                Cmp::Eq => levels.sum::<4>(input, n_features, output, self.n_targets),
                Cmp::Neq => levels.sum::<5>(input, n_features, output, self.n_targets),
            }
            self.finish_scores(output, &[]);
            return;
        }
        // Otherwise each walker writes, for a block of rows, the leaf range every tree reaches
        // for every row (tree-major), monomorphised for the comparison all branches share.
        match (&self.levels, self.uniform) {
            (Some(levels), Some(cmp)) => match cmp {
                Cmp::Leq => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<0>(rows, n_features, out))
                }
                Cmp::Lt => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<1>(rows, n_features, out))
                }
                Cmp::Gte => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<2>(rows, n_features, out))
                }
                Cmp::Gt => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<3>(rows, n_features, out))
                }
                Cmp::Eq => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<4>(rows, n_features, out))
                }
                Cmp::Neq => {
                    self.aggregate(input, n_features, output, |rows, out| levels.walk::<5>(rows, n_features, out))
                }
            },
            (None, Some(cmp)) => match cmp {
                Cmp::Leq => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<0>(rows, n_features, out))
                }
                Cmp::Lt => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<1>(rows, n_features, out))
                }
                Cmp::Gte => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<2>(rows, n_features, out))
                }
                Cmp::Gt => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<3>(rows, n_features, out))
                }
                Cmp::Eq => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<4>(rows, n_features, out))
                }
                Cmp::Neq => {
                    self.aggregate(input, n_features, output, |rows, out| self.walk_all::<5>(rows, n_features, out))
                }
            },
            (_, None) => {
                self.aggregate(input, n_features, output, |rows, out| self.walk_all::<MIXED>(rows, n_features, out))
            }
        }
    }

    /// Scores blocks of rows: `walk` gives the leaf each tree reaches for each row of a block
    /// (tree-major), then the leaves' weights are aggregated per row and target in tree order.
    fn aggregate(
        &self,
        input: &[f32],
        n_features: usize,
        output: &mut [f32],
        walk: impl Fn(&[f32], &mut Vec<(u32, u32)>),
    ) {
        let t = self.n_targets;
        let init = match self.aggregate {
            Aggregate::Sum | Aggregate::Average => 0.0,
            Aggregate::Min => f32::INFINITY,
            Aggregate::Max => f32::NEG_INFINITY,
        };
        output.fill(init);
        // For min/max: whether any tree reached a target (else the target scores 0).
        let mut reached =
            vec![false; if matches!(self.aggregate, Aggregate::Min | Aggregate::Max) { output.len() } else { 0 }];
        let mut leaves = Vec::with_capacity(self.roots.len() * BLOCK_ROWS);
        for (block, (rows, scores)) in
            input.chunks(BLOCK_ROWS * n_features).zip(output.chunks_mut(BLOCK_ROWS * t)).enumerate()
        {
            let n = rows.len() / n_features;
            leaves.clear();
            walk(rows, &mut leaves);
            for tree_leaves in leaves.chunks_exact(n) {
                for (r, &(start, end)) in tree_leaves.iter().enumerate() {
                    let scores = &mut scores[r * t..(r + 1) * t];
                    for &(target, weight) in &self.leaves[start as usize..end as usize] {
                        let s = &mut scores[target as usize];
                        match self.aggregate {
                            Aggregate::Sum | Aggregate::Average => *s += weight,
                            Aggregate::Min => *s = s.min(weight),
                            Aggregate::Max => *s = s.max(weight),
                        }
                        if !reached.is_empty() {
                            reached[(block * BLOCK_ROWS + r) * t + target as usize] = true;
                        }
                    }
                }
            }
        }
        self.finish_scores(output, &reached);
    }

    /// After aggregation: averages, min/max of targets no tree reached, then base values.
    fn finish_scores(&self, output: &mut [f32], reached: &[bool]) {
        let t = self.n_targets;
        let trees = self.roots.len() as f32;
        for (i, s) in output.iter_mut().enumerate() {
            match self.aggregate {
                Aggregate::Sum => {}
                Aggregate::Average => *s /= trees,
                Aggregate::Min | Aggregate::Max => {
                    if !reached[i] {
                        *s = 0.0
                    }
                }
            }
            *s += self.base_values[i % t];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OnnxTrees;
    use crate::testing::{predict, trees};

    #[test]
    fn uniform_comparisons_are_specialised_with_the_same_results() {
        let mixed = Forest::compile(&trees(Aggregate::Sum, Cmp::Leq)).unwrap();
        let uniform = Forest::compile(&trees(Aggregate::Sum, Cmp::Lt)).unwrap();
        assert_eq!(uniform.uniform, Some(Cmp::Lt));
        // Away from the second threshold both trees agree.
        let rows: Vec<[f32; 2]> = (0..200).map(|i| [(i % 7) as f32 * 0.4, (i % 5) as f32 + 0.5]).collect();
        assert_eq!(predict(&mixed, &rows), predict(&uniform, &rows), "{BLOCK_ROWS}-row blocks and the tail");
    }

    #[test]
    fn post_transforms_and_best_targets() {
        let rows = [[0.5, 9.0], [1.0, 2.0]]; // raw scores [11, 20.5], [10, 22.5]
        let input: Vec<f32> = rows.iter().flatten().copied().collect();
        let score = |post| {
            let forest =
                Forest::compile(&OnnxTrees { post_transform: post, ..trees(Aggregate::Sum, Cmp::Leq) }).unwrap();
            let (mut out, mut best) = (vec![0.0; 4], vec![-1; 2]);
            forest.predict_best(&input, 2, &mut out, &mut best).unwrap();
            (out, best)
        };
        assert_eq!(score(PostTransform::None), (vec![11.0, 20.5, 10.0, 22.5], vec![1, 1]));
        let (softmax, best) = score(PostTransform::Softmax);
        let expected = [1.0 / (1.0 + 9.5f32.exp()), 1.0 / (1.0 + (-9.5f32).exp())];
        assert!((softmax[0] - expected[0]).abs() < 1e-7 && (softmax[1] - expected[1]).abs() < 1e-6, "{softmax:?}");
        assert!((softmax[2] + softmax[3] - 1.0).abs() < 1e-6, "{softmax:?}");
        assert_eq!(best, vec![1, 1]);
        let (logistic, _) = score(PostTransform::Logistic);
        assert_eq!(logistic[0], 1.0 / (1.0 + (-11.0f32).exp()));
        // Equal scores: the first wins.
        let mut tied = trees(Aggregate::Sum, Cmp::Leq);
        tied.leaf_weights = vec![0.0; 5];
        tied.base_values = vec![1.0, 1.0];
        let forest = Forest::compile(&tied).unwrap();
        let mut best = vec![-1; 2];
        forest.predict_best(&input, 2, &mut [0.0; 4], &mut best).unwrap();
        assert_eq!(best, vec![0, 0]);
        assert!(PostTransform::from_onnx("PROBIT").unwrap_err().contains("PROBIT"));
    }

    #[test]
    fn aggregates() {
        let rows = [[1.0, 2.5]]; // tree 0: +3 to class 0, +4 to class 1; tree 1: +0.5 to class 1
        let score = |a| predict(&Forest::compile(&trees(a, Cmp::Leq)).unwrap(), &rows);
        assert_eq!(score(Aggregate::Sum), vec![13.0, 24.5]);
        assert_eq!(score(Aggregate::Average), vec![11.5, 22.25]);
        assert_eq!(score(Aggregate::Min), vec![13.0, 20.5]);
        assert_eq!(score(Aggregate::Max), vec![13.0, 24.0]);
        assert_eq!(
            predict(&Forest::compile(&trees(Aggregate::Min, Cmp::Leq)).unwrap(), &[[0.5, 0.0]]),
            vec![11.0, 20.5]
        );
    }
}
