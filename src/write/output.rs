//! Where a writer's bytes go: the virtual plaintext file parquet writes, out of which each column
//! chunk is sealed and written to the sink as soon as it is whole.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use parquet::arrow::arrow_writer::ArrowColumnChunk;
use parquet::file::writer::SerializedFileWriter;

use super::pq_err;
use crate::crypto::{ChunkKind, ChunkSealer};
use crate::error::{Error, Result};
use crate::format::footer::ChunkEntry;

/// A `Write` that parquet's file writer writes the virtual plaintext file into; colvault seals
/// and writes each chunk out of it as soon as the chunk is whole (see [`VirtualBuf`]).
#[derive(Clone, Default)]
pub(super) struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A row group whose column encoders are closed, waiting to be sealed and written.
pub(super) struct ClosedRowGroup {
    pub(super) index: u32,
    pub(super) chunks: Vec<ArrowColumnChunk>,
}

/// Length of parquet's magic at the start of the virtual file (colvault does not store it).
pub(super) const PARQUET_MAGIC_LEN: usize = 4;

/// Where a writer's bytes go: the parquet file writer that lays the chunks out in the virtual
/// plaintext file, the buffer it writes into, and the sink that gets them sealed.
pub(super) struct Output<W> {
    pub(super) pq: Option<SerializedFileWriter<SharedBuf>>,
    pub(super) virt: VirtualBuf,
    pub(super) file: FileSink<W>,
}

/// What parquet has written of the virtual file and colvault has not yet sealed: chunks are
/// sealed in place and written as soon as they are whole in it, and it is emptied (keeping its
/// allocation) whenever everything in it is written, so it holds a chunk or two.
pub(super) struct VirtualBuf {
    pub(super) shared: SharedBuf,
    /// Virtual offset of the buffer's first byte.
    pub(super) start: u64,
    /// Bytes at the buffer's front already sealed and written (at first, parquet's magic).
    pub(super) consumed: usize,
}

/// The sink, how much of the file is written, and the chunks written so far.
pub(super) struct FileSink<W> {
    pub(super) sink: W,
    pub(super) position: u64,
    pub(super) chunks: Vec<ChunkEntry>,
}

/// A chunk appended to the virtual file, not yet sealed: leaf, virtual start, length.
type Waiting = (usize, u64, usize);

impl<W: Write> Output<W> {
    /// Appends a closed row group to the virtual file, chunk by chunk; each chunk is sealed in
    /// place (on rayon when `parallel`, else on this thread) and written with its tags as soon as
    /// it is whole in the buffer (parquet's writer may hold back its last few KiB until the next
    /// chunk or the row group's end).
    pub(super) fn write_row_group(
        &mut self,
        group: ClosedRowGroup,
        sealers: &[Arc<ChunkSealer>],
        parallel: bool,
    ) -> Result<()> {
        let rg = group.index;
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut expected: Vec<(u64, u64)> = Vec::with_capacity(group.chunks.len());
        let pq = self.pq.as_mut().ok_or(Error::Poisoned)?;
        let mut rgw = pq.next_row_group().map_err(pq_err)?;
        let mut next = self.virt.start + self.virt.consumed as u64;
        for (leaf, chunk) in group.chunks.into_iter().enumerate() {
            let len = usize::try_from(chunk.close().metadata.compressed_size())
                .map_err(|_| Error::Parquet("a column chunk of negative length".into()))?;
            chunk.append_to_row_group(&mut rgw).map_err(pq_err)?;
            waiting.push_back((leaf, next, len));
            expected.push((next, len as u64));
            next += len as u64;
            self.virt
                .seal_whole(&mut waiting, &mut self.file, sealers, rg, parallel)?;
        }
        let rg_meta = rgw.close().map_err(pq_err)?;
        pq.flush().map_err(|e| Error::io("encoding a row group", e))?;
        self.virt
            .seal_whole(&mut waiting, &mut self.file, sealers, rg, parallel)?;
        let laid_out: Vec<(u64, u64)> = rg_meta.columns().iter().map(|c| c.byte_range()).collect();
        if !waiting.is_empty() || laid_out != expected {
            return Err(Error::Parquet(format!(
                "row group {rg}: parquet laid its chunks out at {laid_out:?}, colvault expected {expected:?}"
            )));
        }
        Ok(())
    }
}

impl VirtualBuf {
    /// Seals and writes, in order, every waiting chunk that is whole in the buffer.
    fn seal_whole<W: Write>(
        &mut self,
        waiting: &mut VecDeque<Waiting>,
        file: &mut FileSink<W>,
        sealers: &[Arc<ChunkSealer>],
        rg: u32,
        parallel: bool,
    ) -> Result<()> {
        let mut bytes = self.shared.0.lock().map_err(|_| Error::Poisoned)?;
        while let Some(&(leaf, at, len)) = waiting.front() {
            if bytes.len() < self.consumed + len {
                break;
            }
            let here = self.start + self.consumed as u64;
            if at != here {
                return Err(Error::Parquet(format!(
                    "column chunk {leaf} is at {here}, colvault expected it at {at}"
                )));
            }
            let chunk = &mut bytes[self.consumed..self.consumed + len];
            let sealer = &sealers[leaf];
            let tags = if parallel {
                sealer.seal_detached(rg, ChunkKind::Data, chunk)?
            } else {
                sealer.seal_detached_here(rg, ChunkKind::Data, chunk)?
            };
            file.write_chunk(chunk, &tags)?;
            self.consumed += len;
            waiting.pop_front();
        }
        if !bytes.is_empty() && self.consumed >= bytes.len() {
            self.start += bytes.len() as u64;
            self.consumed -= bytes.len();
            bytes.clear();
        }
        Ok(())
    }
}

impl<W: Write> FileSink<W> {
    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.sink.write_all(bytes).map_err(|e| Error::io("writing a file", e))?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Writes a sealed chunk and its tags, and records it for the footer.
    fn write_chunk(&mut self, sealed: &[u8], tags: &[u8]) -> Result<()> {
        let offset = self.position;
        self.write(sealed)?;
        self.write(tags)?;
        self.chunks.push(ChunkEntry {
            offset,
            len: self.position - offset,
            tags_digest: *blake3::hash(tags).as_bytes(),
        });
        Ok(())
    }
}
