//! Turns the URLs a spec uses for data and assets into an `object_store` store and a path.
//!
//! Accepted forms: a plain path (relative to the spec file's directory), `file:///abs/path`,
//! and `s3://bucket/key`. A URL ending in `/` names every object under that prefix (a local
//! directory, or an S3 prefix), read in the order of their names. Every reader in the host
//! (sources, assets) goes through here, so a scheme added here works everywhere at once.

use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::format::redact_url;
use crate::spec::S3Options;
use anyhow::{Context, bail};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig,
};

/// Bytes per range request when an object is streamed (see [`ObjectUrl::read_range`]).
const CHUNK_BYTES: u64 = 8 << 20;
/// Bytes of the first range request: small, so the first rows reach the pipeline (and the
/// plugins and Redis start working) after a short request rather than a full chunk.
const FIRST_CHUNK_BYTES: u64 = 1 << 20;
/// Range requests in flight while the reader works on the chunk before them.
const CHUNKS_IN_FLIGHT: usize = 2;
/// HEAD requests at once, for a listing that lacks ETags.
const HEADS_IN_FLIGHT: usize = 16;
/// Bytes per range request past the end of a split, where its reader finishes its last line.
const TAIL_BYTES: u64 = 16 << 10;
/// Bytes of the first request for an object's header line (see [`ObjectUrl::read_first_line`]).
const HEADER_BYTES: u64 = 4 << 10;

/// The first line of the bytes `chunks` yields, its newline included (all of them when there is
/// none); reads no chunk past it.
pub async fn first_line<E>(chunks: impl Stream<Item = Result<bytes::Bytes, E>>) -> Result<Vec<u8>, E> {
    let mut chunks = std::pin::pin!(chunks);
    let mut line = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        match memchr::memchr(b'\n', &chunk) {
            Some(at) => {
                line.extend_from_slice(&chunk[..=at]);
                break;
            }
            None => line.extend_from_slice(&chunk),
        }
    }
    Ok(line)
}

/// One object to read, as [`ObjectUrl::objects`] found it.
#[derive(Clone)]
pub struct FoundObject {
    /// Path, size and ETag.
    pub meta: ObjectMeta,
    /// Its first chunk, when it was fetched while the object was looked up.
    pub first: Option<bytes::Bytes>,
}

/// An object, or with a trailing `/` every object under a prefix, in some store.
#[derive(Clone)]
pub struct ObjectUrl {
    pub store: Arc<dyn ObjectStore>,
    pub path: ObjectPath,
    /// The URL names a prefix (it ends with `/`): read every object under it.
    pub is_prefix: bool,
    /// How to show it to a human: resolved, and never with credentials.
    display: String,
    /// How long a request is retried through transient failures (`s3://` only).
    retry_seconds: Option<u64>,
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectUrl({})", self.display)
    }
}

impl ObjectUrl {
    /// Resolves `url`; relative paths are taken from `base_dir`, `s3://` uses `s3`.
    pub fn parse(url: &str, base_dir: &Path, s3: &S3Options) -> anyhow::Result<ObjectUrl> {
        let is_prefix = url.ends_with('/');
        match url.split_once("://") {
            Some(("s3", rest)) => return Self::s3(rest, is_prefix, s3),
            Some((scheme, _)) if scheme != "file" => {
                bail!("`{}`: unsupported scheme `{scheme}://` (expected a path, file:// or s3://)", redact_url(url))
            }
            _ => {}
        }
        let absolute = local_path(url, base_dir)?;
        let path = ObjectPath::from_absolute_path(&absolute).with_context(|| format!("`{url}`: bad path"))?;
        let mut display = absolute.display().to_string();
        if is_prefix {
            display.push('/');
        }
        Ok(ObjectUrl { store: Arc::new(LocalFileSystem::new()), path, is_prefix, display, retry_seconds: None })
    }

    fn s3(rest: &str, is_prefix: bool, options: &S3Options) -> anyhow::Result<ObjectUrl> {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("`s3://{rest}`: no bucket name");
        }
        // Client options first: `with_client_options` replaces what `with_allow_http` sets.
        let seconds = options.timeout_seconds.unwrap_or(30);
        let timeout = Duration::from_secs(seconds);
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_client_options(
            ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(timeout),
        );
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(!options.path_style.unwrap_or(true));
        } else if let Some(path_style) = options.path_style {
            builder = builder.with_virtual_hosted_style_request(!path_style);
        }
        let region = options.region.clone().or_else(|| std::env::var("AWS_REGION").ok());
        builder = builder.with_region(region.unwrap_or_else(|| "us-east-1".into()));
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &options.session_token {
            builder = builder.with_token(token);
        }
        if options.anonymous {
            builder = builder.with_skip_signature(true);
        } else if options.access_key_id.is_none() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            // Without this check object_store would look for a cloud metadata service, and on a
            // machine outside AWS the user would wait for a timeout instead of reading a reason.
            bail!(
                "s3://{bucket}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 or `access_key_id`/`secret_access_key` under [s3], or `anonymous = true`"
            );
        }
        // Transient failures (refused, reset, timed out, 5xx) are retried until the budget is
        // spent, however many attempts that takes: a server restarting for a few seconds costs
        // nothing. object_store resumes an interrupted body from the byte where it stopped (same
        // ETag). Backoff stays short, so a run resumes soon after the server is back.
        let backoff =
            BackoffConfig { init_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(1), base: 2.0 };
        builder = builder.with_retry(RetryConfig { backoff, max_retries: usize::MAX, retry_timeout: timeout });
        let store = builder.build().with_context(|| format!("s3://{bucket}"))?;
        let mut display = format!("s3://{bucket}/{key}");
        if let Some(endpoint) = &options.endpoint {
            display.push_str(&format!(" (at {endpoint})"));
        }
        let path = ObjectPath::from(key);
        Ok(ObjectUrl { store: Arc::new(store), path, is_prefix, display, retry_seconds: Some(seconds) })
    }

    /// Whether reading costs requests to a server (`s3://`) rather than a local file read.
    pub fn is_remote(&self) -> bool {
        self.retry_seconds.is_some()
    }

    /// The objects this URL names (path, size, ETag): itself (checked to be readable), or every
    /// object under the prefix, by name. A single object's first chunk is requested together
    /// with its HEAD, so reading starts one round trip earlier.
    pub async fn objects(&self) -> anyhow::Result<Vec<FoundObject>> {
        if !self.is_prefix {
            let first = GetOptions { range: Some(GetRange::Bounded(0..FIRST_CHUNK_BYTES)), ..GetOptions::default() };
            let (meta, first) = tokio::join!(self.check_readable(), async {
                let got = self.store.get_opts(&self.path, first).await?;
                let e_tag = got.meta.e_tag.clone();
                Ok::<_, object_store::Error>((e_tag, got.bytes().await?))
            });
            let meta = meta?;
            // Kept only if it is, whole, the version the HEAD saw (a failure here, as for an
            // empty object's range, is left to `read_range`, which asks again).
            let expected = meta.size.min(FIRST_CHUNK_BYTES);
            let first = match first {
                Ok((e_tag, bytes)) if e_tag == meta.e_tag && bytes.len() as u64 == expected && expected > 0 => {
                    Some(bytes)
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!("{self}: the first range is asked for again ({})", self.describe(&e));
                    None
                }
            };
            return Ok(vec![FoundObject { meta, first }]);
        }
        Ok(self.listed().await?.into_iter().map(|meta| FoundObject { meta, first: None }).collect())
    }

    /// The objects this URL names, as [`ObjectUrl::objects`] finds them, but with nothing read
    /// of them: a single object's HEAD only (for readers that start elsewhere than at its
    /// first byte, such as Parquet's at its footer).
    pub async fn metas(&self) -> anyhow::Result<Vec<ObjectMeta>> {
        if self.is_prefix { self.listed().await } else { Ok(vec![self.check_readable().await?]) }
    }

    /// Every object under the prefix, by name.
    async fn listed(&self) -> anyhow::Result<Vec<ObjectMeta>> {
        let mut found: Vec<ObjectMeta> = self
            .store
            .list(Some(&self.path))
            .try_collect()
            .await
            .map_err(|e| anyhow::anyhow!("{self}: {}", self.describe(&e)))?;
        // A stable order: reruns, and shards of a run, see the objects in the same sequence.
        found.sort_by(|a, b| a.location.cmp(&b.location));
        // A listing without ETags (some S3-protocol servers leave them out): each object's
        // HEAD gives its own, so reads, and plans, are pinned to a version.
        if found.iter().any(|meta| meta.e_tag.is_none()) {
            found = futures::stream::iter(found)
                .map(|meta| async move {
                    match meta.e_tag {
                        Some(_) => Ok(meta),
                        None => self.store.head(&meta.location).await,
                    }
                })
                .buffered(HEADS_IN_FLIGHT)
                .try_collect()
                .await
                .map_err(|e| anyhow::anyhow!("{self}: {}", self.describe(&e)))?;
        }
        Ok(found)
    }

    /// Streams an object (as [`ObjectUrl::objects`] found it) from byte `range.start` to its end:
    /// `range` in consecutive range requests of `CHUNK_BYTES` (the first one smaller, see
    /// `chunk_ranges`), then the rest in small pieces (`TAIL_BYTES`), `CHUNKS_IN_FLIGHT` ahead
    /// of the reader. A split's reader needs `range` and a little past it, to finish its last
    /// line: dropping the stream there costs at most the pieces in flight. Each request runs as
    /// its own task and is read whole at once, so however slowly the pipeline consumes the data,
    /// no request waits on the reader and outlives its timeout, and a failed one is retried on
    /// its own instead of failing the run. Each asks for the ETag seen when the object was found:
    /// if the object is replaced mid-read, the read fails instead of mixing two versions.
    /// Memory: a few chunks, whatever the size. Call it inside the tokio runtime.
    pub fn read_range(
        &self,
        found: FoundObject,
        range: Range<u64>,
    ) -> impl Stream<Item = object_store::Result<bytes::Bytes>> + Send + 'static {
        let FoundObject { meta, first } = found;
        let size = meta.size;
        // The chunk fetched with the object's HEAD serves a read from its start.
        let first = first.filter(|_| range.start == 0);
        let (store, runtime) = (self.store.clone(), tokio::runtime::Handle::current());
        let fetch = move |range: Range<u64>| {
            let (store, meta) = (store.clone(), meta.clone());
            runtime.spawn(async move { get_version(&*store, &meta, range).await })
        };
        let end = range.end.min(size);
        let tail = (end..size).step_by(TAIL_BYTES as usize).map(move |start| start..size.min(start + TAIL_BYTES));
        let mut ranges = chunk_ranges(range.start, end).skip(usize::from(first.is_some())).chain(tail);
        // The first requests start now, not when the reader first asks: it may be busy with
        // the chunk fetched already.
        let started: Vec<_> = ranges.by_ref().take(CHUNKS_IN_FLIGHT).map(&fetch).collect();
        let fetched = futures::stream::iter(started)
            .chain(futures::stream::iter(ranges).map(fetch))
            .buffered(CHUNKS_IN_FLIGHT)
            .map(|joined| {
                joined.unwrap_or_else(|e| Err(object_store::Error::Generic { store: "runner", source: Box::new(e) }))
            });
        futures::stream::iter(first.map(Ok)).chain(fetched)
    }

    /// The object's first line, its newline included (all of it when it has none): a CSV
    /// object's header, which every split of the object needs. Read in small requests
    /// ([`HEADER_BYTES`], doubling while no newline is found), not a split's chunks.
    pub async fn read_first_line(&self, found: &FoundObject) -> anyhow::Result<bytes::Bytes> {
        // The chunk fetched with the object's HEAD holds it, most often: no request more.
        if let Some(first) = &found.first
            && let Some(end) = memchr::memchr(b'\n', first)
        {
            return Ok(first.slice(..=end));
        }
        let size = found.meta.size;
        if size == 0 {
            return Ok(bytes::Bytes::new());
        }
        let mut want = HEADER_BYTES;
        loop {
            let end = size.min(want);
            let bytes = get_version(&*self.store, &found.meta, 0..end)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", self.name_of(&found.meta.location), self.describe(&e)))?;
            if let Some(at) = memchr::memchr(b'\n', &bytes) {
                return Ok(bytes.slice(..=at));
            }
            if end == size {
                return Ok(bytes);
            }
            want = want.saturating_mul(2);
        }
    }

    /// Checks that the object exists and is readable, and returns its size; the error names the
    /// URL and says whether the object or the whole bucket is missing (a HEAD response has no
    /// body to tell).
    pub async fn check_readable(&self) -> anyhow::Result<ObjectMeta> {
        match self.store.head(&self.path).await {
            Ok(meta) => Ok(meta),
            Err(object_store::Error::NotFound { .. }) if self.display.starts_with("s3://") => {
                let bucket_missing = match self.store.list_with_delimiter(None).await {
                    Err(object_store::Error::NotFound { .. }) => true,
                    Err(e) => format!("{e:#}").contains("NoSuchBucket"),
                    Ok(_) => false,
                };
                bail!("{self}: {}", if bucket_missing { "no such bucket" } else { "no such object" })
            }
            Err(e) => bail!("{self}: {}", self.describe(&e)),
        }
    }

    /// A one-line description of a store error, without credentials (the caller adds the URL):
    /// for a connection that kept failing, how long it was retried.
    pub fn describe(&self, e: &object_store::Error) -> String {
        describe_error(e, self.retry_seconds)
    }

    /// How to name one object of this URL in messages.
    pub fn name_of(&self, object: &ObjectPath) -> String {
        if !self.is_prefix {
            return self.display.clone();
        }
        match self.display.split_once(" (at ") {
            Some((_, endpoint)) => format!("{}{} (at {endpoint}", self.prefix_root(), object),
            None => format!("{}{}", self.prefix_root(), object),
        }
    }

    /// `s3://bucket/` or `/` for a local path: what goes before an object's full path.
    fn prefix_root(&self) -> String {
        match self.display.strip_prefix("s3://") {
            Some(rest) => format!("s3://{}/", rest.split('/').next().unwrap_or_default()),
            None => "/".into(),
        }
    }
}

/// Bytes `range` of the version of an object that `meta` describes (as a listing or a plan found
/// it): the request asks for that version (`If-Match` its ETag), and the response's own
/// description is checked too, for a server that ignores `If-Match`; without an ETag, its size
/// and modification time (to the second) tell. Another version fails with
/// `object_store::Error::Precondition`.
pub async fn get_version(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    range: Range<u64>,
) -> object_store::Result<bytes::Bytes> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        if_match: meta.e_tag.clone(),
        version: meta.version.clone(),
        ..GetOptions::default()
    };
    let got = store.get_opts(&meta.location, options).await?;
    let same = match (&meta.e_tag, &got.meta.e_tag) {
        (Some(expected), Some(found)) => expected == found,
        _ => got.meta.size == meta.size && got.meta.last_modified.timestamp() == meta.last_modified.timestamp(),
    };
    if !same {
        let path = meta.location.to_string();
        let source = format!("{path}: expected ETag {:?}, found {:?}", meta.e_tag, got.meta.e_tag).into();
        return Err(object_store::Error::Precondition { path, source });
    }
    got.bytes().await
}

/// The byte ranges `start..end` of an object is read in: [`FIRST_CHUNK_BYTES`], then
/// [`CHUNK_BYTES`] each, the last one shorter.
fn chunk_ranges(start: u64, end: u64) -> impl Iterator<Item = Range<u64>> + Send + 'static {
    let first_end = end.min(start.saturating_add(FIRST_CHUNK_BYTES));
    let first = (start < end).then_some(start..first_end);
    let rest = (first_end..end).step_by(CHUNK_BYTES as usize).map(move |at| at..end.min(at + CHUNK_BYTES));
    first.into_iter().chain(rest)
}

/// A part of the input one shard reads: the lines that start within `range` of `object`
/// (Hadoop's LineRecordReader rule, see `builtin::csv_source`).
#[derive(Clone)]
pub struct Split {
    pub object: FoundObject,
    pub range: Range<u64>,
}

impl Split {
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// Cuts objects (in their order) into splits: each object whole, or when it is larger than
/// `split_bytes`, ranges of `split_bytes` (the last shorter); `split_bytes = 0` never splits.
pub fn splits(objects: &[FoundObject], split_bytes: u64) -> Vec<Split> {
    let mut splits = Vec::new();
    for object in objects {
        let size = object.meta.size;
        if split_bytes == 0 || size <= split_bytes {
            splits.push(Split { object: object.clone(), range: 0..size });
            continue;
        }
        for start in (0..size).step_by(split_bytes as usize) {
            splits.push(Split { object: object.clone(), range: start..size.min(start + split_bytes) });
        }
    }
    splits
}

/// A one-line description of a store error, without credentials: the caller adds the URL.
/// `retry_seconds`: how long transient failures were retried.
fn describe_error(e: &object_store::Error, retry_seconds: Option<u64>) -> String {
    let retried = retry_seconds.map_or(String::new(), |s| format!(", still failing after {s} s of retries"));
    let text = match e {
        object_store::Error::NotFound { source, .. } if source.to_string().contains("NoSuchBucket") => {
            "no such bucket".to_string()
        }
        object_store::Error::NotFound { .. } => "no such object".to_string(),
        object_store::Error::Precondition { .. } => {
            "the object changed since it was listed (another version is stored now)".to_string()
        }
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            "access denied: check the credentials".to_string()
        }
        other => {
            let text = format!("{other:#}");
            // S3 rejects bad credentials with 403 and one of these codes in its XML body.
            if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden"]
                .iter()
                .any(|code| text.contains(code))
            {
                "access denied: check the credentials".to_string()
            } else if timed_out(other) {
                format!("timed out: no answer within `timeout_seconds` (under [s3], default 30){retried}")
            } else if text.contains("Connection refused") || text.contains("error sending request") {
                format!(
                    "cannot connect to the S3 endpoint (is the server running?){retried} (`timeout_seconds` under [s3])"
                )
            } else {
                text
            }
        }
    };
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 300 {
        format!("{}...", line.chars().take(300).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Whether a request (or its body) ran out of time, somewhere in the error's chain.
fn timed_out(e: &object_store::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = next {
        if let Some(http) = error.downcast_ref::<object_store::client::HttpError>() {
            return matches!(http.kind(), object_store::client::HttpErrorKind::Timeout);
        }
        next = error.source();
    }
    false
}

/// The local file a URL names: a path (relative to `base_dir`) or `file:///abs/path`, made
/// absolute and normalized; any other scheme is an error. Every local path in a spec (data,
/// assets, file sinks, dead letters) is resolved here.
pub fn local_path(url: &str, base_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = match url.split_once("://") {
        None => base_dir.join(url),
        Some(("file", rest)) => PathBuf::from(rest),
        Some((scheme, _)) => {
            bail!("`{}`: `{scheme}://` does not name a local file (expected a path or file://)", redact_url(url))
        }
    };
    Ok(normalize(&std::path::absolute(&path).with_context(|| format!("`{url}`: bad path"))?))
}

/// Where `url` (a path relative to `base_dir`, `file://` or another URL) points, as one string
/// per place: two URLs for the same file give the same string.
pub fn place(url: &str, base_dir: &Path) -> String {
    match local_path(url, base_dir) {
        Ok(path) => path.display().to_string(),
        Err(_) => url.to_string(),
    }
}

/// Removes `.` and `..` components without touching the file system (object_store's local
/// store refuses `..`, and the file need not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, base: &str) -> anyhow::Result<ObjectUrl> {
        ObjectUrl::parse(url, Path::new(base), &S3Options::default())
    }

    #[test]
    fn relative_paths_resolve_against_the_base() {
        let url = parse("../data/x.csv", "/srv/pipelines").unwrap();
        assert_eq!(url.to_string(), "/srv/data/x.csv");
        assert_eq!(url.path.as_ref(), "srv/data/x.csv");
        assert!(!url.is_prefix);
        let url = parse("file:///tmp/./y.csv", "/ignored").unwrap();
        assert_eq!(url.to_string(), "/tmp/y.csv");
        let url = parse("data/", "/srv").unwrap();
        assert!(url.is_prefix);
        assert_eq!(url.name_of(&ObjectPath::from("srv/data/a.csv")), "/srv/data/a.csv");
        assert!(parse("ftp://host/x", "/").unwrap_err().to_string().contains("unsupported scheme"));
    }

    #[test]
    fn chunks_cover_the_object_once_in_order() {
        for size in [0, 1, FIRST_CHUNK_BYTES - 1, FIRST_CHUNK_BYTES, FIRST_CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 7] {
            let ranges: Vec<_> = chunk_ranges(0, size).collect();
            let mut next = 0;
            for range in &ranges {
                assert_eq!(range.start, next, "size {size}: {ranges:?}");
                assert!(!range.is_empty() && range.end - range.start <= CHUNK_BYTES, "size {size}: {ranges:?}");
                next = range.end;
            }
            assert_eq!(next, size, "size {size}: {ranges:?}");
            assert!(ranges.first().is_none_or(|r| r.end <= FIRST_CHUNK_BYTES));
        }
        assert_eq!(chunk_ranges(0, FIRST_CHUNK_BYTES + CHUNK_BYTES + 1).count(), 3);
        // From the middle of an object: the same shape, from there.
        let from: Vec<_> = chunk_ranges(5, 5 + FIRST_CHUNK_BYTES + 3).collect();
        assert_eq!(from, [5..5 + FIRST_CHUNK_BYTES, 5 + FIRST_CHUNK_BYTES..8 + FIRST_CHUNK_BYTES]);
    }

    #[test]
    fn s3_urls_name_bucket_and_endpoint_but_no_secret() {
        let options = S3Options {
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key_id: Some("minio".into()),
            secret_access_key: Some("hunter2".into()),
            ..S3Options::default()
        };
        let url = ObjectUrl::parse("s3://batch/data/", Path::new("/"), &options).unwrap();
        assert!(url.is_prefix);
        assert_eq!(url.path.as_ref(), "data");
        assert_eq!(url.to_string(), "s3://batch/data/ (at http://127.0.0.1:9000)");
        assert_eq!(url.name_of(&ObjectPath::from("data/a.csv")), "s3://batch/data/a.csv (at http://127.0.0.1:9000)");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(ObjectUrl::parse("s3:///key", Path::new("/"), &options).unwrap_err().to_string().contains("no bucket"));
    }
}
