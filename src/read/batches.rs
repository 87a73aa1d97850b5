//! [`BatchReader`]: the record batches of a scan, decoded by *lanes* that run ahead on rayon.
//!
//! A lane is one row group's share of one field (or of the whole projection when it is a single
//! field): its own Parquet decoder over its own [`VirtualFile`], and a queue of at most
//! [`LANE_AHEAD`] decoded batches. The lanes of the row group being returned and of the next few
//! are pumped by rayon tasks, each lane independently (no barrier between fields or between
//! batches), and the caller assembles each output batch from the heads of the current row
//! group's queues. When a queue it needs is empty the caller decodes that lane itself, or helps
//! another lane, and waits only for a lane that another thread is decoding at that moment.
//!
//! That wait cannot deadlock because a lane's decoder never enters rayon: chunks are read and
//! opened on the decoding thread ([`ChunkOpener::open_here`](crate::crypto::ChunkOpener::open_here)),
//! so a thread busy with a lane always makes progress, whatever the caller's own thread is nested
//! in.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, RecordBatchOptions, RecordBatchReader};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::ProjectionMask;

use super::chunks::VirtualFile;
use crate::error::{Error, Result};
use crate::format::ReadAt;

/// Decoded batches a lane keeps ahead of the caller.
const LANE_AHEAD: usize = 8;
/// A lane whose queue falls to this many batches is pumped again.
const LANE_REFILL: usize = LANE_AHEAD / 2;
/// Most row groups decoded at once.
const MAX_ROW_GROUPS_IN_FLIGHT: usize = 8;
/// Decoded bytes the lanes of row groups after the current one may queue between them, beyond
/// [`LANE_AHEAD`] batches each: enough for a one-column scan to decode the next row group while
/// the current one is returned.
const AHEAD_BYTES: usize = 32 << 20;
/// How long an inline stream runs before it yields to the executor, so that tokio may move a
/// task waiting on the same worker to an idle one ([`BatchReader::into_inline_stream`]).
const INLINE_YIELD_AFTER: Duration = Duration::from_millis(2);

/// What the lanes of a scan share.
pub(super) struct ScanShared {
    pub(super) metadata: ArrowReaderMetadata,
    pub(super) batch_size: usize,
    /// Set when the [`BatchReader`] is dropped: pending pumps stop.
    cancelled: AtomicBool,
    /// The ordinal of the row group being returned.
    current: AtomicUsize,
    /// Bytes of the batches queued in all lanes.
    queued_bytes: AtomicUsize,
    /// Lanes are decoded by the caller's thread only, never on rayon ([`BatchReader::into_inline_stream`]).
    inline: AtomicBool,
}

impl ScanShared {
    pub(super) fn new(metadata: ArrowReaderMetadata, batch_size: usize) -> Arc<Self> {
        Arc::new(ScanShared {
            metadata,
            batch_size,
            cancelled: AtomicBool::new(false),
            current: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            inline: AtomicBool::new(false),
        })
    }
}

/// A lane's decoder: built on first use, then moved out of the lane while a thread decodes.
enum Decoder {
    Pending(ProjectionMask),
    Ready(Box<ParquetRecordBatchReader>),
    Taken,
}

struct LaneState {
    decoder: Decoder,
    queue: VecDeque<Result<RecordBatch>>,
    /// A thread is decoding this lane (its decoder is taken).
    busy: bool,
    /// A rayon task for this lane is queued.
    scheduled: bool,
    /// The decoder ended (or failed: its error is the last item of the queue).
    done: bool,
}

/// One row group's share of one field group.
pub(super) struct Lane {
    state: Mutex<LaneState>,
    changed: Condvar,
    file: VirtualFile,
    row_group: usize,
    /// The position of the lane's row group among the scan's.
    ordinal: usize,
    /// The rows of the row group it reads, when not all ([`ScanBuilder::rows`](super::ScanBuilder::rows)).
    selection: Option<RowSelection>,
    shared: Arc<ScanShared>,
}

impl Lane {
    pub(super) fn new(
        shared: Arc<ScanShared>,
        file: VirtualFile,
        mask: ProjectionMask,
        row_group: usize,
        ordinal: usize,
        selection: Option<RowSelection>,
    ) -> Arc<Self> {
        Arc::new(Lane {
            state: Mutex::new(LaneState {
                decoder: Decoder::Pending(mask),
                queue: VecDeque::new(),
                busy: false,
                scheduled: false,
                done: false,
            }),
            changed: Condvar::new(),
            file,
            row_group,
            ordinal,
            selection,
            shared,
        })
    }

    /// The lane's state. No code panics while holding it, so a poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the queue has room: [`LANE_AHEAD`] batches, and for a row group after the current
    /// one, more while all lanes together hold less than [`AHEAD_BYTES`].
    fn has_room(&self, s: &LaneState) -> bool {
        s.queue.len() < LANE_AHEAD
            || (self.ordinal > self.shared.current.load(Ordering::Relaxed)
                && self.shared.queued_bytes.load(Ordering::Relaxed) < AHEAD_BYTES)
    }

    fn needs_work(&self, s: &LaneState) -> bool {
        !s.busy && !s.done && self.has_room(s)
    }

    /// Queues a rayon task to pump this lane unless one is queued or running, or the lane is full.
    fn schedule(self: &Arc<Self>) {
        if self.shared.inline.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut s = self.lock();
            if s.scheduled || !self.needs_work(&s) {
                return;
            }
            s.scheduled = true;
        }
        let lane = self.clone();
        rayon::spawn(move || {
            lane.lock().scheduled = false;
            lane.pump(usize::MAX);
        });
    }

    /// Decodes up to `max` batches (fewer if the queue fills or the decoder ends) unless another
    /// thread is decoding this lane. Returns whether it decoded anything.
    fn pump(&self, max: usize) -> bool {
        let mut decoder = {
            let mut s = self.lock();
            if !self.needs_work(&s) {
                return false;
            }
            s.busy = true;
            std::mem::replace(&mut s.decoder, Decoder::Taken)
        };
        let mut produced = 0;
        loop {
            let item = if self.shared.cancelled.load(Ordering::Relaxed) {
                None
            } else {
                self.decode_one(&mut decoder)
            };
            produced += 1;
            let mut s = self.lock();
            let stop = match item {
                None => {
                    s.done = true;
                    true
                }
                Some(Err(e)) => {
                    s.queue.push_back(Err(e));
                    s.done = true;
                    true
                }
                Some(Ok(b)) => {
                    self.shared
                        .queued_bytes
                        .fetch_add(b.get_array_memory_size(), Ordering::Relaxed);
                    s.queue.push_back(Ok(b));
                    !self.has_room(&s) || produced >= max
                }
            };
            if stop {
                s.busy = false;
                if !s.done {
                    s.decoder = std::mem::replace(&mut decoder, Decoder::Taken);
                }
            }
            drop(s);
            self.changed.notify_all();
            if stop {
                return true;
            }
        }
    }

    /// The next batch of the decoder, building it first if needed. A panic inside the Parquet
    /// decoder (input it did not expect) becomes a typed error and ends the lane.
    fn decode_one(&self, decoder: &mut Decoder) -> Option<Result<RecordBatch>> {
        if let Decoder::Pending(mask) = decoder {
            let built = crate::error::contain("column chunk", || {
                let mut builder =
                    ParquetRecordBatchReaderBuilder::new_with_metadata(self.file.clone(), self.shared.metadata.clone())
                        .with_projection(mask.clone())
                        .with_row_groups(vec![self.row_group])
                        .with_batch_size(self.shared.batch_size);
                if let Some(selection) = &self.selection {
                    builder = builder.with_row_selection(selection.clone());
                }
                builder.build().map_err(|e| Error::Parquet(e.to_string()))
            });
            match built {
                Ok(r) => *decoder = Decoder::Ready(Box::new(r)),
                Err(e) => return Some(Err(e)),
            }
        }
        let Decoder::Ready(reader) = decoder else {
            return Some(Err(Error::Poisoned));
        };
        match crate::error::contain("column chunk", || Ok(reader.next())) {
            Ok(None) => None,
            Ok(Some(Ok(b))) => Some(Ok(b)),
            Ok(Some(Err(e))) => Some(Err(self.typed(e))),
            Err(Error::Malformed { what, detail }) => Some(Err(Error::Malformed {
                what,
                detail: format!("row group {}: {detail}", self.row_group),
            })),
            Err(e) => Some(Err(e)),
        }
    }

    /// The typed error the virtual file recorded for a decoder error, if any.
    fn typed(&self, e: ArrowError) -> Error {
        self.file.take_error().unwrap_or_else(|| Error::Parquet(e.to_string()))
    }
}

/// Record batches of a scan. Implements [`RecordBatchReader`]; errors are
/// `ArrowError::ExternalError` wrapping a [`crate::Error`] (use [`BatchReader::next_batch`] to get
/// the typed error directly).
///
/// Row groups and fields are decoded in parallel on the current rayon pool, a few batches ahead
/// of the caller; batches come in file order and never span row groups.
pub struct BatchReader {
    /// Per selected row group, its lanes in output-column order; emptied once returned.
    lanes: Vec<Vec<Arc<Lane>>>,
    /// The row group being returned.
    current: usize,
    /// Row groups decoded at once, the current one included: at least two, more when a row group
    /// has fewer lanes than the pool has threads.
    in_flight: usize,
    schema: SchemaRef,
    shared: Arc<ScanShared>,
    failed: bool,
    /// What the lanes read from, and the byte ranges of each selected row group's chunks (for
    /// [`BatchReader::into_stream`], which awaits them before decoding).
    source: Arc<dyn ReadAt>,
    ranges: Vec<Vec<Range<u64>>>,
}

impl fmt::Debug for BatchReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchReader")
            .field("schema", &self.schema)
            .field("row_groups", &self.lanes.len())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl BatchReader {
    /// `lanes[r][g]`: row group r's decoder of field group g, all groups in output order.
    pub(super) fn new(
        lanes: Vec<Vec<Arc<Lane>>>,
        schema: SchemaRef,
        shared: Arc<ScanShared>,
        source: Arc<dyn ReadAt>,
        ranges: Vec<Vec<Range<u64>>>,
    ) -> Self {
        let groups = lanes.first().map_or(1, Vec::len).max(1);
        let threads = rayon::current_num_threads();
        let in_flight = threads.div_ceil(groups).clamp(2, MAX_ROW_GROUPS_IN_FLIGHT);
        BatchReader {
            lanes,
            current: 0,
            in_flight,
            schema,
            shared,
            failed: false,
            source,
            ranges,
        }
    }

    /// The next batch, with colvault's typed error. After an error the scan is over: later
    /// calls return `Ok(None)` (and the iterator `None`), and its decoders stop.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.failed {
            return Ok(None);
        }
        let result = self.next_inner();
        if result.is_err() {
            self.failed = true;
            self.shared.cancelled.store(true, Ordering::Relaxed);
        }
        result
    }

    fn next_inner(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let Some(lanes) = self.lanes.get(self.current) else {
                return Ok(None);
            };
            for lane in self.lanes[self.current..self.window_end()].iter().flatten() {
                lane.schedule();
            }
            let mut parts = Vec::with_capacity(lanes.len());
            for lane in lanes {
                parts.push(self.next_of(lane)?);
            }
            if parts.iter().all(Option::is_none) {
                // This row group is done: free its decoders and chunks.
                self.lanes[self.current] = Vec::new();
                self.current += 1;
                self.shared.current.store(self.current, Ordering::Relaxed);
                continue;
            }
            let mut columns = Vec::with_capacity(self.schema.fields().len());
            let mut rows = None;
            for part in parts {
                let b = part.ok_or_else(|| Error::integrity("column readers (they ended at different rows)"))?;
                if *rows.get_or_insert(b.num_rows()) != b.num_rows() {
                    return Err(Error::integrity(
                        "column readers (they returned batches of different lengths)",
                    ));
                }
                columns.extend(b.columns().iter().cloned());
            }
            let opts = RecordBatchOptions::new().with_row_count(rows);
            return RecordBatch::try_new_with_options(self.schema.clone(), columns, &opts)
                .map(Some)
                .map_err(|e| Error::Arrow(e.to_string()));
        }
    }

    /// The next batch of `lane`: from its queue, else decoded here, else (while another thread
    /// decodes it) after helping another lane or waiting for that thread.
    fn next_of(&self, lane: &Arc<Lane>) -> Result<Option<RecordBatch>> {
        loop {
            let mut s = lane.lock();
            if let Some(item) = s.queue.pop_front() {
                if let Ok(b) = &item {
                    lane.shared
                        .queued_bytes
                        .fetch_sub(b.get_array_memory_size(), Ordering::Relaxed);
                }
                let refill = s.queue.len() <= LANE_REFILL;
                drop(s);
                if refill {
                    lane.schedule();
                }
                return item.map(Some);
            }
            if s.done {
                return Ok(None);
            }
            if !s.busy {
                drop(s);
                lane.pump(1);
                continue;
            }
            drop(s);
            if self.help() {
                continue;
            }
            let s = lane.lock();
            drop(
                lane.changed
                    .wait_while(s, |s| s.queue.is_empty() && !s.done && s.busy)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }

    /// Decodes one batch of some lane in flight that has room, the current row group first.
    fn help(&self) -> bool {
        self.lanes[self.current..self.window_end()]
            .iter()
            .flatten()
            .any(|l| l.pump(1))
    }

    /// The end of the row groups in flight: [`Self::in_flight`] of them decode at once, so that
    /// the next row group's lanes fill the threads while the current one's finish. A lane holds
    /// a segment or two of its chunks (not whole chunks) and at most [`LANE_AHEAD`] decoded
    /// batches, or while all lanes queue less than [`AHEAD_BYTES`], more.
    fn window_end(&self) -> usize {
        (self.current + self.in_flight).min(self.lanes.len())
    }

    /// The chunks the next [`next_batch`](Self::next_batch) may read: those of the row groups in
    /// flight and of the one after them (which a finished row group lets in).
    fn upcoming_ranges(&self) -> Vec<Range<u64>> {
        let end = (self.window_end() + 1).min(self.ranges.len());
        self.ranges
            .get(self.current..end)
            .map(<[_]>::concat)
            .unwrap_or_default()
    }

    /// One step of [`into_stream`](Self::into_stream): awaits the bytes the next batch needs,
    /// then decodes it on the rayon pool, so no thread of the caller's runtime blocks on the
    /// network or on decoding. Consumes the reader and gives it back with the batch.
    async fn step(self) -> Result<(Self, Option<RecordBatch>)> {
        let ranges = self.upcoming_ranges();
        self.source.ready(&ranges).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            let mut reader = self;
            let got = reader.next_batch();
            let _ = tx.send(got.map(|b| (reader, b)));
        });
        rx.await
            .map_err(|_| Error::integrity("a decoding task (it ended without a result)"))?
    }

    /// The batches as an async [`Stream`](futures::Stream) (see [`BatchStream`]).
    pub fn into_stream(self) -> BatchStream {
        let schema = self.schema.clone();
        let inner = futures::stream::unfold(Some(self), |state| async move {
            match state?.step().await {
                Ok((reader, Some(b))) => Some((Ok(b), Some(reader))),
                Ok((_, None)) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        BatchStream {
            schema,
            inner: Box::pin(inner),
        }
    }

    /// The batches as an async [`Stream`](futures::Stream) decoded on the polling thread, one
    /// batch per poll, after its bytes are awaited (an object store's prefetched pieces): for an
    /// engine that already runs one stream per core (DataFusion's partitions), where handing each
    /// batch to rayon and back costs more than it gains and moves the decoded data between cores.
    /// A poll does the CPU work of one batch, as DataFusion's own Parquet scan does; on local
    /// storage it may also read the batch's chunk segments from the file (page cache reads).
    ///
    /// The stream yields to the executor ([`tokio::task::yield_now`]; outside tokio it wakes
    /// itself at once) before its first batch, once per row group (where DataFusion's Parquet
    /// scan awaits the row group's read), and before a batch once [`INLINE_YIELD_AFTER`] has
    /// passed since its last yield. Local reads never wait, so without these the stream would
    /// never return `Pending`, and the task driving it would keep its worker thread for the whole
    /// scan. Tokio runs a task that another wakes (the consumer of its batches, or a join's other
    /// partition when its shared build side is done) next on the waker's worker, from a slot no
    /// other worker steals from, and a task that yields waits on its own worker until that worker
    /// comes back to the scheduler. So:
    /// - with no yield, producer and consumer shared one core while the other idled, and TPC-H Q10
    ///   took 1.5 times as long in about half its runs;
    /// - with a yield per row group only, the two partitions of Q11's one-row-group `partsupp`
    ///   still ran one after the other on one worker (traced batch by batch), and Q11 took 1.12
    ///   times Parquet's time;
    /// - with a yield per batch, scans moved between cores batch by batch, and Q13 took 1.3 to 1.5
    ///   times as long.
    ///
    /// A yield every 2 ms brought Q11 to 0.86 and kept Q13 at 0.80 (`benches/sql_tpch.rs`, SF 1,
    /// 15 rounds).
    pub fn into_inline_stream(self) -> BatchStream {
        self.shared.inline.store(true, Ordering::Relaxed);
        let schema = self.schema.clone();
        // The row group and the time of the last yield.
        type Yielded = Option<(usize, Instant)>;
        let inner = futures::stream::unfold(
            (Some(self), None),
            |(state, last): (Option<Self>, Yielded)| async move {
                let mut reader = state?;
                let at = reader.current;
                let last = match last {
                    Some((rg, t)) if rg == at && t.elapsed() < INLINE_YIELD_AFTER => (rg, t),
                    _ => {
                        tokio::task::yield_now().await;
                        (at, Instant::now())
                    }
                };
                let ranges = reader.upcoming_ranges();
                reader.source.ready(&ranges).await;
                match reader.next_batch() {
                    Ok(Some(b)) => Some((Ok(b), (Some(reader), Some(last)))),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), (None, None))),
                }
            },
        );
        BatchStream {
            schema,
            inner: Box::pin(inner),
        }
    }

    /// All remaining batches.
    pub fn read_all(mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(b) = self.next_batch()? {
            out.push(b);
        }
        Ok(out)
    }
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        self.shared.cancelled.store(true, Ordering::Relaxed);
    }
}

impl Iterator for BatchReader {
    type Item = std::result::Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))
            .transpose()
    }
}

impl RecordBatchReader for BatchReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The batches of a scan as an async stream ([`BatchReader::into_stream`]): each batch's bytes
/// are awaited (an object store's prefetched pieces), then it is decoded on the rayon pool; the
/// polling thread never blocks. Dropping the stream stops its decoders.
pub struct BatchStream {
    schema: SchemaRef,
    inner: Pin<Box<dyn futures::Stream<Item = Result<RecordBatch>> + Send>>,
}

impl BatchStream {
    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl fmt::Debug for BatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchStream").finish_non_exhaustive()
    }
}

impl futures::Stream for BatchStream {
    type Item = Result<RecordBatch>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
