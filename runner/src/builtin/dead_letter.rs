//! Dead letters: where a step with `on_error = "dead-letter"` writes the rows it rejects, as
//! JSON lines, to a file or to a Redis list (`spec::DeadLetterConfig`). Writes are rare (only
//! failures) and synchronous: a file append, or an `RPUSH`.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use async_trait::async_trait;

use object_store::ObjectStoreExt;

use crate::format::redact_url;
use crate::object_url::{ObjectUrl, local_path};
use crate::redis_client::{Connection, connect, is_redis_url, redacted};
use crate::spec::{DeadLetterConfig, S3Options};
use crate::step::{DeadLetter, Rejected, Shard};

/// Where rejected rows go. Writes are synchronous and rare (only failures): a file write, or a
/// Redis `RPUSH` on the runner's runtime. An S3 dead letter is kept in memory and put as one
/// object as the run commits (`finish`, just before the sink commits; deleted again by
/// `withdraw` if the sink's commit then fails), so a failed shard leaves none, and a rerun
/// replaces it. Steps that name the same file or object share one target (`pipeline::open`).
pub enum DeadLetterTarget {
    File { path: String, file: Mutex<std::io::BufWriter<std::fs::File>> },
    Redis { shown: String, list: String, connection: Connection },
    Object { to: ObjectUrl, lines: Mutex<Vec<u8>>, put: AtomicBool },
}

impl DeadLetterTarget {
    /// What can be checked before the run: a file or an object of this shard's own (a Redis
    /// list is shared by the shards, each pushing its rows).
    pub fn check(config: &DeadLetterConfig, shard: Shard) -> Result<(), String> {
        if is_redis_url(&config.url) {
            return Ok(());
        }
        shard.check_output(&config.url).map_err(|e| format!("dead letter: {e}"))
    }

    /// Where a file or object dead letter writes, one string per place (two spellings of one
    /// path give the same); `None` for a Redis list, which steps may share as it is.
    pub fn place(config: &DeadLetterConfig, base_dir: &Path, shard: Shard) -> Option<String> {
        (!is_redis_url(&config.url)).then(|| crate::object_url::place(&shard.expand(&config.url), base_dir))
    }

    /// Opens (creates, connects to) the dead letter `config` names; a path is relative to
    /// `base_dir`, `{shard}` in the URL is the shard's index.
    pub async fn open(
        config: &DeadLetterConfig,
        base_dir: &Path,
        s3: &S3Options,
        shard: Shard,
    ) -> anyhow::Result<Arc<dyn DeadLetter>> {
        let config = &DeadLetterConfig { url: shard.expand(&config.url), list: config.list.clone() };
        if config.url.starts_with("s3://") {
            let to = ObjectUrl::parse(&config.url, base_dir, s3)?;
            return Ok(Arc::new(DeadLetterTarget::Object { to, lines: Mutex::default(), put: AtomicBool::new(false) }));
        }
        if is_redis_url(&config.url) {
            let Some(list) = config.list.clone() else {
                bail!("a Redis dead letter needs `list`, the list to push onto")
            };
            let connection = connect(&config.url, 10).await?;
            return Ok(Arc::new(DeadLetterTarget::Redis { shown: redacted(&config.url), list, connection }));
        }
        if config.list.is_some() {
            bail!("`list` is for a Redis dead letter; `{}` is a file", redact_url(&config.url));
        }
        let path =
            local_path(&config.url, base_dir).context("a dead letter is a local file, an S3 object or a Redis list")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Appends: a rerun adds to what an earlier run rejected instead of erasing it.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the dead letter file {}", path.display()))?;
        Ok(Arc::new(DeadLetterTarget::File {
            path: path.display().to_string(),
            file: Mutex::new(std::io::BufWriter::new(file)),
        }))
    }
}

#[async_trait]
impl DeadLetter for DeadLetterTarget {
    async fn write(&self, rejected: &[Rejected]) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        match self {
            DeadLetterTarget::File { path, file } => {
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                for entry in rejected {
                    writeln!(file, "{}", entry.to_json()).with_context(|| format!("writing the dead letter {path}"))?;
                }
                file.flush().with_context(|| format!("writing the dead letter {path}"))
            }
            DeadLetterTarget::Redis { shown, list, connection } => {
                let entries: Vec<String> = rejected.iter().map(Rejected::to_json).collect();
                redis::cmd("RPUSH")
                    .arg(list)
                    .arg(&entries)
                    .query_async::<()>(&mut connection.clone())
                    .await
                    .with_context(|| format!("writing the dead letter {shown} list `{list}`"))
            }
            DeadLetterTarget::Object { lines, .. } => {
                let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                for entry in rejected {
                    lines.extend_from_slice(entry.to_json().as_bytes());
                    lines.push(b'\n');
                }
                Ok(())
            }
        }
    }

    async fn finish(&self) -> anyhow::Result<()> {
        let DeadLetterTarget::Object { to, lines, put } = self else { return Ok(()) };
        if put.load(Ordering::SeqCst) {
            return Ok(()); // put already, for another step sharing it
        }
        let bytes = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
        to.store
            .put(&to.path, bytes.into())
            .await
            .map_err(|e| anyhow::anyhow!("writing the dead letter {to}: {}", to.describe(&e)))?;
        put.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn withdraw(&self) {
        let DeadLetterTarget::Object { to, put, .. } = self else { return };
        if put.swap(false, Ordering::SeqCst)
            && let Err(e) = to.store.delete(&to.path).await
        {
            tracing::warn!(
                "deleting the dead letter {to} of a run that failed: {} (it holds the rows this run rejected)",
                to.describe(&e)
            );
        }
    }
}
