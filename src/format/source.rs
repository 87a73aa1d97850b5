//! Positioned reads: what a [`crate::FileReader`] reads from.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};

/// Anything colvault can read a file from with positioned reads: a [`File`], [`Bytes`], a
/// `Vec<u8>`, or an [`Arc`] of one of them.
pub trait ReadAt: Send + Sync {
    /// The total length in bytes.
    fn len(&self) -> Result<u64>;
    /// Whether it holds no bytes.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` with the bytes at `offset`; fails if they are not all there.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// The `len` bytes at `offset`, in a new buffer (through [`read_into`](Self::read_into)).
    fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(offset, len, &mut buf)?;
        Ok(buf)
    }
    /// Replaces the contents of `buf` with the `len` bytes at `offset`, reusing its allocation.
    /// The default zero-fills `buf` and calls [`read_exact_at`](Self::read_exact_at); in-memory
    /// sources copy without zeroing first.
    fn read_into(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        buf.resize(len, 0);
        self.read_exact_at(offset, buf)
    }
    /// Tells the source which byte ranges are about to be read, so a remote one can fetch them
    /// ahead, coalesced and concurrently ([`crate::storage::ObjectReader`]). The default (local
    /// files, memory) does nothing.
    fn prefetch(&self, _ranges: &[std::ops::Range<u64>]) {}
    /// Resolves once reads of `ranges` will not wait for the network: for a remote source, when
    /// the bytes prefetched for them have arrived (fetching those still queued), so an async
    /// caller awaits the network instead of blocking a thread on it. Local sources are always
    /// ready. A fetch that fails here is reported by the read that needs the bytes.
    fn ready<'a>(&'a self, _ranges: &'a [std::ops::Range<u64>]) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

fn slice_range(data: &[u8], offset: u64, len: usize) -> Result<&[u8]> {
    let start = usize::try_from(offset).map_err(|_| Error::integrity("read offset"))?;
    start
        .checked_add(len)
        .filter(|&e| e <= data.len())
        .map(|end| &data[start..end])
        .ok_or_else(|| {
            Error::io(
                "reading",
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the data"),
            )
        })
}

fn slice_into(data: &[u8], offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    buf.extend_from_slice(slice_range(data, offset, len)?);
    Ok(())
}

fn slice_read(data: &[u8], offset: u64, buf: &mut [u8]) -> Result<()> {
    buf.copy_from_slice(slice_range(data, offset, buf.len())?);
    Ok(())
}

impl ReadAt for Bytes {
    fn len(&self) -> Result<u64> {
        Ok(Bytes::len(self) as u64)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        slice_read(self, offset, buf)
    }
    fn read_into(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        slice_into(self, offset, len, buf)
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> Result<u64> {
        Ok(Vec::len(self) as u64)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        slice_read(self, offset, buf)
    }
    fn read_into(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        slice_into(self, offset, len, buf)
    }
}

impl ReadAt for File {
    fn len(&self) -> Result<u64> {
        Ok(self
            .metadata()
            .map_err(|e| Error::io("reading file metadata", e))?
            .len())
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset).map_err(|e| Error::io("reading a file", e))
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn len(&self) -> Result<u64> {
        (**self).len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn read_into(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        (**self).read_into(offset, len, buf)
    }
    fn prefetch(&self, ranges: &[std::ops::Range<u64>]) {
        (**self).prefetch(ranges)
    }
    fn ready<'a>(&'a self, ranges: &'a [std::ops::Range<u64>]) -> futures::future::BoxFuture<'a, ()> {
        (**self).ready(ranges)
    }
}
