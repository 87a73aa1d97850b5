//! Where a project lives: a local path or a URL, parsed once into a [`Location`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A project's (or any colvault object tree's) location in the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory (a plain path or `file:///...`), kept as an absolute path.
    Local(PathBuf),
    /// `memory://NAME[/prefix]`: a process-wide in-memory store named NAME (for tests).
    Memory {
        /// The store's name.
        name: String,
        /// The prefix inside it (no leading or trailing `/`; may be empty).
        prefix: String,
    },
    /// `s3://BUCKET[/prefix]`: an S3-compatible object store, configured from the `AWS_*`
    /// environment variables.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix inside it (no leading or trailing `/`; may be empty).
        prefix: String,
    },
    /// `SCHEME://AUTHORITY[/prefix]` served by a store registered with
    /// [`crate::storage::register_store`].
    Registered {
        /// `SCHEME://AUTHORITY`, the registry key.
        root: String,
        /// The prefix inside it.
        prefix: String,
    },
}

fn clean_prefix(p: &str, what: &str) -> Result<String> {
    let p = p.trim_matches('/');
    for part in p.split('/').filter(|s| !s.is_empty()) {
        if part == "." || part == ".." || part.contains('#') || part.chars().any(|c| c.is_control()) {
            return Err(Error::InvalidArgument(format!(
                "{what}: the path part {part:?} is not allowed (no `.`, `..`, `#` or control characters)"
            )));
        }
    }
    Ok(p.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/"))
}

impl Location {
    /// Parses a path or a URL: `file:///abs/dir`, `memory://name/prefix`, `s3://bucket/prefix`,
    /// or a URL whose `scheme://authority` was registered; anything without `://` is a local path
    /// (made absolute against the current directory).
    pub fn parse(s: &str) -> Result<Location> {
        if s.is_empty() {
            return Err(Error::InvalidArgument("an empty location".into()));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Location::Local(absolute(Path::new(s))?));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let root = format!("{scheme}://{authority}");
        if super::registry::lookup(&root).is_some() {
            return Ok(Location::Registered {
                prefix: clean_prefix(path, s)?,
                root,
            });
        }
        match scheme {
            "file" => {
                if !authority.is_empty() && authority != "localhost" {
                    return Err(Error::InvalidArgument(format!(
                        "{s}: a file URL names a local path (file:///dir), not host {authority:?}"
                    )));
                }
                Ok(Location::Local(absolute(Path::new(&format!("/{path}")))?))
            }
            "memory" => Ok(Location::Memory {
                name: non_empty(authority, s, "a store name")?,
                prefix: clean_prefix(path, s)?,
            }),
            "s3" | "s3a" => Ok(Location::S3 {
                bucket: non_empty(authority, s, "a bucket")?,
                prefix: clean_prefix(path, s)?,
            }),
            other => Err(Error::InvalidArgument(format!(
                "{s}: unknown storage scheme {other:?} (a path, file://, memory:// or s3://)"
            ))),
        }
    }

    /// The canonical string of this location, what the catalog records: an absolute path for a
    /// local directory, else the URL.
    pub fn to_url(&self) -> String {
        match self {
            Location::Local(_) => self.root(),
            Location::Memory { prefix, .. } | Location::S3 { prefix, .. } | Location::Registered { prefix, .. } => {
                let root = self.root();
                if prefix.is_empty() {
                    root
                } else {
                    format!("{root}/{prefix}")
                }
            }
        }
    }

    /// The store's root without the prefix: `scheme://authority`, or the directory of a local
    /// location.
    pub(crate) fn root(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Memory { name, .. } => format!("memory://{name}"),
            Location::S3 { bucket, .. } => format!("s3://{bucket}"),
            Location::Registered { root, .. } => root.clone(),
        }
    }

    /// The local directory, for a local location.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            _ => None,
        }
    }
}

fn non_empty(s: &str, url: &str, what: &str) -> Result<String> {
    if s.is_empty() {
        return Err(Error::InvalidArgument(format!("{url}: the URL lacks {what}")));
    }
    Ok(s.to_string())
}

/// `p` made absolute (not canonicalised: the directory may not exist yet), without `.`/`..`.
fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("reading the current directory", e))?
            .join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Location::parse("/a/b/../c").unwrap(), Location::Local("/a/c".into()));
        assert_eq!(Location::parse("file:///x/y").unwrap(), Location::Local("/x/y".into()));
        assert_eq!(
            Location::parse("memory://t1/p/q/").unwrap(),
            Location::Memory {
                name: "t1".into(),
                prefix: "p/q".into()
            }
        );
        let s3 = Location::parse("s3://bucket/sales").unwrap();
        assert_eq!(
            s3,
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "sales".into()
            }
        );
        assert_eq!(s3.to_url(), "s3://bucket/sales");
        assert_eq!(Location::parse("s3://bucket").unwrap().to_url(), "s3://bucket");
        for bad in [
            "",
            "s3:///x",
            "gopher://h/x",
            "s3://b/../x",
            "memory://",
            "file://host/x",
            "s3://b/a#1",
        ] {
            assert!(
                matches!(Location::parse(bad), Err(Error::InvalidArgument(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
