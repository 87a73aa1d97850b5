//! A store wrapper for tests that makes requests fail on demand, or hold GETs at a gate until the
//! test lets them through.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn ObjectStore>,
    /// PUTs (single and multipart starts) fail while set.
    pub fail_puts: AtomicBool,
    /// GETs fail while set.
    pub fail_gets: AtomicBool,
    /// When there is a gate, every GET waits for a permit of it.
    gate: Option<tokio::sync::Semaphore>,
    /// GETs that reached the gate so far.
    pub waiting: AtomicUsize,
    /// Requests failed on purpose so far.
    pub failed: AtomicUsize,
}

impl Faulty {
    /// Passes everything through until told to fail.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self::build(inner, None))
    }

    /// Holds every GET until [`release`](Self::release) lets it through.
    pub fn gated(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self::build(inner, Some(tokio::sync::Semaphore::new(0))))
    }

    fn build(inner: Arc<dyn ObjectStore>, gate: Option<tokio::sync::Semaphore>) -> Self {
        Faulty {
            inner,
            fail_puts: AtomicBool::new(false),
            fail_gets: AtomicBool::new(false),
            gate,
            waiting: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// Lets `n` more GETs through the gate.
    pub fn release(&self, n: usize) {
        if let Some(g) = &self.gate {
            g.add_permits(n);
        }
    }

    /// Closes the gate again (withdraws the permits not yet used).
    pub fn close(&self) {
        if let Some(g) = &self.gate {
            g.forget_permits(g.available_permits());
        }
    }

    fn fault(&self, flag: &AtomicBool, what: &str) -> Result<()> {
        if flag.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("injected failure of a {what}").into(),
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.fault(&self.fail_puts, "PUT")?;
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(&self, l: &Path, o: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.fault(&self.fail_puts, "multipart upload")?;
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
        if let Some(g) = &self.gate {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            g.acquire().await.unwrap().forget();
        }
        self.fault(&self.fail_gets, "GET")?;
        self.inner.get_opts(l, o).await
    }
    fn delete_stream(&self, l: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(l)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}
