//! The ONNX `TreeEnsemble*` attribute vocabulary: how a branch compares ([`Cmp`]), how trees are
//! combined ([`Aggregate`]), what is applied last ([`PostTransform`]), each with its `from_onnx`
//! parser; and [`OnnxTrees`], the parallel-array form every ensemble is compiled from (XGBoost
//! models are read into it too).

/// How a branch compares the feature `x` with its threshold `t`: "go to the true child if ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cmp {
    /// `x <= t` (`BRANCH_LEQ`)
    Leq = 0,
    /// `x < t` (`BRANCH_LT`)
    Lt = 1,
    /// `x >= t` (`BRANCH_GTE`)
    Gte = 2,
    /// `x > t` (`BRANCH_GT`)
    Gt = 3,
    /// `x == t` (`BRANCH_EQ`)
    Eq = 4,
    /// `x != t` (`BRANCH_NEQ`)
    Neq = 5,
}

impl Cmp {
    /// Parses an ONNX `nodes_modes` entry; `None` for `LEAF`.
    pub fn from_onnx(mode: &str) -> Result<Option<Cmp>, String> {
        Ok(Some(match mode {
            "BRANCH_LEQ" => Cmp::Leq,
            "BRANCH_LT" => Cmp::Lt,
            "BRANCH_GTE" => Cmp::Gte,
            "BRANCH_GT" => Cmp::Gt,
            "BRANCH_EQ" => Cmp::Eq,
            "BRANCH_NEQ" => Cmp::Neq,
            "LEAF" => return Ok(None),
            other => return Err(format!("unsupported node mode `{other}`")),
        }))
    }

    #[inline(always)]
    pub(crate) fn test(self, x: f32, t: f32) -> bool {
        match self {
            Cmp::Leq => x <= t,
            Cmp::Lt => x < t,
            Cmp::Gte => x >= t,
            Cmp::Gt => x > t,
            Cmp::Eq => x == t,
            Cmp::Neq => x != t,
        }
    }

    /// The comparison `cmp as u32` names: as packed in a node, or as a walk's const parameter.
    pub(crate) fn from_bits(bits: u32) -> Cmp {
        match bits {
            0 => Cmp::Leq,
            1 => Cmp::Lt,
            2 => Cmp::Gte,
            3 => Cmp::Gt,
            4 => Cmp::Eq,
            _ => Cmp::Neq,
        }
    }
}

/// How the trees' contributions to one target are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    #[default]
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    /// Parses the ONNX `aggregate_function` attribute.
    pub fn from_onnx(name: &str) -> Result<Aggregate, String> {
        match name {
            "SUM" => Ok(Aggregate::Sum),
            "AVERAGE" => Ok(Aggregate::Average),
            "MIN" => Ok(Aggregate::Min),
            "MAX" => Ok(Aggregate::Max),
            other => Err(format!("unsupported aggregate function `{other}`")),
        }
    }
}

/// What is applied to each row's scores after aggregation (ONNX `post_transform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PostTransform {
    #[default]
    None,
    /// `exp(s - max) / sum`, over the row's targets.
    Softmax,
    /// `1 / (1 + exp(-s))`, per target.
    Logistic,
}

impl PostTransform {
    /// Parses the ONNX `post_transform` attribute (absent means `NONE`).
    pub fn from_onnx(name: &str) -> Result<PostTransform, String> {
        match name {
            "NONE" => Ok(PostTransform::None),
            "SOFTMAX" => Ok(PostTransform::Softmax),
            "LOGISTIC" => Ok(PostTransform::Logistic),
            other => Err(format!("post_transform {other} is not supported")),
        }
    }

    pub(crate) fn apply(self, row: &mut [f32]) {
        match self {
            PostTransform::None => {}
            PostTransform::Softmax => {
                // (`f32::max` is a libm call in WebAssembly; a comparison is not.)
                let max = row.iter().fold(f32::NEG_INFINITY, |max, &s| if s > max { s } else { max });
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let scale = sum.recip();
                row.iter_mut().for_each(|s| *s *= scale);
            }
            PostTransform::Logistic => row.iter_mut().for_each(|s| *s = 1.0 / (1.0 + (-*s).exp())),
        }
    }
}

/// A tree ensemble in ONNX's parallel-array form: one entry per node, one per leaf weight.
/// `leaf_*` are the `class_*` (classifier) or `target_*` (regressor) attributes.
#[derive(Debug, Clone, Default)]
pub struct OnnxTrees {
    pub tree_ids: Vec<i64>,
    pub node_ids: Vec<i64>,
    pub feature_ids: Vec<i64>,
    pub values: Vec<f32>,
    /// `None` for a leaf.
    pub modes: Vec<Option<Cmp>>,
    pub true_ids: Vec<i64>,
    pub false_ids: Vec<i64>,
    /// Per node: a missing value goes to the true child. Empty means all false.
    pub missing_tracks_true: Vec<bool>,
    pub leaf_tree_ids: Vec<i64>,
    pub leaf_node_ids: Vec<i64>,
    pub leaf_targets: Vec<i64>,
    pub leaf_weights: Vec<f32>,
    /// Classes (classifier) or targets (regressor).
    pub n_targets: usize,
    pub aggregate: Aggregate,
    /// Added to each target after aggregation. Empty means zeros.
    pub base_values: Vec<f32>,
    /// Applied to each row's scores last.
    pub post_transform: PostTransform,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_and_comparisons_round_trip_through_their_bits() {
        let modes = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"];
        for (bits, mode) in modes.into_iter().enumerate() {
            let cmp = Cmp::from_onnx(mode).unwrap().unwrap();
            assert_eq!(cmp as u32, bits as u32, "{mode}");
            assert_eq!(Cmp::from_bits(cmp as u32), cmp, "{mode}");
        }
        assert_eq!(Cmp::from_onnx("LEAF"), Ok(None));
        assert!(Cmp::from_onnx("BRANCH_IN").unwrap_err().contains("BRANCH_IN"));
        assert_eq!(Aggregate::from_onnx("AVERAGE"), Ok(Aggregate::Average));
        assert!(Aggregate::from_onnx("MEDIAN").unwrap_err().contains("MEDIAN"));
        assert_eq!(PostTransform::from_onnx("LOGISTIC"), Ok(PostTransform::Logistic));
    }
}
