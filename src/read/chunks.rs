//! The plaintext Parquet file that parquet's reader sees over a colvault file: sealed chunks read,
//! checked and opened on demand, a segment at a time.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use super::pool::BufPool;
use super::FileReader;
use crate::crypto::{plaintext_len, Algorithm, ChunkKind, ChunkOpener, SEGMENT_LEN};
use crate::error::{Error, Result};
use crate::format::{ChunkEntry, ReadAt};

/// The plaintext Parquet file that parquet's reader sees: column chunk byte ranges map to sealed
/// chunks, read and opened on demand, on the calling thread.
#[derive(Clone)]
pub(super) struct VirtualFile {
    inner: Arc<VirtualInner>,
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
    /// Recycled buffers for segments, small chunks and pages across segments.
    pool: Arc<BufPool>,
}

impl ChunkLayout {
    /// The `len` bytes at `offset` of the file, in a buffer from the pool.
    fn read_pooled(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = self.pool.take(len);
        self.source.read_into(offset, len, &mut buf)?;
        Ok(buf)
    }

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
            pool: BufPool::new(),
        })
    }
}

/// A chunk being served. A chunk of one segment (or an RC4 chunk, whose keystream runs over the
/// whole chunk) is read and opened whole, in one read. A longer one has its tags read and checked
/// against the footer first; then each segment is read and opened when parquet first asks for a
/// byte of it, and dropped once parquet asks for bytes past it (it reads a chunk front to back).
/// So a scan holds a segment or two per chunk rather than whole chunks, and each segment is
/// decrypted right before parquet decodes it, while it is in cache.
struct OpenChunk {
    rg: usize,
    leaf: usize,
    /// Where the sealed chunk starts in the file.
    offset: u64,
    plain_len: usize,
    /// The plaintext of a chunk opened whole.
    whole: Option<Bytes>,
    /// The tags of a chunk opened by segments, checked against the footer.
    tags: Vec<u8>,
    /// Opened segments not yet passed.
    segments: Mutex<BTreeMap<usize, Bytes>>,
}

impl OpenChunk {
    fn seg_len(&self) -> usize {
        match self.whole {
            Some(_) => self.plain_len.max(1),
            None => SEGMENT_LEN,
        }
    }
}

struct VirtualInner {
    layout: Arc<ChunkLayout>,
    openers: HashMap<usize, Arc<ChunkOpener>>,
    /// Chunks opened and not yet served to their end.
    chunks: Mutex<HashMap<(usize, usize), Arc<OpenChunk>>>,
    error: Mutex<Option<Error>>,
}

impl VirtualInner {
    fn opener(&self, leaf: usize) -> Result<&ChunkOpener> {
        self.openers
            .get(&leaf)
            .map(|o| o.as_ref())
            .ok_or_else(|| Error::InvalidArgument(format!("column chunk {leaf} was not projected")))
    }

    /// Chunk (rg, leaf): its tags checked (a chunk opened whole: read and opened).
    fn chunk(&self, rg: usize, leaf: usize) -> Result<Arc<OpenChunk>> {
        if let Some(c) = self.chunks.lock().map_err(|_| Error::Poisoned)?.get(&(rg, leaf)) {
            return Ok(c.clone());
        }
        let layout = &self.layout;
        let entry = &layout.entries[rg * layout.leaves + leaf];
        let opener = self.opener(leaf)?;
        let len = usize::try_from(entry.len).map_err(|_| Error::integrity("chunk length"))?;
        let plain_len = plaintext_len(layout.algorithm, len)?;
        let check_tags = |tags: &[u8]| {
            if crate::crypto::ct_eq(blake3::hash(tags).as_bytes(), &entry.tags_digest) {
                Ok(())
            } else {
                Err(Error::integrity(format!(
                    "row group {rg} column {leaf} chunk (tags differ from the footer)"
                )))
            }
        };
        let (whole, tags) = if plain_len <= SEGMENT_LEN || !opener.opens_segments() {
            let mut buf = layout.read_pooled(entry.offset, len)?;
            check_tags(&buf[plain_len..])?;
            opener.open_here(rg as u32, ChunkKind::Data, &mut buf)?;
            (Some(layout.pool.share(buf)), Vec::new())
        } else {
            let tags = layout
                .source
                .read_vec(entry.offset + plain_len as u64, len - plain_len)?;
            check_tags(&tags)?;
            (None, tags)
        };
        let chunk = Arc::new(OpenChunk {
            rg,
            leaf,
            offset: entry.offset,
            plain_len,
            whole,
            tags,
            segments: Mutex::new(BTreeMap::new()),
        });
        let mut chunks = self.chunks.lock().map_err(|_| Error::Poisoned)?;
        Ok(chunks.entry((rg, leaf)).or_insert(chunk).clone())
    }

    /// The plaintext of segment `i` of chunk `c`: read and opened on first use.
    fn segment(&self, c: &OpenChunk, i: usize) -> Result<Bytes> {
        if let Some(whole) = &c.whole {
            return Ok(whole.clone());
        }
        let mut segments = c.segments.lock().map_err(|_| Error::Poisoned)?;
        if let Some(b) = segments.get(&i) {
            return Ok(b.clone());
        }
        let start = i * SEGMENT_LEN;
        let n = SEGMENT_LEN.min(c.plain_len.saturating_sub(start));
        let t = self.layout.algorithm.tag_len();
        let tag = c
            .tags
            .get(i * t..(i + 1) * t)
            .ok_or_else(|| Error::integrity(format!("row group {} column {} segment {i}", c.rg, c.leaf)))?;
        let mut buf = self.layout.read_pooled(c.offset + start as u64, n)?;
        self.opener(c.leaf)?
            .open_segment(c.rg as u32, ChunkKind::Data, c.plain_len, i as u32, &mut buf, tag)?;
        let b = self.layout.pool.share(buf);
        segments.insert(i, b.clone());
        Ok(b)
    }

    /// Plaintext bytes `from..to` of chunk `c`. Segments before the one `from` falls in are dropped.
    fn range(&self, c: &OpenChunk, from: usize, to: usize) -> Result<Bytes> {
        if from >= to {
            return Ok(Bytes::new());
        }
        let seg = c.seg_len();
        let (first, last) = (from / seg, (to - 1) / seg);
        c.segments
            .lock()
            .map_err(|_| Error::Poisoned)?
            .retain(|&i, _| i >= first);
        if first == last {
            let base = first * seg;
            return Ok(self.segment(c, first)?.slice(from - base..to - base));
        }
        // A page across a segment boundary: the one copy this reader makes.
        let mut out = self.layout.pool.take(to - from);
        for i in first..=last {
            let base = i * seg;
            let bytes = self.segment(c, i)?;
            out.extend_from_slice(&bytes[from.max(base) - base..to.min(base + seg) - base]);
        }
        Ok(self.layout.pool.share(out))
    }

    /// Records that chunk (rg, leaf) was served to its end and drops it.
    fn served(&self, rg: usize, leaf: usize) {
        if let Ok(mut chunks) = self.chunks.lock() {
            chunks.remove(&(rg, leaf));
        }
    }

    /// The chunk holding virtual offset `at`: (its virtual start, the chunk).
    fn locate(&self, at: u64) -> Result<(u64, Arc<OpenChunk>)> {
        match self.layout.by_start.range(..=at).next_back() {
            Some((&start, &(rg, leaf, len))) if at < start + len => Ok((start, self.chunk(rg, leaf)?)),
            _ => Err(Error::integrity(format!(
                "virtual offset {at} (no column chunk lies there)"
            ))),
        }
    }

    fn bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let end = start + length as u64;
        let mut out: Vec<Bytes> = Vec::new();
        let mut at = start;
        while at < end {
            let (cstart, chunk) = self.locate(at)?;
            let clen = chunk.plain_len as u64;
            let from = (at - cstart) as usize;
            let to = (end.min(cstart + clen) - cstart) as usize;
            out.push(self.range(&chunk, from, to)?);
            if to == chunk.plain_len {
                self.served(chunk.rg, chunk.leaf);
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

/// A reader over the rest of a chunk from some offset, for a page header: it opens segments as it
/// goes, and reading it does not count as serving the chunk to its end (the page body comes next,
/// through `get_bytes`).
pub(super) struct ChunkRead {
    file: VirtualFile,
    chunk: Arc<OpenChunk>,
    /// Plaintext offset in the chunk of the byte after `current`.
    next: usize,
    current: Bytes,
}

impl Read for ChunkRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.current.is_empty() && self.next < self.chunk.plain_len {
            let seg = self.chunk.seg_len();
            let to = ((self.next / seg + 1) * seg).min(self.chunk.plain_len);
            self.current = self
                .file
                .inner
                .range(&self.chunk, self.next, to)
                .map_err(|e| std::io::Error::other(self.file.record(e)))?;
            self.next = to;
        }
        let n = buf.len().min(self.current.len());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

impl Length for VirtualFile {
    fn len(&self) -> u64 {
        self.inner.layout.virtual_len
    }
}

impl ChunkReader for VirtualFile {
    type T = ChunkRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let (cstart, chunk) = self.inner.locate(start).map_err(|e| self.record(e))?;
        Ok(ChunkRead {
            file: self.clone(),
            chunk,
            next: (start - cstart) as usize,
            current: Bytes::new(),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.inner.bytes(start, length).map_err(|e| self.record(e))
    }
}

impl VirtualFile {
    /// A virtual file serving the chunks of the leaves in `openers` (each opened with its opener),
    /// with its own slot for the first typed error.
    pub(super) fn new(layout: Arc<ChunkLayout>, openers: HashMap<usize, Arc<ChunkOpener>>) -> Self {
        VirtualFile {
            inner: Arc::new(VirtualInner {
                layout,
                openers,
                chunks: Mutex::new(HashMap::new()),
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
