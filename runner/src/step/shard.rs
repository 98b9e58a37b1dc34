//! Sharded runs: one pipeline as N processes, each reading its own part of the input, with no
//! scheduler of the runner's own. Every shard computes the same plan from the spec alone: the
//! input cut into splits (`object_url::Split`), in order; shard `i` takes the `i`-th of `N`
//! contiguous runs of splits of about equal bytes ([`Shard::take`]).

use std::fmt;
use std::ops::Range;

/// Which part of the input a run reads: shard `index` of `count`, 0-based. One run over
/// everything is shard 0 of 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard { index: 0, count: 1 }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Shard `index` of `count`, checked: `count` at least 1, `index` below it.
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 {
            return Err("the number of shards must be at least 1".into());
        }
        if index >= count {
            return Err(format!("shard index {index} is out of range: shards are numbered 0 to {}", count - 1));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`, as `--shard` takes it.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("`{text}`: expected I/N, the shard's index (from 0) and the number of shards, as in 0/4");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        Shard::new(index.trim().parse().map_err(|_| bad())?, count.trim().parse().map_err(|_| bad())?)
    }

    /// `url` with `{shard}` replaced by this shard's index: each shard writes its own part.
    pub fn expand(&self, url: &str) -> String {
        url.replace("{shard}", &self.index.to_string())
    }

    /// Whether an output at `url` (a file, an object) is this shard's own: in a sharded run its
    /// URL must hold `{shard}`, or every shard would write the same file and the last to finish
    /// would replace the others' rows.
    pub fn check_output(&self, url: &str) -> Result<(), String> {
        if self.count > 1 && !url.contains("{shard}") {
            return Err(format!(
                "`{}` would be written by each of the {} shards (--shard {self}), each replacing the others' \
                 rows: put `{{shard}}` in it (`part-{{shard}}.csv`), so each shard writes its own",
                crate::format::redact_url(url),
                self.count
            ));
        }
        Ok(())
    }

    /// The splits this shard reads, given every split's size in bytes, in plan order: a
    /// contiguous run, the `index`-th of `count` runs of about equal bytes (a split goes to the
    /// shard its first byte falls in, counting all splits' bytes end to end). Contiguous rather
    /// than round-robin: shards finish together whatever the mix of sizes, and a shard reads
    /// neighbouring ranges of an object, one header each. Splits of no bytes are spread by
    /// their position instead.
    pub fn take(&self, sizes: &[u64]) -> Range<usize> {
        let total: u128 = sizes.iter().map(|&s| u128::from(s)).sum();
        let count = u128::from(self.count);
        let mut start = 0u128;
        let owners = sizes.iter().enumerate().map(|(j, &size)| {
            let owner = (start * count).checked_div(total).unwrap_or(j as u128 * count / sizes.len() as u128);
            start += u128::from(size);
            owner.min(count - 1) as u32
        });
        let owners: Vec<u32> = owners.collect();
        let first = owners.iter().position(|&o| o >= self.index).unwrap_or(owners.len());
        let end = owners.iter().position(|&o| o > self.index).unwrap_or(owners.len());
        first..end.max(first)
    }
}

/// A part of the input a shard reads, as reports and `runner plan` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitInfo {
    /// The object's URL, for people.
    pub object: String,
    /// The byte range whose lines the shard reads.
    pub range: Range<u64>,
    /// About how many rows that is, when known.
    pub estimated_rows: Option<u64>,
    /// The Parquet row group it is, for a split that is one.
    pub row_group: Option<usize>,
}

/// Each shard's splits, for `runner plan`.
#[derive(Debug, Clone)]
pub struct ShardPlan {
    pub shards: Vec<(Shard, Vec<SplitInfo>)>,
    /// Why there are no splits to show, if there are none (a plugin source divides its input
    /// itself).
    pub note: Option<String>,
}

impl fmt::Display for ShardPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(note) = &self.note {
            writeln!(f, "{note}")?;
        }
        for (shard, splits) in &self.shards {
            let bytes: u64 = splits.iter().map(|s| s.range.end - s.range.start).sum();
            let rows: Option<u64> = splits.iter().map(|s| s.estimated_rows).sum();
            let rows = rows.map(|r| format!(", about {r} rows")).unwrap_or_default();
            let plural = if splits.len() == 1 { "" } else { "s" };
            writeln!(f, "shard {shard}: {} split{plural}, {bytes} bytes{rows}", splits.len())?;
            for split in splits {
                let rows = split.estimated_rows.map(|r| format!("  about {r} rows")).unwrap_or_default();
                let group = split.row_group.map(|g| format!("  row group {g}")).unwrap_or_default();
                writeln!(f, "  {}{group}  bytes {}..{}{rows}", split.object, split.range.start, split.range.end)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        assert!(Shard::parse("4/4").unwrap_err().contains("out of range"));
        assert!(Shard::parse("0/0").unwrap_err().contains("at least 1"));
        assert!(Shard::parse("x").unwrap_err().contains("expected I/N"));
    }

    #[test]
    fn shards_take_every_split_once_in_contiguous_runs_of_about_equal_bytes() {
        let cases: &[&[u64]] =
            &[&[], &[0], &[5], &[0, 0, 0], &[10, 10, 10, 10], &[100, 1, 1, 1, 1], &[1, 2, 3, 4, 5, 6, 7, 8, 9]];
        for &sizes in cases {
            for count in [1, 2, 3, 7, 16] {
                let mut next = 0;
                for index in 0..count {
                    let taken = Shard::new(index, count).unwrap().take(sizes);
                    assert_eq!(taken.start, next, "{sizes:?} {index}/{count}");
                    next = taken.end;
                }
                assert_eq!(next, sizes.len(), "{sizes:?} /{count}");
            }
        }
        // Four equal splits over two shards: two each.
        assert_eq!(Shard::new(0, 2).unwrap().take(&[10, 10, 10, 10]), 0..2);
        assert_eq!(Shard::new(1, 2).unwrap().take(&[10, 10, 10, 10]), 2..4);
    }
}
