//! The async reader of a table snapshot: [`TableScan::stream`] and [`TableStream`].
//!
//! It shares the blocking reader's code ([`ScanPlan`]: the snapshot, its checks, the projection
//! and the per-file mapping of columns) and differs only in how it waits: the snapshot is planned
//! on the IO runtime's blocking pool (a catalog query and a manifest read), each file is opened
//! with the async object-store reader (its magic and tail in one round trip, the next file's open
//! overlapping the current file's reads), and each batch's chunks are awaited before it is
//! decrypted and decoded on the rayon pool ([`BatchStream`]). So a SQL engine can poll many scans
//! from a few runtime threads: no thread blocks on the network, and none is held per scan.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::{Stream, StreamExt};

use super::scan::ScanPlan;
use super::{FileRef, Table, TableScan};
use crate::error::Result;
use crate::read::BatchStream;
use crate::storage::{blocking, PendingReader};

impl TableScan {
    /// The async reader over the snapshot (see the module documentation): the same batches as
    /// [`build`](Self::build), as a [`Stream`]. Usable from any executor.
    ///
    /// ```no_run
    /// # async fn f(table: colvault::table::Table) -> colvault::Result<()> {
    /// use futures::TryStreamExt;
    /// let batches: Vec<_> = table.scan().columns(["id"]).stream().await?.try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn stream(self) -> Result<TableStream> {
        let plan = blocking(move || self.plan()).await?;
        let files: VecDeque<FileRef> = plan.files();
        let schema = plan.schema.clone();
        let version = plan.manifest.version;
        let state = State {
            plan: Arc::new(plan),
            files,
            current: None,
            ahead: None,
        };
        let inner = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next().await {
                Ok(Some(b)) => Some((Ok(b), Some(state))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(TableStream {
            schema,
            version,
            inner: Box::pin(inner),
        })
    }
}

struct State {
    plan: Arc<ScanPlan>,
    files: VecDeque<FileRef>,
    current: Option<(BatchStream, Vec<Option<usize>>)>,
    ahead: Option<PendingReader>,
}

impl State {
    async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some((batches, map)) = &mut self.current {
                if let Some(b) = batches.next().await.transpose()? {
                    return self.plan.conform(map, &b).map(Some);
                }
                self.current = None;
            }
            let Some(f) = self.files.pop_front() else {
                return Ok(None);
            };
            let table = &self.plan.table;
            let name = Table::data_object(&f.name);
            let ahead = self.ahead.take().filter(|a| a.name() == name);
            self.ahead = self
                .files
                .front()
                .and_then(|n| table.storage.open_ahead(&Table::data_object(&n.name), Some(n.len)));
            let source = match ahead {
                Some(a) => a.wait_async().await?,
                None => table.storage.reader_async(&name, Some(f.len)).await?,
            };
            // Opening unwraps the file's keys, which may ask the KMS (once per cached KEK): off
            // the caller's thread.
            let plan = self.plan.clone();
            let started = blocking(move || {
                let reader = plan.table.open_source(&f, &plan.manifest, source)?;
                plan.start(&reader)
            })
            .await?;
            self.current = Some((started.0.into_stream(), started.1));
        }
    }
}

/// The batches of a table snapshot as an async [`Stream`] ([`TableScan::stream`]). Dropping it
/// stops its decoders and prefetches.
pub struct TableStream {
    schema: SchemaRef,
    version: u64,
    inner: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
}

impl TableStream {
    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The snapshot's version.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl fmt::Debug for TableStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableStream")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Stream for TableStream {
    type Item = Result<RecordBatch>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
