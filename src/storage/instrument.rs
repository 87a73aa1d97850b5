//! A store wrapper that counts requests and bytes and can add latency to every request: what the
//! storage benchmark and the request-count tests measure with, and a user can too.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// What an [`Instrumented`] store has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// GET requests (whole objects and ranges; a `get_ranges` call counts each range it sends).
    pub gets: u64,
    /// Bytes those GETs returned.
    pub get_bytes: u64,
    /// PUT requests and multipart upload starts.
    pub puts: u64,
    /// LIST requests.
    pub lists: u64,
    /// DELETE requests.
    pub deletes: u64,
}

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    get_bytes: AtomicU64,
    puts: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    /// The objects GET requests read, with how many requests each.
    read: Mutex<BTreeMap<String, u64>>,
}

/// Wraps a store: counts its requests and bytes, and sleeps `latency` before each request (an
/// injected round trip, as to a distant region).
#[derive(Clone)]
pub struct Instrumented {
    inner: Arc<dyn ObjectStore>,
    latency: Duration,
    counters: Arc<Counters>,
}

impl Instrumented {
    /// Wraps `inner`, adding `latency` to every request.
    pub fn new(inner: Arc<dyn ObjectStore>, latency: Duration) -> Self {
        Instrumented {
            inner,
            latency,
            counters: Arc::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            gets: c.gets.load(Ordering::Relaxed),
            get_bytes: c.get_bytes.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
        }
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        let c = &self.counters;
        for a in [&c.gets, &c.get_bytes, &c.puts, &c.lists, &c.deletes] {
            a.store(0, Ordering::Relaxed);
        }
        c.read.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The objects read (by at least one GET) since the last [`reset`](Self::reset), as paths
    /// in the wrapped store, sorted, with how many GET requests each took.
    pub fn objects_read(&self) -> Vec<(String, u64)> {
        let read = self.counters.read.lock().unwrap_or_else(|e| e.into_inner());
        read.iter().map(|(p, n)| (p.clone(), *n)).collect()
    }

    async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

impl fmt::Debug for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({}, +{:?})", self.inner, self.latency)
    }
}

impl fmt::Display for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        *self
            .counters
            .read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(location.to_string())
            .or_default() += 1;
        self.delay().await;
        let r = self.inner.get_opts(location, options).await?;
        self.counters
            .get_bytes
            .fetch_add(r.range.end - r.range.start, Ordering::Relaxed);
        Ok(r)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let counters = self.counters.clone();
        let counted = locations
            .map(move |p| {
                counters.deletes.fetch_add(1, Ordering::Relaxed);
                p
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        self.inner.copy_opts(from, to, options).await
    }
}
