//! The ensemble's finished scores tabulated over the grid its thresholds make ([`Table`]), built
//! by `Forest::table` when the grid is small, and how a row finds its cell: bins counted over
//! padded thresholds (`crate::simd`) or found by a branch-free binary search.

use crate::node::{FEATURE_MASK, LEAF};
use crate::simd::count_below;
use crate::{Cmp, Forest};

/// The ensemble's scores tabulated over the grid its thresholds make: every branch compares
/// one feature with one threshold, so the leaf each tree reaches, and with it the score, only
/// depends on which interval between a feature's sorted distinct thresholds each value falls
/// in (its bin). A row's cell is its bins in mixed radix; the table holds each cell's final
/// scores (post-transform applied) and best target, as [`Forest::score`] and
/// [`Forest::finish_rows`] compute them for a row in that cell, so reading it gives the same
/// bits with no `exp` left per row. Rows with a missing value in a feature the trees read take
/// the walk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table {
    /// The features the trees read.
    features: Vec<Axis>,
    /// `x <= t`-style branches (`Leq`, `Gt`): a bin counts the thresholds below the value;
    /// `x < t`-style (`Lt`, `Gte`): the thresholds at or below it.
    below_only: bool,
    /// `n_targets` scores per cell, post-transformed.
    scores: Vec<f32>,
    /// The best target of each cell.
    best: Vec<i32>,
    /// Every feature's thresholds padded with NaN (which no comparison counts) to `width`, a
    /// power of two up to [`MAX_COUNTED`]: a bin is then a fixed number of comparisons with no
    /// loop left to run, which compiles to a few SIMD instructions under LLVM and Cranelift
    /// alike. Empty (width 0) when a feature has more thresholds: those take the binary search.
    padded: Vec<f32>,
    width: usize,
}

/// Most thresholds per feature whose bins are counted rather than searched.
const MAX_COUNTED: usize = 64;

#[derive(Debug, Clone, PartialEq)]
struct Axis {
    feature: usize,
    /// Distinct, ascending.
    thresholds: Vec<f32>,
    /// Cells between consecutive bins of this feature.
    stride: usize,
}

/// Tabulate when the grid has at most this many cells ...
const MAX_TABLE_CELLS: usize = 1 << 16;
/// ... and filling it walks at most this many trees, so compiling stays quick.
const MAX_TABLE_WORK: usize = 1 << 23;

impl Forest {
    /// The table of scores per cell, or `None` when branches compare in mixed ways or for
    /// (in)equality, a threshold is NaN, or the grid is too large to fill quickly.
    pub(crate) fn table(&self) -> Option<Table> {
        let below_only = match self.uniform? {
            Cmp::Lt | Cmp::Gte => false,
            Cmp::Leq | Cmp::Gt => true,
            Cmp::Eq | Cmp::Neq => return None,
        };
        let mut thresholds: Vec<Vec<f32>> = vec![Vec::new(); self.max_feature + 1];
        for node in self.nodes.iter().filter(|n| n.meta & LEAF == 0) {
            if node.value.is_nan() {
                return None;
            }
            thresholds[(node.meta & FEATURE_MASK) as usize].push(node.value);
        }
        let mut features = Vec::new();
        let mut cells = 1usize;
        for (feature, mut t) in thresholds.into_iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            t.sort_unstable_by(f32::total_cmp);
            t.dedup_by(|a, b| a == b); // -0.0 == 0.0: one threshold
            let stride = cells;
            cells = cells.checked_mul(t.len() + 1).filter(|&c| c <= MAX_TABLE_CELLS)?;
            features.push(Axis { feature, thresholds: t, stride });
        }
        if cells.saturating_mul(self.roots.len()) > MAX_TABLE_WORK {
            return None;
        }
        // One row per cell, each feature at a value inside its bin: for `x < t` branches, bin
        // 0 is below the first threshold and bin b starts at threshold b - 1; for `x <= t`,
        // bin b ends at threshold b and the last bin is above them all.
        let width = self.min_features();
        let mut scores = vec![0.0; cells * self.n_targets];
        let mut rows = Vec::new();
        const CHUNK: usize = 4096;
        for (first, out) in (0..cells).step_by(CHUNK).zip(scores.chunks_mut(CHUNK * self.n_targets)) {
            rows.clear();
            rows.resize(out.len() / self.n_targets * width, 0.0);
            for (cell, row) in (first..).zip(rows.chunks_exact_mut(width)) {
                for axis in &features {
                    let bin = cell / axis.stride % (axis.thresholds.len() + 1);
                    row[axis.feature] = match (below_only, bin) {
                        (false, 0) => f32::NEG_INFINITY,
                        (false, b) => axis.thresholds[b - 1],
                        (true, b) => axis.thresholds.get(b).copied().unwrap_or(f32::INFINITY),
                    };
                }
            }
            self.score(&rows, width, out);
        }
        let mut best = vec![0; cells];
        self.finish_rows(&mut scores, &mut best);
        let (padded, width) = Table::pad(&features);
        Some(Table { features, below_only, scores, best, padded, width })
    }
}

impl Table {
    /// The features' thresholds padded with NaN to one power-of-two width (at least 4), and
    /// that width; `(vec![], 0)` when a feature has more than [`MAX_COUNTED`].
    fn pad(features: &[Axis]) -> (Vec<f32>, usize) {
        let longest = features.iter().map(|a| a.thresholds.len()).max().unwrap_or(0);
        if longest > MAX_COUNTED {
            return (Vec::new(), 0);
        }
        let width = longest.next_power_of_two().max(4);
        let mut padded = Vec::with_capacity(features.len() * width);
        for axis in features {
            padded.extend_from_slice(&axis.thresholds);
            padded.resize(padded.len() + width - axis.thresholds.len(), f32::NAN);
        }
        (padded, width)
    }

    /// Scores rows (and their best targets, unless `best` is empty) by their cells; rows with
    /// a missing value the trees read take the walk.
    pub(crate) fn predict(
        &self,
        forest: &Forest,
        input: &[f32],
        n_features: usize,
        output: &mut [f32],
        best: &mut [i32],
    ) {
        let (f, n) = (forest, n_features);
        match self.width {
            4 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<4>(row)),
            8 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<8>(row)),
            16 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<16>(row)),
            32 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<32>(row)),
            64 => self.predict_with(f, input, n, output, best, |row| self.counted_cell::<64>(row)),
            _ => self.predict_with(f, input, n, output, best, |row| self.cell(row)),
        }
    }

    /// Scores every row from the table, its cell found by `cell`, and its best target unless
    /// `best` is empty; rows without a cell (a missing value) take the walk.
    #[inline]
    fn predict_with(
        &self,
        forest: &Forest,
        input: &[f32],
        n_features: usize,
        output: &mut [f32],
        best: &mut [i32],
        cell: impl Fn(&[f32]) -> Option<usize>,
    ) {
        let t = forest.n_targets;
        let mut missing = Vec::new();
        for (r, (row, scores)) in input.chunks_exact(n_features).zip(output.chunks_exact_mut(t)).enumerate() {
            match cell(row) {
                Some(cell) => {
                    copy_scores(scores, &self.scores[cell * t..(cell + 1) * t]);
                    if let Some(b) = best.get_mut(r) {
                        *b = self.best[cell];
                    }
                }
                None => missing.push(r),
            }
        }
        if !missing.is_empty() {
            let rows: Vec<f32> =
                missing.iter().flat_map(|&r| &input[r * n_features..(r + 1) * n_features]).copied().collect();
            let mut scores = vec![0.0; missing.len() * t];
            let mut missing_best = vec![0; if best.is_empty() { 0 } else { missing.len() }];
            forest.score(&rows, n_features, &mut scores);
            forest.finish_rows(&mut scores, &mut missing_best);
            for (i, (&r, s)) in missing.iter().zip(scores.chunks_exact(t)).enumerate() {
                output[r * t..(r + 1) * t].copy_from_slice(s);
                if let Some(b) = best.get_mut(r) {
                    *b = missing_best[i];
                }
            }
        }
    }

    /// The cell of `row`, or `None` when a feature the trees read is missing (NaN).
    #[inline]
    fn cell(&self, row: &[f32]) -> Option<usize> {
        let mut cell = 0;
        for axis in &self.features {
            let x = row[axis.feature];
            if x.is_nan() {
                return None;
            }
            cell += axis.stride * self.bin(&axis.thresholds, x);
        }
        Some(cell)
    }

    /// [`Table::cell`] with each bin counted over the `W` padded thresholds of its feature: the
    /// same bin, as the thresholds are sorted. `W` is the table's `width`.
    #[inline]
    fn counted_cell<const W: usize>(&self, row: &[f32]) -> Option<usize> {
        if self.below_only { self.counted::<W, true>(row) } else { self.counted::<W, false>(row) }
    }

    /// [`Table::counted_cell`] for one kind of comparison (`BELOW_ONLY` as `below_only`).
    #[inline]
    fn counted<const W: usize, const BELOW_ONLY: bool>(&self, row: &[f32]) -> Option<usize> {
        let mut cell = 0;
        for (axis, thresholds) in self.features.iter().zip(self.padded.chunks_exact(W)) {
            let x = row[axis.feature];
            if x.is_nan() {
                return None;
            }
            let thresholds: &[f32; W] = thresholds.try_into().expect("chunks of W");
            cell += axis.stride * count_below::<W, BELOW_ONLY>(thresholds, x) as usize;
        }
        Some(cell)
    }

    /// The bin of `x` (not NaN) among `thresholds`: how many lie below it (or at it, for
    /// `x < t` branches). A binary search whose steps select rather than branch: the number of
    /// steps depends only on the length, so nothing is mispredicted, in WebAssembly as natively.
    #[inline]
    fn bin(&self, thresholds: &[f32], x: f32) -> usize {
        let (mut below, mut unknown) = (0, thresholds.len());
        while unknown > 0 {
            let half = unknown / 2;
            let t = thresholds[below + half];
            let passed = if self.below_only { t < x } else { t <= x };
            below = if passed { below + half + 1 } else { below };
            unknown = if passed { unknown - half - 1 } else { half };
        }
        below
    }
}

/// Copies a row's scores. Rows of up to four are copied value by value: `copy_from_slice` of
/// an unknown length is a call to `memcpy`, which WebAssembly makes a host call (`memory.copy`).
#[inline(always)]
fn copy_scores(to: &mut [f32], from: &[f32]) {
    match (to, from) {
        ([a], [x]) => *a = *x,
        ([a, b], [x, y]) => (*a, *b) = (*x, *y),
        ([a, b, c], [x, y, z]) => (*a, *b, *c) = (*x, *y, *z),
        ([a, b, c, d], [x, y, z, w]) => (*a, *b, *c, *d) = (*x, *y, *z, *w),
        (to, from) => to.copy_from_slice(from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Lcg, random_trees, random_trees_with};
    use crate::{OnnxTrees, PostTransform};

    /// A small grid is tabulated, and the table scores every row with the walk's very bits
    /// and best targets: values on, between and beyond the thresholds, signed zeros,
    /// infinities, missing values; for every comparison that orders, with one and with several
    /// weights per leaf, under every post-transform.
    #[test]
    fn the_table_scores_exactly_as_the_walk() {
        let posts = [PostTransform::None, PostTransform::Softmax, PostTransform::Logistic];
        for ((seed, cmp), post) in
            [(1, Cmp::Lt), (2, Cmp::Leq), (3, Cmp::Gte), (4, Cmp::Gt)].into_iter().zip(posts.iter().cycle())
        {
            for max_weights in [1, 2] {
                let trees = OnnxTrees { post_transform: *post, ..random_trees_with(60, seed, max_weights, 6, cmp) };
                let tabulated = Forest::compile(&trees).unwrap();
                assert!(tabulated.table.is_some(), "{cmp:?}: 5 features x 6 thresholds make 7^5 cells");
                let walked = Forest { table: None, ..tabulated.clone() };
                let special = [-5.0, 0.0, -0.0, 5.0 / 3.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e30];
                let mut rng = Lcg::new(seed);
                let input: Vec<f32> = (0..5 * 2000)
                    .map(|_| {
                        let v = rng.next_u32();
                        match v % 4 {
                            // exactly a threshold: (k * 10/6) - 5 as the trees compute it
                            0 => (v / 4 % 6) as f32 * (10.0 / 6.0) - 5.0,
                            1 => special[(v / 4) as usize % special.len()],
                            _ => (v % 2400) as f32 / 200.0 - 6.0,
                        }
                    })
                    .collect();
                let (mut a, mut b) = (vec![0.0; 2000 * 3], vec![0.0; 2000 * 3]);
                let (mut best_a, mut best_b) = (vec![-1; 2000], vec![-1; 2000]);
                tabulated.predict_best(&input, 5, &mut a, &mut best_a).unwrap();
                walked.predict_best(&input, 5, &mut b, &mut best_b).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{cmp:?}, {max_weights} weights per leaf, {post:?}");
                assert_eq!(best_a, best_b, "{cmp:?}, {max_weights} weights per leaf, {post:?}");
                let mut plain = vec![0.0; 2000 * 3];
                tabulated.predict(&input, 5, &mut plain).unwrap();
                assert_eq!(bits(&plain), bits(&a), "the scores do not depend on asking for the best");
            }
        }
        // Too many cells, or an equality test: no table.
        assert!(Forest::compile(&random_trees(40, 7, 1)).unwrap().table.is_none());
        assert!(Forest::compile(&random_trees_with(20, 5, 1, 6, Cmp::Eq)).unwrap().table.is_none());
    }

    #[test]
    fn counted_bins_are_the_searched_bins() {
        let mut rng = Lcg::new(5);
        let mut next = move || rng.next_u32();
        for lengths in [[0, 1], [3, 4], [5, 16], [17, 64], [1, 33], [9, 2], [20, 3]] {
            // Thresholds -4, -3.5, ..., so 0.0 is one of them from 9 on; the rows try -0.0 too.
            let mut features: Vec<Axis> = lengths
                .iter()
                .enumerate()
                .map(|(feature, &n)| Axis {
                    feature,
                    thresholds: (0..n).map(|i| i as f32 * 0.5 - 4.0).collect(),
                    stride: 1,
                })
                .collect();
            features[1].stride = lengths[0] + 1;
            let (padded, width) = Table::pad(&features);
            for below_only in [false, true] {
                let table = Table {
                    features: features.clone(),
                    below_only,
                    scores: vec![],
                    best: vec![],
                    padded: padded.clone(),
                    width,
                };
                for _ in 0..2000 {
                    let pick = |v: u32| match v % 5 {
                        0 => [f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e30][(v / 5) as usize % 5],
                        1 | 2 => (v / 5 % 80) as f32 * 0.5 - 20.0, // on a threshold, or beyond all
                        _ => (v / 5 % 4000) as f32 / 100.0 - 20.0,
                    };
                    let row = [pick(next()), pick(next())];
                    let counted = match width {
                        4 => table.counted_cell::<4>(&row),
                        8 => table.counted_cell::<8>(&row),
                        16 => table.counted_cell::<16>(&row),
                        32 => table.counted_cell::<32>(&row),
                        64 => table.counted_cell::<64>(&row),
                        other => panic!("width {other} for {lengths:?}"),
                    };
                    assert_eq!(counted, table.cell(&row), "{lengths:?} below_only {below_only} row {row:?}");
                }
            }
        }
        let long = [Axis { feature: 0, thresholds: (0..65).map(|i| i as f32).collect(), stride: 1 }];
        assert_eq!(Table::pad(&long), (vec![], 0), "more than MAX_COUNTED: searched");
    }
}
