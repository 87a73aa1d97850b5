//! The data plane's storage: one IO abstraction, [`Storage`], over a local directory, an
//! in-memory store (tests) and S3-compatible object stores (feature `s3`), all through the
//! [`object_store`] crate (as DataFusion and iceberg-rust do).
//!
//! Everything colvault keeps in the data plane is written as a **new object with a unique name**
//! (data files by random file id, manifests and settings by content digest), never overwritten
//! in place; the commit point is the catalog's compare-and-swap. So stores without conditional
//! writes are as safe as those with them: where a store supports create-only puts
//! (`PutMode::Create`), colvault uses them as a second guard.
//!
//! * Writes of data files stream through a multipart upload ([`ObjectWriter`]) with a bounded
//!   number of parts in flight: memory stays bounded; the object appears only when the upload
//!   completes, so a writer killed halfway leaves nothing visible (S3 keeps the parts of an
//!   incomplete upload invisible until a lifecycle rule aborts it).
//! * Reads of an object store ([`ObjectReader`]) fetch the trailer and footer with one suffix
//!   request (plus one if the footer is longer than the suffix), and a scan's chunks with
//!   coalesced range requests issued ahead, concurrently, with bounded bytes in flight.
//! * Local directories go through `object_store`'s `LocalFileSystem` too (staging file, then
//!   rename), and colvault then fsyncs the file and its directory, as it always did; reads of
//!   local files use positioned reads on the open file.
//! * A request that fails after the store's retries (exponential backoff, `object_store`'s
//!   `RetryConfig`) is [`Error::Storage`], with `retriable` set when trying again may help.

mod instrument;
mod location;
mod reader;
mod registry;
mod runtime;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use instrument::{Instrumented, RequestCounts};
pub use location::Location;
pub use reader::ObjectReader;
pub use registry::register_store;
pub use writer::ObjectWriter;

use crate::error::{Error, Result};
use crate::format::ReadAt;

pub(crate) use runtime::{block_on, blocking};

/// An object listed by [`Storage::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name relative to the storage it was listed from (`tables/t1/data/x.cvlt`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// An object being opened in the background ([`Storage::open_ahead`]).
pub struct PendingReader {
    name: String,
    task: tokio::task::JoinHandle<Result<Option<ObjectReader>>>,
}

impl PendingReader {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the open: the reader, or `None` when there is no such object.
    pub fn wait(self) -> Result<Option<Arc<dyn ReadAt>>> {
        futures::executor::block_on(self.wait_async())
    }

    /// Awaits the open (the async form of [`wait`](Self::wait)).
    pub async fn wait_async(self) -> Result<Option<Arc<dyn ReadAt>>> {
        let r = self.task.await.map_err(|e| Error::Storage {
            context: format!("opening {}", self.name),
            message: e.to_string(),
            retriable: true,
        })??;
        Ok(r.map(|r| Arc::new(r) as Arc<dyn ReadAt>))
    }
}

/// A place in the data plane (a store and a prefix in it) where colvault reads and writes objects
/// by relative name. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    location: Location,
    /// The prefix inside `store`.
    prefix: Vec<String>,
    /// For a local directory, the root directory of `store` (the storage's own directory is
    /// this joined with `prefix`).
    local: Option<PathBuf>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.url())
    }
}

pub(crate) fn store_error(context: impl Into<String>, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let retriable = matches!(e, E::Generic { .. } | E::JoinError { .. });
    Error::Storage {
        context: context.into(),
        message: e.to_string(),
        retriable,
    }
}

fn split(rel: &str) -> impl Iterator<Item = &str> {
    rel.split('/').filter(|s| !s.is_empty())
}

impl Storage {
    /// Opens the storage at `location` (see [`Location::parse`]). A local directory must exist,
    /// unless `create` is set, then it is made.
    pub fn open(location: &str, create: bool) -> Result<Storage> {
        Self::at(Location::parse(location)?, create)
    }

    /// Opens the storage at a parsed location.
    pub fn at(location: Location, create: bool) -> Result<Storage> {
        let (store, prefix, local): (Arc<dyn ObjectStore>, String, Option<PathBuf>) = match &location {
            Location::Local(dir) => {
                if create {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                }
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| store_error(format!("opening {}", dir.display()), e))?;
                (Arc::new(fs), String::new(), Some(dir.clone()))
            }
            Location::Memory { name, prefix } => (registry::memory(name), prefix.clone(), None),
            Location::S3 { bucket, prefix } => (s3_store(bucket)?, prefix.clone(), None),
            Location::Registered { root, prefix } => (
                registry::lookup(root).ok_or_else(|| {
                    Error::InvalidArgument(format!("no store is registered for {root} in this process"))
                })?,
                prefix.clone(),
                None,
            ),
        };
        Ok(Storage {
            store,
            location,
            prefix: split(&prefix).map(str::to_string).collect(),
            local,
        })
    }

    /// A storage over `store` itself (for a store built by the caller), named `url` in messages
    /// and in what the catalog records; `url` must also be registered ([`register_store`]) for
    /// other processes' [`Storage::open`] to find it.
    pub fn from_store(store: Arc<dyn ObjectStore>, url: &str) -> Result<Storage> {
        let (root, prefix) = match url.split_once("://") {
            Some((scheme, rest)) => {
                let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
                (format!("{scheme}://{auth}"), path.to_string())
            }
            None => return Err(Error::InvalidArgument(format!("{url}: not a URL"))),
        };
        Ok(Storage {
            store,
            prefix: split(&prefix).map(str::to_string).collect(),
            location: Location::Registered { root, prefix },
            local: None,
        })
    }

    /// The storage under `rel` (a `/`-separated relative name) of this one.
    pub fn child(&self, rel: &str) -> Storage {
        let mut s = self.clone();
        s.prefix.extend(split(rel).map(str::to_string));
        s
    }

    /// Where this storage is: an absolute path or a URL (what the catalog records).
    pub fn url(&self) -> String {
        match self.local_file("") {
            Some(dir) => dir.display().to_string(),
            None => {
                let root = self.location.root();
                if self.prefix.is_empty() {
                    root
                } else {
                    format!("{root}/{}", self.prefix.join("/"))
                }
            }
        }
    }

    /// The local directory of this storage, for a local location.
    pub fn local_dir(&self) -> Option<PathBuf> {
        self.local_file("")
    }

    /// Whether this storage is a local directory.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The object store underneath (to hand to an engine such as DataFusion).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    pub(crate) fn path(&self, name: &str) -> ObjPath {
        ObjPath::from_iter(self.prefix.iter().map(String::as_str).chain(split(name)))
    }

    fn rel_name(&self, p: &ObjPath) -> String {
        let base = self.path("");
        let base = base.as_ref();
        let full = p.as_ref();
        let rel = if base.is_empty() {
            full
        } else {
            full.strip_prefix(base).unwrap_or(full)
        };
        rel.trim_start_matches('/').to_string()
    }

    fn local_file(&self, name: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|d| {
            let mut p = d.clone();
            p.extend(self.prefix.iter().map(String::as_str).chain(split(name)));
            p
        })
    }

    /// fsyncs a just-published local file and its directory (no-op elsewhere).
    fn sync_local(&self, name: &str) -> Result<()> {
        if let Some(p) = self.local_file(name) {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(format!("syncing {}", p.display()), e))?;
            if let Some(dir) = p.parent() {
                crate::fsutil::sync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// The whole object `name`, or `None` when there is none.
    pub fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let (store, path) = (self.store.clone(), self.path(name));
        let ctx = format!("reading {}", self.describe(name));
        block_on(async move {
            match store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some).map_err(|e| store_error(ctx, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_error(ctx, e)),
            }
        })
    }

    /// Writes `bytes` as the new object `name`. Returns `Ok(false)`, writing nothing, when the
    /// store already holds `name` and can tell (create-only puts); stores that cannot are only
    /// ever given unique names.
    pub fn put_new(&self, name: &str, bytes: Bytes) -> Result<bool> {
        let (store, path) = (self.store.clone(), self.path(name));
        let ctx = format!("writing {}", self.describe(name));
        let created = block_on(async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match store.put_opts(&path, PutPayload::from(bytes.clone()), opts).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(object_store::Error::NotImplemented { .. }) => store
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map(|_| true)
                    .map_err(|e| store_error(ctx, e)),
                Err(e) => Err(store_error(ctx, e)),
            }
        })?;
        if created {
            self.sync_local(name)?;
        }
        Ok(created)
    }

    /// Writes `bytes` as object `name`, replacing any object of that name in one atomic step
    /// (readers see the old object or the new one). Only the project settings file is ever
    /// replaced, by a re-seal of the same body under a fresh key (see `Project::rewrap`).
    pub fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(name));
        let ctx = format!("writing {}", self.describe(name));
        block_on(async move {
            store
                .put(&path, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| store_error(ctx, e))
        })?;
        self.sync_local(name)
    }

    /// Removes `name` (no error if it is not there).
    pub fn delete(&self, name: &str) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(name));
        let ctx = format!("removing {}", self.describe(name));
        block_on(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_error(ctx, e)),
            }
        })
    }

    /// Every object under `rel` (recursively), names relative to this storage, sorted.
    pub fn list(&self, rel: &str) -> Result<Vec<Entry>> {
        let store = self.store.clone();
        let prefix = self.path(rel);
        let ctx = format!("listing {}", self.describe(rel));
        let metas: Vec<object_store::ObjectMeta> = block_on(async move {
            let p = (!prefix.as_ref().is_empty()).then_some(prefix);
            store
                .list(p.as_ref())
                .try_collect()
                .await
                .map_err(|e| store_error(ctx, e))
        })?;
        let mut out: Vec<Entry> = metas
            .into_iter()
            .map(|m| Entry {
                name: self.rel_name(&m.location),
                size: m.size,
                modified: SystemTime::from(m.last_modified),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the objects directly under `rel` whose base name `doomed` picks and that were last
    /// written more than `grace` ago; for a local directory, also staging and temporary files a
    /// killed writer left (`name#N`, `.name.tag.tmp`) older than `grace`. Returns how many.
    pub fn remove_where(&self, rel: &str, grace: std::time::Duration, doomed: impl Fn(&str) -> bool) -> Result<usize> {
        let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        let depth = split(rel).count();
        for e in self.list(rel)? {
            let parts: Vec<&str> = split(&e.name).collect();
            if parts.len() != depth + 1 || e.modified > cutoff {
                continue;
            }
            if doomed(parts[depth]) {
                self.delete(&e.name)?;
                removed += 1;
            }
        }
        if let Some(dir) = self.local_file(rel) {
            if dir.is_dir() {
                removed += crate::fsutil::remove_files_where(&dir, grace, |name| {
                    let staging = name
                        .rsplit_once('#')
                        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                    staging || (name.starts_with('.') && name.ends_with(".tmp"))
                })?;
            }
        }
        Ok(removed)
    }

    /// The names of the immediate "directories" under `rel` (common prefixes), sorted.
    pub fn list_dirs(&self, rel: &str) -> Result<Vec<String>> {
        let store = self.store.clone();
        let prefix = self.path(rel);
        let ctx = format!("listing {}", self.describe(rel));
        let res = block_on(async move {
            let p = (!prefix.as_ref().is_empty()).then_some(prefix);
            store
                .list_with_delimiter(p.as_ref())
                .await
                .map_err(|e| store_error(ctx, e))
        })?;
        let mut out: Vec<String> = res
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes every object under `rel`; for a local directory, the directory too.
    pub fn delete_all(&self, rel: &str) -> Result<()> {
        for e in self.list(rel)? {
            self.delete(&e.name)?;
        }
        if let Some(dir) = self.local_file(rel) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
            }
        }
        Ok(())
    }

    /// A reader of object `name`, whose length the caller knows (from a manifest) or not;
    /// `None` when there is no such object.
    pub fn reader(&self, name: &str, len: Option<u64>) -> Result<Option<Arc<dyn ReadAt>>> {
        if let Some(p) = self.local_file(name) {
            return match std::fs::File::open(&p) {
                Ok(f) => Ok(Some(Arc::new(f))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(format!("opening {}", p.display()), e)),
            };
        }
        let r = ObjectReader::open(self.store.clone(), self.path(name), len, self.describe(name))?;
        Ok(r.map(|r| Arc::new(r) as Arc<dyn ReadAt>))
    }

    /// Opens object `name` for positioned reads without blocking the caller's thread (the async
    /// form of [`reader`](Self::reader)): an object store's magic and tail are fetched on the IO
    /// runtime; a local file is opened directly (no network wait).
    pub async fn reader_async(&self, name: &str, len: Option<u64>) -> Result<Option<Arc<dyn ReadAt>>> {
        if self.local.is_some() {
            return self.reader(name, len);
        }
        let (store, path, what) = (self.store.clone(), self.path(name), self.describe(name));
        let r = runtime::run(ObjectReader::open_async(store, path, len, what)).await?;
        Ok(r.map(|r| Arc::new(r) as Arc<dyn ReadAt>))
    }

    /// The whole object `name`, or `None` (the async form of [`get`](Self::get)).
    pub async fn get_async(&self, name: &str) -> Result<Option<Bytes>> {
        let (store, path) = (self.store.clone(), self.path(name));
        let ctx = format!("reading {}", self.describe(name));
        runtime::run(async move {
            match store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some).map_err(|e| store_error(ctx, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_error(ctx, e)),
            }
        })
        .await
    }

    /// Starts opening object `name` (its magic and tail) in the background, for a reader that will
    /// want it next; `None` for a local directory, where opening costs no round trip.
    pub fn open_ahead(&self, name: &str, len: Option<u64>) -> Option<PendingReader> {
        if self.local.is_some() {
            return None;
        }
        let handle = runtime::handle().ok()?;
        let (store, path, what) = (self.store.clone(), self.path(name), self.describe(name));
        Some(PendingReader {
            name: name.to_string(),
            task: handle.spawn(ObjectReader::open_async(store, path, len, what)),
        })
    }

    /// A writer of the new object `name`, published by [`ObjectWriter::finish`] (dropping it
    /// unfinished aborts the upload: nothing appears).
    pub fn writer(&self, name: &str) -> Result<ObjectWriter> {
        Ok(ObjectWriter::new(
            self.store.clone(),
            self.path(name),
            self.describe(name),
            self.local_file(name),
        ))
    }

    /// `name` as shown in messages: its URL or path.
    pub fn describe(&self, name: &str) -> String {
        let base = self.url();
        if name.is_empty() {
            base
        } else {
            format!("{}/{}", base.trim_end_matches('/'), name.trim_start_matches('/'))
        }
    }
}

#[cfg(feature = "s3")]
fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::AmazonS3Builder;
    let signed = std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
    let unsigned = std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v == "true" || v == "1");
    if !signed && !unsigned {
        // object_store would fall back to instance metadata over the network: refuse instead.
        return Err(Error::InvalidArgument(
            "S3 credentials come from the environment: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (and AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP for a local endpoint), or AWS_SKIP_SIGNATURE=true"
                .into(),
        ));
    }
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| store_error(format!("configuring s3://{bucket}"), e))?;
    Ok(Arc::new(s3))
}

#[cfg(not(feature = "s3"))]
fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    Err(Error::InvalidArgument(format!(
        "s3://{bucket}: this build of colvault lacks S3 support (cargo feature `s3`)"
    )))
}
