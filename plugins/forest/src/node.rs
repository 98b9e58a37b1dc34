//! The layout every tree is compiled into, 16 bytes a node (four to a cache line), and the
//! node-by-node walk, which scores what the padded layout (`levels`) does not take: trees too
//! deep or too lopsided to pad, and ensembles whose branches compare in mixed ways.
//! [`Forest::compile`](crate::Forest::compile) lays each tree out breadth-first so its top
//! levels share cache lines.

use crate::{Cmp, Forest};

// Node layout, 16 bytes: `meta` packs the feature index (low 24 bits), the comparison
// (bits 24-27), "missing goes true" (bit 28) and "is a leaf" (bit 31). A branch's `value` is
// its threshold and `yes`/`no` are node indices; a leaf's `yes..no` is its range in `leaves`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct Node {
    pub(crate) meta: u32,
    pub(crate) value: f32,
    pub(crate) yes: u32,
    pub(crate) no: u32,
}

pub(crate) const FEATURE_MASK: u32 = 0x00FF_FFFF;
pub(crate) const CMP_SHIFT: u32 = 24;
pub(crate) const MISSING_TRUE: u32 = 1 << 28;
pub(crate) const LEAF: u32 = 1 << 31;

/// `walk_all::<MIXED>` reads each node's own comparison.
pub(crate) const MIXED: u32 = 15;

impl Forest {
    /// The node-by-node walk, for trees the padded layout does not take.
    pub(crate) fn walk_all<const C: u32>(&self, rows: &[f32], n_features: usize, out: &mut Vec<(u32, u32)>) {
        for &root in &self.roots {
            for row in rows.chunks_exact(n_features) {
                let leaf = self.walk::<C>(root, row);
                out.push((leaf.yes, leaf.no));
            }
        }
    }

    /// Follows one row from `root` to its leaf.
    #[inline(always)]
    fn walk<const C: u32>(&self, root: u32, row: &[f32]) -> Node {
        let mut node = self.nodes[root as usize];
        while node.meta & LEAF == 0 {
            let x = row[(node.meta & FEATURE_MASK) as usize];
            let cmp = if C == MIXED { Cmp::from_bits((node.meta >> CMP_SHIFT) & 0xF) } else { Cmp::from_bits(C) };
            let go_true = if x.is_nan() { node.meta & MISSING_TRUE != 0 } else { cmp.test(x, node.value) };
            node = self.nodes[if go_true { node.yes } else { node.no } as usize];
        }
        node
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{predict, trees};
    use crate::{Aggregate, Cmp, Forest};

    #[test]
    fn walks_branches_and_missing_values() {
        let forest = Forest::compile(&trees(Aggregate::Sum, Cmp::Leq)).unwrap();
        assert_eq!(forest.n_trees(), 2);
        assert_eq!(forest.uniform, None, "two comparison kinds");
        let out = predict(&forest, &[[0.5, 9.0], [1.0, 2.0], [1.0, 2.5], [f32::NAN, 9.0], [5.0, f32::NAN]]);
        assert_eq!(
            out,
            vec![
                11.0, 20.5, // x0 < 1: +1 to class 0
                10.0, 22.5, // x1 <= 2: +2 to class 1
                13.0, 24.5, // else: +3, +4
                11.0, 20.5, // missing x0 tracks true
                13.0, 24.5, // missing x1 goes false
            ]
        );
    }
}
