//! [`Forest::compile`]: validates an [`OnnxTrees`] ensemble, lays every tree out breadth-first
//! as 16-byte nodes with each leaf pointing straight at its weights, notes whether all branches
//! share one comparison, and builds the padded levels and the table where they pay.

use std::collections::HashMap;

use crate::node::{CMP_SHIFT, FEATURE_MASK, LEAF, MISSING_TRUE, Node};
use crate::{Cmp, Forest, OnnxTrees};

impl Forest {
    /// Validates and compiles an ensemble.
    pub fn compile(t: &OnnxTrees) -> Result<Forest, String> {
        let n = t.node_ids.len();
        if n == 0 {
            return Err("the ensemble has no nodes".into());
        }
        for (name, len) in [
            ("nodes_treeids", t.tree_ids.len()),
            ("nodes_featureids", t.feature_ids.len()),
            ("nodes_values", t.values.len()),
            ("nodes_modes", t.modes.len()),
            ("nodes_truenodeids", t.true_ids.len()),
            ("nodes_falsenodeids", t.false_ids.len()),
        ] {
            if len != n {
                return Err(format!("`{name}` has {len} entries, `nodes_nodeids` has {n}"));
            }
        }
        if !t.missing_tracks_true.is_empty() && t.missing_tracks_true.len() != n {
            return Err(format!(
                "`nodes_missing_value_tracks_true` has {} entries, expected {n}",
                t.missing_tracks_true.len()
            ));
        }
        let leaves_n = t.leaf_weights.len();
        if t.leaf_tree_ids.len() != leaves_n || t.leaf_node_ids.len() != leaves_n || t.leaf_targets.len() != leaves_n {
            return Err("leaf attributes (tree ids, node ids, targets, weights) differ in length".into());
        }
        if t.n_targets == 0 {
            return Err("the ensemble has no targets".into());
        }
        if !t.base_values.is_empty() && t.base_values.len() != t.n_targets {
            return Err(format!("`base_values` has {} entries for {} targets", t.base_values.len(), t.n_targets));
        }

        // (tree, node id) -> position in the ONNX arrays.
        let mut position: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        for i in 0..n {
            if position.insert((t.tree_ids[i], t.node_ids[i]), i).is_some() {
                return Err(format!("tree {} has node {} twice", t.tree_ids[i], t.node_ids[i]));
            }
        }
        // (tree, node id) -> its leaf weights, in attribute order.
        let mut weights: HashMap<(i64, i64), Vec<(u32, f32)>> = HashMap::new();
        for j in 0..leaves_n {
            let target = t.leaf_targets[j];
            if target < 0 || target as usize >= t.n_targets {
                return Err(format!("leaf weight {j} targets class {target}, but there are {} targets", t.n_targets));
            }
            weights
                .entry((t.leaf_tree_ids[j], t.leaf_node_ids[j]))
                .or_default()
                .push((target as u32, t.leaf_weights[j]));
        }

        // Trees in ascending id order; each tree's root is its node no other node points to.
        let mut tree_ids: Vec<i64> = t.tree_ids.clone();
        tree_ids.sort_unstable();
        tree_ids.dedup();
        let mut is_child = vec![false; n];
        for i in 0..n {
            if t.modes[i].is_some() {
                for child in [t.true_ids[i], t.false_ids[i]] {
                    let c = *position.get(&(t.tree_ids[i], child)).ok_or_else(|| {
                        format!(
                            "tree {} node {} points to node {child}, which does not exist",
                            t.tree_ids[i], t.node_ids[i]
                        )
                    })?;
                    is_child[c] = true;
                }
            }
        }
        let mut roots_by_tree: HashMap<i64, usize> = HashMap::new();
        for (i, &child) in is_child.iter().enumerate() {
            if !child && roots_by_tree.insert(t.tree_ids[i], i).is_some() {
                return Err(format!("tree {} has more than one root", t.tree_ids[i]));
            }
        }

        let mut forest = Forest {
            roots: Vec::with_capacity(tree_ids.len()),
            nodes: Vec::with_capacity(n),
            leaves: Vec::with_capacity(leaves_n),
            n_targets: t.n_targets,
            max_feature: 0,
            aggregate: t.aggregate,
            base_values: if t.base_values.is_empty() { vec![0.0; t.n_targets] } else { t.base_values.clone() },
            post_transform: t.post_transform,
            uniform: None,
            levels: None,
            table: None,
        };
        let mut modes_seen: Vec<Cmp> = Vec::new();
        for tree in tree_ids {
            let root = *roots_by_tree.get(&tree).ok_or_else(|| format!("tree {tree} has no root (a cycle?)"))?;
            // Breadth-first: `order[k]` is the ONNX position of the k-th node of this tree.
            let base = forest.nodes.len();
            let mut order = vec![root];
            let mut index_of: HashMap<usize, u32> = HashMap::from([(root, base as u32)]);
            let mut k = 0;
            while k < order.len() {
                let i = order[k];
                if t.modes[i].is_some() {
                    for child in [t.true_ids[i], t.false_ids[i]] {
                        let c = position[&(tree, child)];
                        if let std::collections::hash_map::Entry::Vacant(slot) = index_of.entry(c) {
                            slot.insert((base + order.len()) as u32);
                            order.push(c);
                        }
                    }
                }
                k += 1;
                if order.len() > n {
                    return Err(format!("tree {tree} is not a tree (a node is reachable twice)"));
                }
            }
            forest.roots.push(base as u32);
            for &i in &order {
                let node = match t.modes[i] {
                    Some(cmp) => {
                        let feature = t.feature_ids[i];
                        if !(0..=FEATURE_MASK as i64).contains(&feature) {
                            return Err(format!("tree {tree} node {}: bad feature index {feature}", t.node_ids[i]));
                        }
                        forest.max_feature = forest.max_feature.max(feature as usize);
                        if !modes_seen.contains(&cmp) {
                            modes_seen.push(cmp);
                        }
                        let missing = t.missing_tracks_true.get(i).copied().unwrap_or(false);
                        Node {
                            meta: feature as u32 | (cmp as u32) << CMP_SHIFT | if missing { MISSING_TRUE } else { 0 },
                            value: t.values[i],
                            yes: index_of[&position[&(tree, t.true_ids[i])]],
                            no: index_of[&position[&(tree, t.false_ids[i])]],
                        }
                    }
                    None => {
                        let start = forest.leaves.len() as u32;
                        if let Some(w) = weights.get(&(tree, t.node_ids[i])) {
                            forest.leaves.extend_from_slice(w);
                        }
                        Node { meta: LEAF, value: 0.0, yes: start, no: forest.leaves.len() as u32 }
                    }
                };
                forest.nodes.push(node);
            }
        }
        forest.uniform = match modes_seen[..] {
            [one] => Some(one),
            [] => Some(Cmp::Leq), // only leaves: any will do
            _ => None,
        };
        if forest.uniform.is_some() {
            forest.levels = forest.levels();
        }
        forest.table = forest.table();
        Ok(forest)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::trees;
    use crate::{Aggregate, Cmp, Forest};

    #[test]
    fn rejects_broken_ensembles_and_inputs() {
        let mut bad = trees(Aggregate::Sum, Cmp::Leq);
        bad.true_ids[1] = 99;
        assert!(Forest::compile(&bad).unwrap_err().contains("points to node 99"));
        let mut bad = trees(Aggregate::Sum, Cmp::Leq);
        bad.leaf_targets[0] = 5;
        assert!(Forest::compile(&bad).unwrap_err().contains("targets class 5"));
        let forest = Forest::compile(&trees(Aggregate::Sum, Cmp::Leq)).unwrap();
        assert_eq!(forest.min_features(), 2);
        let mut out = vec![0.0; 2];
        assert!(forest.predict(&[1.0], 1, &mut out).unwrap_err().contains("reads feature #1"));
    }
}
