//! The tokio runtime that drives object-store requests for the blocking API.
//!
//! One multi-threaded runtime per process, started on first use, whose workers only wait on the
//! network (decryption and decoding stay on the caller's threads and rayon). A blocking call made
//! from outside any runtime blocks on it directly; one made from inside another tokio runtime (a
//! SQL engine's) hands the future to this runtime and waits on a channel, so it never tries to
//! start a runtime within a runtime.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{Error, Result};

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The IO runtime's handle.
pub(crate) fn handle() -> Result<Handle> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("colvault-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
        .map_err(|e| Error::Storage {
            context: "starting the IO runtime".into(),
            message: e.clone(),
            retriable: false,
        })
}

/// Runs `fut` on the IO runtime and awaits it from any executor (the async API: the caller's
/// thread is never blocked, and the request runs where the store's clients live).
pub(crate) async fn run<T, F>(fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    handle()?.spawn(fut).await.map_err(|e| Error::Storage {
        context: "an IO task".into(),
        message: e.to_string(),
        retriable: true,
    })?
}

/// Runs blocking `f` (a catalog query, a KMS call) on the IO runtime's blocking pool and awaits
/// it, so an async caller's thread does not block.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    handle()?.spawn_blocking(f).await.map_err(|e| Error::Storage {
        context: "a blocking task".into(),
        message: e.to_string(),
        retriable: false,
    })?
}

/// Runs `fut` to completion on the IO runtime and returns its output, from any thread.
pub(crate) fn block_on<T, F>(fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let handle = handle()?;
    if Handle::try_current().is_ok() {
        // Inside some runtime: run on ours and wait without entering it.
        let task = handle.spawn(fut);
        futures::executor::block_on(task).map_err(|e| Error::Storage {
            context: "an IO task".into(),
            message: e.to_string(),
            retriable: true,
        })?
    } else {
        handle.block_on(fut)
    }
}
