//! Checkpoints: which of a planned shard's splits are done, so that a rerun of the shard with
//! the same plan skips them.
//!
//! A split is recorded done only once the sink has acknowledged every row of it (never ahead of
//! the writes: a record written first would lose the rows when the process dies between the
//! two). The store is a local directory or an `s3://` prefix, by default beside the plan file
//! (`PLAN.checkpoints/`); under it, each plan (by its `id`) and shard has a folder of small
//! objects, one per split done (`split-17`), and `complete` once the shard's run succeeded. A
//! plan made again has a new id, so no record of an earlier plan applies to it.

use std::collections::BTreeSet;
use std::path::Path;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};

use super::{PlanFile, Shard};
use crate::object_url::ObjectUrl;
use crate::spec::S3Options;

/// One shard's checkpoints under one plan.
pub struct Checkpoints {
    place: ObjectUrl,
    /// The folder, as messages and the report show it.
    shown: String,
}

/// What a shard's checkpoints say is done.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Done {
    /// The shard's run succeeded: every split is done.
    pub complete: bool,
    /// Splits recorded one by one (indices into the plan's splits).
    pub splits: BTreeSet<usize>,
}

const COMPLETE: &str = "complete";
const SPLIT: &str = "split-";

impl Checkpoints {
    /// The checkpoints of `shard` of `plan` in the store at `url` (a path, relative to the
    /// working directory, or `s3://`; a prefix whether or not it ends in `/`).
    pub fn new(url: &str, plan: &PlanFile, shard: Shard, s3: &S3Options) -> anyhow::Result<Checkpoints> {
        let root = url.trim_end_matches('/');
        let folder = format!("{root}/{}/shard-{}-of-{}/", plan.id, shard.index, shard.count);
        let place = ObjectUrl::parse(&folder, Path::new("."), s3)?;
        let shown = place.to_string();
        Ok(Checkpoints { place, shown })
    }

    /// The default store of a plan read from `plan_url`: beside it.
    pub fn beside(plan_url: &str) -> String {
        format!("{}.checkpoints/", plan_url.trim_end_matches('/'))
    }

    fn object(&self, name: &str) -> ObjectPath {
        self.place.path.clone().join(name)
    }

    fn failed(&self, doing: &str, e: &object_store::Error) -> anyhow::Error {
        anyhow::anyhow!("checkpoints {}: {doing}: {}", self.shown, self.place.describe(e))
    }

    /// The objects of the shard's folder.
    async fn listed(&self) -> anyhow::Result<Vec<ObjectMeta>> {
        self.place
            .store
            .list(Some(&self.place.path))
            .try_collect()
            .await
            .map_err(|e| self.failed("cannot list them", &e))
    }

    /// What is recorded.
    pub async fn done(&self) -> anyhow::Result<Done> {
        let mut done = Done::default();
        for meta in self.listed().await? {
            let Some(name) = meta.location.filename() else { continue };
            if name == COMPLETE {
                done.complete = true;
            } else if let Some(index) = name.strip_prefix(SPLIT).and_then(|n| n.parse().ok()) {
                done.splits.insert(index);
            }
        }
        Ok(done)
    }

    /// Records `splits` (indices into the plan's splits) done, one object each.
    pub async fn record(&self, splits: &[usize]) -> anyhow::Result<()> {
        for split in splits {
            self.put(&format!("{SPLIT}{split}")).await?;
        }
        Ok(())
    }

    /// Records the shard's run as complete: every split done.
    pub async fn complete(&self) -> anyhow::Result<()> {
        self.put(COMPLETE).await
    }

    async fn put(&self, name: &str) -> anyhow::Result<()> {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = format!("{{\"done_at\":\"{at}\"}}\n");
        self.place
            .store
            .put(&self.object(name), PutPayload::from(body.into_bytes()))
            .await
            .map_err(|e| self.failed(&format!("cannot record `{name}`"), &e))?;
        Ok(())
    }

    /// Forgets everything recorded (`--restart`).
    pub async fn clear(&self) -> anyhow::Result<()> {
        for meta in self.listed().await? {
            match self.place.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("cannot remove them", &e)),
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}
