//! Plan files: a sharded run planned once (`runner plan SPEC --shards N --out PLAN`) and run from
//! that plan by every shard (`runner run SPEC --plan PLAN --shard I/N`), so the input is listed
//! and typed once, not once per shard.
//!
//! A plan is versioned JSON (docs/spec.md, "Plan files"): the digest of the spec it was made
//! from, the number of shards, and the source's input as it was found: every object with its
//! size and ETag, the splits and the shard that reads each, and the columns with their types.
//! A shard run from a plan lists nothing and types nothing; it reads its own splits, each
//! request pinned to the ETag in the plan, so an object changed since fails the read, named.

use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Shard, SplitInfo};
use crate::batch::ColumnType;
use crate::object_url::ObjectUrl;
use crate::spec::S3Options;

/// The format's version: a runner reads plans of this version only.
pub const PLAN_VERSION: u32 = 1;

/// A plan file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// Made afresh each time a plan is made ([`PlanFile::fresh_id`]): checkpoints are kept
    /// under it, so those of an earlier plan never apply to a plan made again.
    pub id: String,
    /// The runner that made it (`runner --version`), for people.
    pub made_by: String,
    /// The spec's path when the plan was made, for people.
    pub spec: String,
    /// SHA-256 of the spec file's text, in hex: a shard with another spec is refused.
    pub spec_digest: String,
    /// The number of shards the splits are divided among.
    pub shards: u32,
    /// The source's input.
    pub source: SourcePlan,
}

/// A source's input, found and typed once for every shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePlan {
    /// The source step's name and kind.
    pub step: String,
    pub kind: String,
    /// The source's URL, resolved (never with credentials): a shard whose spec resolves it
    /// elsewhere (another `${S3_BUCKET}`, say) is refused.
    pub url: String,
    /// Every object of the input, in reading order.
    pub objects: Vec<PlannedObject>,
    /// Every split, in reading order, each with the shard that reads it.
    pub splits: Vec<PlannedSplit>,
    /// The columns the source produces, with their types.
    pub columns: Vec<PlannedColumn>,
}

/// One object, as it was when the plan was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedObject {
    /// How messages name it (its full URL).
    pub name: String,
    /// Its path in the store.
    pub location: String,
    pub size: u64,
    /// The version read: every request of a shard asks for it.
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Milliseconds since 1970, for people.
    pub last_modified_ms: i64,
}

/// One split: a byte range of an object (a Parquet split is one row group).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedSplit {
    /// The shard that reads it.
    pub shard: u32,
    /// Index into the plan's objects.
    pub object: usize,
    pub start: u64,
    pub end: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_group: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_rows: Option<u64>,
}

/// One column the source produces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedColumn {
    pub name: String,
    /// Its type in the batches.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// How the source reads it, in the source kind's own terms (`bool-text` for a CSV column
    /// of booleans with missing values; `int-as-float` for a Parquet integer column with nulls).
    pub read: String,
    /// Its index in the input's schema, where the kind needs it (Parquet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl PlannedObject {
    /// From an object as a listing found it.
    pub fn new(name: String, meta: &ObjectMeta) -> PlannedObject {
        PlannedObject {
            name,
            location: meta.location.to_string(),
            size: meta.size,
            etag: meta.e_tag.clone(),
            version: meta.version.clone(),
            last_modified_ms: meta.last_modified.timestamp_millis(),
        }
    }

    /// The object as a listing would find it again, if it has not changed.
    pub fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            location: self.location.as_str().into(),
            last_modified: chrono::DateTime::from_timestamp_millis(self.last_modified_ms).unwrap_or_default(),
            size: self.size,
            e_tag: self.etag.clone(),
            version: self.version.clone(),
        }
    }
}

impl SourcePlan {
    /// The splits `shard` reads, in order.
    pub fn splits_of(&self, shard: Shard) -> impl Iterator<Item = &PlannedSplit> {
        self.splits.iter().filter(move |split| split.shard == shard.index)
    }

    /// How reports and `runner plan` show a split.
    pub fn split_info(&self, split: &PlannedSplit) -> SplitInfo {
        SplitInfo {
            object: self.objects.get(split.object).map(|o| o.name.clone()).unwrap_or_default(),
            range: split.start..split.end,
            estimated_rows: split.estimated_rows,
            row_group: split.row_group,
        }
    }

    /// Each of `count` shards and its splits, as `runner plan` prints them.
    pub fn shards(&self, count: u32) -> Vec<(Shard, Vec<SplitInfo>)> {
        (0..count)
            .map(|index| {
                let shard = Shard { index, count };
                (shard, self.splits_of(shard).map(|split| self.split_info(split)).collect())
            })
            .collect()
    }

    /// Every split names an object of the plan and a shard below `count`.
    fn check(&self, count: u32) -> Result<(), String> {
        for (i, split) in self.splits.iter().enumerate() {
            if split.object >= self.objects.len() {
                return Err(format!("split {i} names object {}, of {}", split.object, self.objects.len()));
            }
            if split.shard >= count {
                return Err(format!("split {i} is shard {}'s, of {count}", split.shard));
            }
            if split.start > split.end || split.end > self.objects[split.object].size {
                return Err(format!("split {i}'s bytes {}..{} are not within its object", split.start, split.end));
            }
        }
        Ok(())
    }
}

impl PlanFile {
    /// A new plan's `id`: 16 hex digits from the time, the process and the spec.
    pub fn fresh_id(spec_digest: &str) -> String {
        use sha2::{Digest, Sha256};
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seed = format!("{}:{}:{spec_digest}", now.as_nanos(), std::process::id());
        format!("{:x}", Sha256::digest(seed.as_bytes()))[..16].to_string()
    }
}

/// SHA-256 of a spec file's text, in hex: what a plan records and a shard compares.
pub fn spec_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Why a plan cannot be used with this spec or command line (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanMismatch(pub String);

impl PlanFile {
    /// Reads a plan from `url` (a path, relative to the working directory, or `s3://`, reached
    /// with the spec's `[s3]` options) and checks its version and shape.
    pub async fn load(url: &str, s3: &S3Options) -> anyhow::Result<PlanFile> {
        let place = ObjectUrl::parse(url, Path::new("."), s3)?;
        let bytes = place
            .store
            .get(&place.path)
            .await
            .map_err(|e| anyhow::anyhow!("plan {place}: {}", place.describe(&e)))?
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("plan {place}: {}", place.describe(&e)))?;
        let plan: PlanFile = serde_json::from_slice(&bytes).map_err(|e| {
            if serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| v.get("version")?.as_u64())
                != Some(u64::from(PLAN_VERSION))
            {
                PlanMismatch(format!(
                    "plan {place}: not a plan file of version {PLAN_VERSION} (made by another runner?): {e}"
                ))
            } else {
                PlanMismatch(format!("plan {place}: {e}"))
            }
        })?;
        if plan.shards == 0 {
            return Err(PlanMismatch(format!("plan {place}: `shards` is 0")).into());
        }
        plan.source.check(plan.shards).map_err(|e| PlanMismatch(format!("plan {place}: {e}")))?;
        Ok(plan)
    }

    /// Writes the plan to `url` (as [`PlanFile::load`] reads it), whole or not at all: a local
    /// file is renamed into place, an object put in one request.
    pub async fn save(&self, url: &str, s3: &S3Options) -> anyhow::Result<String> {
        let place = ObjectUrl::parse(url, Path::new("."), s3)?;
        if place.is_prefix {
            bail!("--out {url}: a plan is one file, not a prefix");
        }
        let mut text = serde_json::to_vec_pretty(self).context("encoding the plan")?;
        text.push(b'\n');
        place
            .store
            .put(&place.path, PutPayload::from(text))
            .await
            .map_err(|e| anyhow::anyhow!("writing the plan to {place}: {}", place.describe(&e)))?;
        Ok(place.to_string())
    }

    /// Checks that this plan was made from `spec_text`, for `count` shards.
    pub fn check(&self, spec_text: &str, count: u32) -> Result<(), PlanMismatch> {
        if self.spec_digest != spec_digest(spec_text) {
            return Err(PlanMismatch(format!(
                "the plan was made from another spec ({} as it was then): plan again with `runner plan ... --out`",
                self.spec
            )));
        }
        if self.shards != count {
            return Err(PlanMismatch(format!(
                "the plan divides the input among {} shards, not {count}: run it with --shard I/{} (or plan again)",
                self.shards, self.shards
            )));
        }
        Ok(())
    }
}

impl SourcePlan {
    /// Checks that the source, opened from the spec, reads what the plan lists (`url`, as the
    /// source resolved it: a variable such as `${S3_BUCKET}` may have moved it).
    pub fn check_url(&self, url: &ObjectUrl) -> Result<(), PlanMismatch> {
        if self.url != url.to_string() {
            return Err(PlanMismatch(format!(
                "the plan reads {}, but the spec's source now resolves to {url}: plan again",
                self.url
            )));
        }
        Ok(())
    }
}

impl fmt::Display for PlanFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: u64 = self.source.objects.iter().map(|o| o.size).sum();
        write!(
            f,
            "{} objects, {bytes} bytes, {} splits, {} shards, {} columns",
            self.source.objects.len(),
            self.source.splits.len(),
            self.shards,
            self.source.columns.len()
        )
    }
}
