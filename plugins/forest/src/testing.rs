//! What the modules' tests share: the one deterministic pseudo-random generator ([`Lcg`]), a
//! small hand-written ensemble ([`trees`]) and random ensembles ([`random_trees`]). Nothing
//! here reads files or starts threads: the same tests run inside WebAssembly.

use crate::{Aggregate, Cmp, Forest, OnnxTrees, PostTransform};

/// A 64-bit linear congruential generator (Knuth's MMIX constants), deterministic so every run,
/// native or in WebAssembly, tests the same values.
pub(crate) struct Lcg(u64);

impl Lcg {
    pub(crate) fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    /// The next 31 bits (the state's high bits: an LCG's low bits repeat quickly).
    pub(crate) fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// Tree 0: x0 < 1 ? leaf(+1 to class 0) : (x1 <= 2 ? leaf(+2 to class 1) : leaf(+3 to 0, +4 to 1)),
/// missing x0 goes true. Tree 1: a single leaf, +0.5 to class 1. Node ids are deliberately
/// not in layout order.
pub(crate) fn trees(aggregate: Aggregate, second_mode: Cmp) -> OnnxTrees {
    OnnxTrees {
        tree_ids: vec![0, 0, 0, 0, 0, 1],
        node_ids: vec![4, 0, 7, 2, 9, 0],
        feature_ids: vec![0, 0, 1, 0, 0, 0],
        values: vec![0.0, 1.0, 2.0, 0.0, 0.0, 0.0],
        modes: vec![None, Some(Cmp::Lt), Some(second_mode), None, None, None],
        true_ids: vec![0, 4, 2, 0, 0, 0],
        false_ids: vec![0, 7, 9, 0, 0, 0],
        missing_tracks_true: vec![false, true, false, false, false, false],
        leaf_tree_ids: vec![0, 0, 0, 0, 1],
        leaf_node_ids: vec![4, 2, 9, 9, 0],
        leaf_targets: vec![0, 1, 0, 1, 1],
        leaf_weights: vec![1.0, 2.0, 3.0, 4.0, 0.5],
        n_targets: 2,
        aggregate,
        base_values: vec![10.0, 20.0],
        post_transform: PostTransform::None,
    }
}

/// Scores rows of two features with a forest of two targets.
pub(crate) fn predict(forest: &Forest, rows: &[[f32; 2]]) -> Vec<f32> {
    let input: Vec<f32> = rows.iter().flatten().copied().collect();
    let mut out = vec![0.0; rows.len() * 2];
    forest.predict(&input, 2, &mut out).unwrap();
    out
}

/// A deterministic random ensemble: `trees` trees of depth up to 7 over 5 features, one
/// comparison for all branches, missing values sent either way, leaves voting for 3 targets.
pub(crate) fn random_trees(trees: i64, seed: u64, max_weights: u32) -> OnnxTrees {
    random_trees_with(trees, seed, max_weights, 200, Cmp::Lt)
}

/// [`random_trees`] with `distinct` possible thresholds and comparison `cmp`.
pub(crate) fn random_trees_with(trees: i64, seed: u64, max_weights: u32, distinct: u32, cmp: Cmp) -> OnnxTrees {
    let mut rng = Lcg::new(seed);
    let mut next = move || rng.next_u32();
    let mut t = OnnxTrees { n_targets: 3, ..OnnxTrees::default() };
    for tree in 0..trees {
        let mut next_id = 0i64;
        // (node id, depth) still to create.
        let mut pending = vec![(0i64, 0u32)];
        while let Some((id, depth)) = pending.pop() {
            next_id = next_id.max(id + 1);
            t.tree_ids.push(tree);
            t.node_ids.push(id);
            t.missing_tracks_true.push(next() % 2 == 0);
            // One tree in five is a stump (a single leaf), as boosting often makes.
            if depth < 7 && next() % (if depth == 0 { 5 } else { 4 }) != 0 {
                let (yes, no) = (next_id, next_id + 1);
                next_id += 2;
                t.feature_ids.push((next() % 5) as i64);
                t.values.push((next() % distinct) as f32 * (10.0 / distinct as f32) - 5.0);
                t.modes.push(Some(cmp));
                t.true_ids.push(yes);
                t.false_ids.push(no);
                pending.push((yes, depth + 1));
                pending.push((no, depth + 1));
            } else {
                t.feature_ids.push(0);
                t.values.push(0.0);
                t.modes.push(None);
                t.true_ids.push(0);
                t.false_ids.push(0);
                for _ in 0..1 + next() % max_weights {
                    t.leaf_tree_ids.push(tree);
                    t.leaf_node_ids.push(id);
                    t.leaf_targets.push((next() % 3) as i64);
                    t.leaf_weights.push((next() % 1000) as f32 / 100.0 - 5.0);
                }
            }
        }
    }
    t
}
