//! Turns the URLs a spec uses for data and assets into an `object_store` store and a path.
//!
//! Accepted forms: a plain path (relative to the spec file's directory) or `file:///abs/path`.
//! Every reader in the host (sources, assets) goes through here, so adding a scheme adds it
//! everywhere at once.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

/// An object (or, with a trailing `/`, every object under a prefix) in some store.
#[derive(Clone)]
pub struct ObjectUrl {
    pub store: Arc<dyn ObjectStore>,
    pub path: ObjectPath,
    /// How to show it to a human: the URL as written, resolved, never with credentials.
    display: String,
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
    /// Resolves `url`; relative paths are taken from `base_dir`.
    pub fn parse(url: &str, base_dir: &Path) -> anyhow::Result<ObjectUrl> {
        let local = match url.split_once("://") {
            None => base_dir.join(url),
            Some(("file", rest)) => PathBuf::from(rest),
            Some((scheme, _)) => bail!("`{url}`: unsupported scheme `{scheme}://` (expected a path or file://)"),
        };
        let absolute = normalize(&std::path::absolute(&local).with_context(|| format!("`{url}`: bad path"))?);
        let path = ObjectPath::from_absolute_path(&absolute).with_context(|| format!("`{url}`: bad path"))?;
        Ok(ObjectUrl { store: Arc::new(LocalFileSystem::new()), path, display: absolute.display().to_string() })
    }
}

/// A one-line description of a store error, without the store's internal details (and never
/// credentials): the caller prefixes the URL.
pub fn describe_error(e: &object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => "no such object".to_string(),
        other => other.to_string(),
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

    #[test]
    fn relative_paths_resolve_against_the_base() {
        let url = ObjectUrl::parse("../data/x.csv", Path::new("/srv/pipelines")).unwrap();
        assert_eq!(url.to_string(), "/srv/data/x.csv");
        assert_eq!(url.path.as_ref(), "srv/data/x.csv");
        let url = ObjectUrl::parse("file:///tmp/./y.csv", Path::new("/ignored")).unwrap();
        assert_eq!(url.to_string(), "/tmp/y.csv");
        assert!(
            ObjectUrl::parse("ftp://host/x", Path::new("/")).unwrap_err().to_string().contains("unsupported scheme")
        );
    }
}
