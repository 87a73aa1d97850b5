//! The plaintext Parquet file that parquet's reader sees over a colvault file: sealed chunks read,
//! checked and opened on demand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use super::FileReader;
use crate::crypto::{plaintext_len, Algorithm, ChunkKind, ChunkOpener};
use crate::error::{Error, Result};
use crate::format::{ChunkEntry, ReadAt};

/// The plaintext Parquet file that parquet's reader sees: column chunk byte ranges map to sealed
/// chunks, read and opened on demand, on the calling thread.
#[derive(Clone)]
pub(super) struct VirtualFile {
    inner: Arc<VirtualInner>,
}

/// Opened chunks not yet served to their end, and the chunks already served.
#[derive(Default)]
struct ChunkCache {
    chunks: HashMap<(usize, usize), Bytes>,
    served: HashSet<(usize, usize)>,
}

/// Where a file's chunks are, in the file and in the virtual Parquet file: what every virtual
/// file of a scan shares.
pub(super) struct ChunkLayout {
    source: Arc<dyn ReadAt>,
    algorithm: Algorithm,
    entries: Vec<ChunkEntry>,
    leaves: usize,
    /// Virtual start of each column chunk -> (row group, leaf, virtual length).
    by_start: BTreeMap<u64, (usize, usize, u64)>,
    virtual_len: u64,
}

impl ChunkLayout {
    pub(super) fn of(reader: &FileReader) -> Arc<Self> {
        let mut by_start = BTreeMap::new();
        for (r, rg) in reader.parquet_metadata().row_groups().iter().enumerate() {
            for (l, col) in rg.columns().iter().enumerate() {
                let (start, len) = col.byte_range();
                by_start.insert(start, (r, l, len));
            }
        }
        Arc::new(ChunkLayout {
            source: reader.source.clone(),
            algorithm: reader.algorithm(),
            entries: reader.body.chunks.clone(),
            leaves: reader.body.leaves as usize,
            by_start,
            virtual_len: reader.file_len,
        })
    }
}

struct VirtualInner {
    layout: Arc<ChunkLayout>,
    openers: HashMap<usize, Arc<ChunkOpener>>,
    wanted_leaves: Vec<usize>,
    cache: Mutex<ChunkCache>,
    error: Mutex<Option<Error>>,
}

impl VirtualInner {
    fn open_chunk(&self, rg: usize, leaf: usize) -> Result<Bytes> {
        let layout = &self.layout;
        let entry = &layout.entries[rg * layout.leaves + leaf];
        let opener = self
            .openers
            .get(&leaf)
            .ok_or_else(|| Error::InvalidArgument(format!("column chunk {leaf} was not projected")))?;
        let len = usize::try_from(entry.len).map_err(|_| Error::integrity("chunk length"))?;
        let mut buf = layout.source.read_vec(entry.offset, len)?;
        let n = plaintext_len(layout.algorithm, buf.len())?;
        if !crate::crypto::ct_eq(blake3::hash(&buf[n..]).as_bytes(), &entry.tags_digest) {
            return Err(Error::integrity(format!(
                "row group {rg} column {leaf} chunk (tags differ from the footer)"
            )));
        }
        opener.open_here(rg as u32, ChunkKind::Data, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// The plaintext of chunk (rg, leaf). On a miss, opens every wanted chunk of the
    /// row group that is neither cached nor already served. A chunk leaves the cache once it has
    /// been served to its end, so each chunk is read and opened once, even when the decoder walks
    /// the leaves of a nested field across row groups one leaf at a time.
    fn chunk(&self, rg: usize, leaf: usize) -> Result<Bytes> {
        {
            let cache = self.cache.lock().map_err(|_| Error::Poisoned)?;
            if let Some(b) = cache.chunks.get(&(rg, leaf)) {
                return Ok(b.clone());
            }
        }
        let todo: Vec<usize> = {
            let cache = self.cache.lock().map_err(|_| Error::Poisoned)?;
            let mut todo: Vec<usize> = self
                .wanted_leaves
                .iter()
                .copied()
                .filter(|l| *l != leaf && !cache.served.contains(&(rg, *l)) && !cache.chunks.contains_key(&(rg, *l)))
                .collect();
            todo.push(leaf);
            todo
        };
        // On this thread: a lane's decoder never waits on other rayon jobs (see `batches`).
        let opened: Vec<(usize, Bytes)> = todo
            .iter()
            .map(|&l| self.open_chunk(rg, l).map(|b| (l, b)))
            .collect::<Result<_>>()?;
        let mut cache = self.cache.lock().map_err(|_| Error::Poisoned)?;
        let mut out = None;
        for (l, b) in opened {
            if l == leaf {
                out = Some(b.clone());
            }
            cache.chunks.insert((rg, l), b);
        }
        out.ok_or_else(|| Error::integrity("chunk cache"))
    }

    /// Records that chunk (rg, leaf) was served to its end and drops it from the cache.
    fn served(&self, rg: usize, leaf: usize) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.chunks.remove(&(rg, leaf));
            cache.served.insert((rg, leaf));
        }
    }

    fn bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let end = start + length as u64;
        let mut out: Vec<Bytes> = Vec::new();
        let mut at = start;
        while at < end {
            let (&cstart, &(rg, leaf, clen)) = self
                .layout
                .by_start
                .range(..=at)
                .next_back()
                .ok_or_else(|| Error::integrity(format!("no column chunk at virtual offset {at}")))?;
            if at >= cstart + clen {
                return Err(Error::integrity(format!("no column chunk at virtual offset {at}")));
            }
            let chunk = self.chunk(rg, leaf)?;
            let from = (at - cstart) as usize;
            let to = ((end.min(cstart + clen)) - cstart) as usize;
            out.push(chunk.slice(from..to));
            if to as u64 == clen {
                self.served(rg, leaf);
            }
            at = cstart + to as u64;
        }
        Ok(match out.len() {
            0 => Bytes::new(),
            1 => out.pop().expect("one"),
            _ => Bytes::from(out.concat()),
        })
    }
}

impl Length for VirtualFile {
    fn len(&self) -> u64 {
        self.inner.layout.virtual_len
    }
}

impl ChunkReader for VirtualFile {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // A reader over the rest of the chunk, for a page header: it does not count as serving the
        // chunk to its end (the page body comes next, through get_bytes).
        let located = self
            .inner
            .layout
            .by_start
            .range(..=start)
            .next_back()
            .map(|(&s, &v)| (s, v));
        let result = match located {
            Some((cstart, (rg, leaf, clen))) if start < cstart + clen => self
                .inner
                .chunk(rg, leaf)
                .map(|c| c.slice((start - cstart) as usize..clen as usize)),
            _ => Err(Error::integrity(format!("no column chunk at virtual offset {start}"))),
        };
        result.map(bytes::Buf::reader).map_err(|e| self.record(e))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.inner.bytes(start, length).map_err(|e| self.record(e))
    }
}

impl VirtualFile {
    /// A virtual file serving the chunks of `wanted_leaves` (each opened with its opener), with
    /// its own slot for the first typed error.
    pub(super) fn new(
        layout: Arc<ChunkLayout>,
        openers: HashMap<usize, Arc<ChunkOpener>>,
        wanted_leaves: Vec<usize>,
    ) -> Self {
        VirtualFile {
            inner: Arc::new(VirtualInner {
                layout,
                openers,
                wanted_leaves,
                cache: Mutex::new(ChunkCache::default()),
                error: Mutex::new(None),
            }),
        }
    }

    /// The first typed error this file recorded, if any (taken).
    pub(super) fn take_error(&self) -> Option<Error> {
        self.inner.error.lock().ok().and_then(|mut g| g.take())
    }

    /// Keeps the first typed error for the batch reader and hands parquet a message.
    fn record(&self, e: Error) -> ParquetError {
        let msg = e.to_string();
        if let Ok(mut slot) = self.inner.error.lock() {
            slot.get_or_insert(e);
        }
        ParquetError::General(msg)
    }
}
