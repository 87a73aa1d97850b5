//! Positioned reads of one object in an object store, with as few requests as the format allows.
//!
//! * Opening fetches the object's first 4 bytes (the magic) and its last 64 KiB (trailer,
//!   envelope and, usually, the whole footer) in two concurrent range requests: one round trip.
//!   When the length is not known (no manifest), the tail is a suffix request, which also tells
//!   the length. A footer longer than the tail costs one more request.
//! * [`ReadAt::prefetch`] takes every byte range a scan will read (the sealed chunks of the
//!   projected columns of the selected row groups), coalesces ranges less than 1 MiB apart (the
//!   gap DataFusion and `object_store` use) into requests of at most 8 MiB, and issues them in file
//!   order, at most 8 in flight and at most 64 MiB fetched and not yet read. Reads then take their
//!   bytes from those pieces, waiting for a piece in flight, so fetching overlaps decryption and
//!   decoding. A read of bytes whose piece is still queued (or that no prefetch covers) fetches
//!   them itself: a read never waits for budget that only its own progress could free.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{block_on, runtime, store_error};
use crate::error::{Error, Result};
use crate::format::ReadAt;

/// Bytes fetched from the end of an object when it is opened.
pub const TAIL_LEN: u64 = 64 * 1024;
/// Ranges closer than this are fetched in one request.
pub const COALESCE_GAP: u64 = 1024 * 1024;
/// Coalescing stops at requests of this size.
pub const MAX_REQUEST: u64 = 8 * 1024 * 1024;
/// Prefetch requests in flight at once.
pub const MAX_IN_FLIGHT: usize = 8;
/// Prefetched bytes fetched (or being fetched) and not yet read, at most.
pub const PREFETCH_WINDOW: u64 = 64 * 1024 * 1024;

/// One coalesced prefetch request.
enum Piece {
    Queued {
        end: u64,
        wanted: u64,
    },
    InFlight {
        end: u64,
        wanted: u64,
    },
    Ready {
        bytes: Bytes,
        wanted: u64,
        _permit: Option<OwnedSemaphorePermit>,
    },
    Failed {
        end: u64,
    },
}

impl Piece {
    fn end(&self, start: u64) -> u64 {
        match self {
            Piece::Queued { end, .. } | Piece::InFlight { end, .. } | Piece::Failed { end } => *end,
            Piece::Ready { bytes, .. } => start + bytes.len() as u64,
        }
    }
}

#[derive(Default)]
struct Pieces {
    by_start: BTreeMap<u64, Piece>,
}

struct Prefetch {
    pieces: Mutex<Pieces>,
    /// Signalled when a piece changes, for blocking reads ...
    arrived: Condvar,
    /// ... and for async waiters ([`ReadAt::ready`]).
    changed: Notify,
    closed: AtomicBool,
}

impl Prefetch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pieces> {
        self.pieces.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.arrived.notify_all();
        self.changed.notify_waiters();
    }

    /// Records the outcome of a fetch of the piece at `start` that a read took over: its bytes,
    /// or (failed) no piece, so the reads it would have served fetch for themselves.
    fn settle(&self, start: u64, wanted: u64, got: Result<Bytes>) {
        let mut g = self.lock();
        match got {
            Ok(bytes) => {
                g.by_start.insert(
                    start,
                    Piece::Ready {
                        bytes,
                        wanted,
                        _permit: None,
                    },
                );
            }
            Err(_) => {
                g.by_start.remove(&start);
            }
        }
        drop(g);
        self.wake();
    }
}

/// A [`ReadAt`] over one object of an object store (see the module documentation).
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    what: String,
    len: u64,
    head: Bytes,
    tail_start: u64,
    tail: Bytes,
    prefetch: Arc<Prefetch>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectReader({}, {} bytes)", self.what, self.len)
    }
}

async fn get_range(store: &Arc<dyn ObjectStore>, path: &ObjPath, r: Range<u64>, what: &str) -> Result<Bytes> {
    let want = r.end - r.start;
    let bytes = store
        .get_range(path, r.clone())
        .await
        .map_err(|e| store_error(format!("reading {what}"), e))?;
    if bytes.len() as u64 != want {
        return Err(Error::io(
            format!("reading {what}"),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("asked for bytes {}..{}, got {}", r.start, r.end, bytes.len()),
            ),
        ));
    }
    Ok(bytes)
}

impl ObjectReader {
    /// Opens `path` (blocking; see [`open_async`](Self::open_async)); `None` when there is no
    /// such object.
    pub fn open(store: Arc<dyn ObjectStore>, path: ObjPath, len: Option<u64>, what: String) -> Result<Option<Self>> {
        block_on(Self::open_async(store, path, len, what))
    }

    /// Opens `path`: fetches its magic and its tail (one round trip, see the module docs);
    /// `None` when there is no such object.
    pub async fn open_async(
        store: Arc<dyn ObjectStore>,
        path: ObjPath,
        len: Option<u64>,
        what: String,
    ) -> Result<Option<Self>> {
        let ctx = || format!("reading {what}");
        let found = match Self::fetch_ends(&store, &path, len).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(ctx(), e)),
        };
        let (len, head, tail_start, tail) = found;
        let short = |got: usize, want: u64| {
            Error::io(
                ctx(),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the object is shorter ({got} bytes read) than its recorded length {want}"),
                ),
            )
        };
        if tail_start + tail.len() as u64 != len {
            return Err(short(tail.len(), len));
        }
        Ok(Some(ObjectReader {
            store,
            path,
            what,
            len,
            head,
            tail_start,
            tail,
            prefetch: Arc::new(Prefetch {
                pieces: Mutex::new(Pieces::default()),
                arrived: Condvar::new(),
                changed: Notify::new(),
                closed: AtomicBool::new(false),
            }),
        }))
    }

    /// (length, first bytes, tail start, tail).
    async fn fetch_ends(
        store: &Arc<dyn ObjectStore>,
        path: &ObjPath,
        len: Option<u64>,
    ) -> object_store::Result<(u64, Bytes, u64, Bytes)> {
        Ok(match len {
            Some(0) => {
                store.head(path).await?;
                (0, Bytes::new(), 0, Bytes::new())
            }
            Some(len) if len <= TAIL_LEN => {
                let all = store.get_range(path, 0..len).await?;
                (len, all.slice(..all.len().min(4)), 0, all)
            }
            Some(len) => {
                let (head, tail) =
                    futures::try_join!(store.get_range(path, 0..4), store.get_range(path, len - TAIL_LEN..len))?;
                (len, head, len - TAIL_LEN, tail)
            }
            None => {
                let opts = GetOptions {
                    range: Some(GetRange::Suffix(TAIL_LEN)),
                    ..Default::default()
                };
                let suffix = async {
                    let r = store.get_opts(path, opts).await?;
                    let (size, start) = (r.meta.size, r.range.start);
                    Ok::<_, object_store::Error>((size, start, r.bytes().await?))
                };
                // The magic in parallel; an object shorter than 4 bytes fails that request, and
                // then its tail (the whole object) serves instead.
                let (tail, head) = futures::join!(suffix, store.get_range(path, 0..4));
                let (size, start, tail) = tail?;
                let head = match head {
                    Ok(h) => h,
                    Err(_) if start == 0 => tail.slice(..tail.len().min(4)),
                    Err(e) => return Err(e),
                };
                (size, head, start, tail)
            }
        })
    }

    /// Copies from what is already here (magic, tail), if it covers the range.
    fn copy_cached(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset + buf.len() as u64;
        if end <= self.head.len() as u64 {
            buf.copy_from_slice(&self.head[offset as usize..end as usize]);
            return true;
        }
        if offset >= self.tail_start && end <= self.tail_start + self.tail.len() as u64 {
            let s = (offset - self.tail_start) as usize;
            buf.copy_from_slice(&self.tail[s..s + buf.len()]);
            return true;
        }
        false
    }

    /// Copies from a prefetched piece, waiting for one in flight. `false` when no piece can serve.
    fn copy_prefetched(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset + buf.len() as u64;
        let mut g = self.prefetch.pieces.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let Some((&start, piece)) = g.by_start.range(..=offset).next_back() else {
                return false;
            };
            if piece.end(start) < end {
                return false;
            }
            match piece {
                Piece::InFlight { .. } => {
                    g = self.prefetch.arrived.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                Piece::Failed { .. } => {
                    // Its fetch failed: this read fetches its own bytes (and reports the error
                    // if the store still fails).
                    g.by_start.remove(&start);
                    return false;
                }
                Piece::Queued { end: piece_end, wanted } => {
                    // Not issued yet (the queue waits for budget, or has not reached it): this
                    // read fetches the whole piece now, for every read it serves, and the queue
                    // skips it. Outside the budget: a read never waits on its own progress.
                    let (piece_end, wanted) = (*piece_end, *wanted);
                    g.by_start.insert(start, Piece::InFlight { end: piece_end, wanted });
                    drop(g);
                    let (store, path, what) = (self.store.clone(), self.path.clone(), self.what.clone());
                    let got = block_on(async move { get_range(&store, &path, start..piece_end, &what).await });
                    self.prefetch.settle(start, wanted, got);
                    g = self.prefetch.lock();
                }
                Piece::Ready { bytes, wanted, .. } => {
                    let s = (offset - start) as usize;
                    buf.copy_from_slice(&bytes[s..s + buf.len()]);
                    let left = wanted.saturating_sub(buf.len() as u64);
                    if left == 0 {
                        g.by_start.remove(&start);
                    } else if let Some(Piece::Ready { wanted, .. }) = g.by_start.get_mut(&start) {
                        *wanted = left;
                    }
                    return true;
                }
            }
        }
    }
}

impl ObjectReader {
    /// Awaits the bytes of `r` (see [`ReadAt::ready`]): returns when the piece covering them is
    /// here, or when no piece covers them (a read then fetches for itself). A queued or failed
    /// piece is fetched now, on the IO runtime, as a blocking read would.
    async fn ready_one(&self, r: Range<u64>) {
        let end = r.end;
        if r.is_empty() || end > self.len {
            return;
        }
        if end <= self.head.len() as u64 || r.start >= self.tail_start {
            return; // magic or tail: here since the open
        }
        loop {
            let notified = self.prefetch.changed.notified();
            futures::pin_mut!(notified);
            notified.as_mut().enable();
            let take = {
                let mut g = self.prefetch.lock();
                let Some((&start, piece)) = g.by_start.range(..=r.start).next_back() else {
                    return;
                };
                if piece.end(start) < end {
                    return;
                }
                match piece {
                    Piece::Ready { .. } => return,
                    Piece::InFlight { .. } => None,
                    Piece::Queued { end, wanted } => Some((start, *end, *wanted)),
                    Piece::Failed { end } => Some((start, *end, end - start)),
                }
                .inspect(|&(start, end, wanted)| {
                    g.by_start.insert(start, Piece::InFlight { end, wanted });
                })
            };
            match take {
                None => notified.await,
                Some((start, piece_end, wanted)) => {
                    let (store, path, what) = (self.store.clone(), self.path.clone(), self.what.clone());
                    let got =
                        runtime::run(async move { get_range(&store, &path, start..piece_end, &what).await }).await;
                    let failed = got.is_err();
                    self.prefetch.settle(start, wanted, got);
                    if failed {
                        return;
                    }
                }
            }
        }
    }
}

/// Sorted, merged, coalesced requests for `ranges`: (request range, bytes wanted in it).
pub(crate) fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<(Range<u64>, u64)> {
    ranges.retain(|r| r.end > r.start);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<(Range<u64>, u64)> = Vec::new();
    for r in ranges {
        if let Some((last, wanted)) = out.last_mut() {
            let merged_len = r.end.max(last.end) - last.start;
            if r.start <= last.end + COALESCE_GAP && merged_len <= MAX_REQUEST {
                *wanted += r.end.saturating_sub(last.end.max(r.start));
                last.end = last.end.max(r.end);
                continue;
            }
        }
        let len = r.end - r.start;
        out.push((r, len));
    }
    out
}

impl ReadAt for ObjectReader {
    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                Error::io(
                    format!("reading {}", self.what),
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the object"),
                )
            })?;
        if buf.is_empty() || self.copy_cached(offset, buf) || self.copy_prefetched(offset, buf) {
            return Ok(());
        }
        let (store, path, what) = (self.store.clone(), self.path.clone(), self.what.clone());
        let bytes = block_on(async move { get_range(&store, &path, offset..end, &what).await })?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    fn ready<'a>(&'a self, ranges: &'a [Range<u64>]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Pieces are fetched concurrently by the prefetch queue; waiting on them in order
            // costs no extra time.
            for r in ranges {
                self.ready_one(r.clone()).await;
            }
        })
    }

    fn prefetch(&self, ranges: &[Range<u64>]) {
        let tail = self.tail_start..self.tail_start + self.tail.len() as u64;
        let wanted: Vec<Range<u64>> = ranges
            .iter()
            .filter(|r| r.end <= self.len && !(r.start >= tail.start && r.end <= tail.end))
            .cloned()
            .collect();
        let requests = coalesce(wanted);
        if requests.is_empty() {
            return;
        }
        {
            let mut g = self.prefetch.pieces.lock().unwrap_or_else(|e| e.into_inner());
            for (r, wanted) in &requests {
                g.by_start.entry(r.start).or_insert(Piece::Queued {
                    end: r.end,
                    wanted: *wanted,
                });
            }
        }
        let Ok(handle) = super::runtime::handle() else {
            return; // reads fetch for themselves
        };
        let (store, path, what, pf) = (
            self.store.clone(),
            self.path.clone(),
            self.what.clone(),
            self.prefetch.clone(),
        );
        let budget = Arc::new(Semaphore::new((PREFETCH_WINDOW / 1024) as usize));
        handle.spawn(async move {
            futures::stream::iter(requests)
                .for_each_concurrent(MAX_IN_FLIGHT, |(r, _)| {
                    let (store, path, what, pf, budget) =
                        (store.clone(), path.clone(), what.clone(), pf.clone(), budget.clone());
                    async move {
                        let kib = ((r.end - r.start).div_ceil(1024)).min(PREFETCH_WINDOW / 1024) as u32;
                        let Ok(permit) = budget.acquire_many_owned(kib).await else {
                            return;
                        };
                        {
                            let mut g = pf.pieces.lock().unwrap_or_else(|e| e.into_inner());
                            if pf.closed.load(Ordering::Relaxed) {
                                return;
                            }
                            match g.by_start.get_mut(&r.start) {
                                Some(p @ Piece::Queued { .. }) => {
                                    let Piece::Queued { end, wanted } = *p else {
                                        unreachable!()
                                    };
                                    *p = Piece::InFlight { end, wanted };
                                }
                                _ => return, // a read took it over
                            }
                        }
                        let got = get_range(&store, &path, r.clone(), &what).await;
                        let mut g = pf.pieces.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(p) = g.by_start.get_mut(&r.start) {
                            let wanted = match p {
                                Piece::InFlight { wanted, .. } => *wanted,
                                _ => 0,
                            };
                            *p = match got {
                                Ok(bytes) => Piece::Ready {
                                    bytes,
                                    wanted,
                                    _permit: Some(permit),
                                },
                                Err(_) => Piece::Failed { end: r.end },
                            };
                        }
                        drop(g);
                        pf.wake();
                    }
                })
                .await;
        });
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        self.prefetch.closed.store(true, Ordering::Relaxed);
        let mut g = self.prefetch.pieces.lock().unwrap_or_else(|e| e.into_inner());
        g.by_start.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_merges_near_ranges_and_caps_requests() {
        let got = coalesce(vec![10..20, 0..5, 30..40, 5_000_000..5_000_010]);
        assert_eq!(got, vec![(0..40, 25), (5_000_000..5_000_010, 10)]);
        let big = coalesce(vec![0..MAX_REQUEST, MAX_REQUEST..MAX_REQUEST + 1]);
        assert_eq!(big.len(), 2, "a merge past MAX_REQUEST starts a new request");
        assert_eq!(coalesce(vec![0..10, 5..15]), vec![(0..15, 15)]);
    }
}
