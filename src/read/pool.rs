//! Segment buffers of a scan, recycled: a plaintext segment goes to parquet as [`Bytes`] whose
//! owner hands the buffer back when parquet drops the last slice of it.
//!
//! Fresh 1 MiB buffers cost a page fault per 4 KiB on first touch (the allocator returns them to
//! the kernel when freed); a profile of a one-column read of a wide string column put those faults
//! at about a fifth of the read. A recycled buffer is already mapped.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use crate::crypto::SEGMENT_LEN;

/// The capacity of a pooled buffer: a segment, or a chunk of one segment with its tag.
const BUF_CAPACITY: usize = SEGMENT_LEN + 64;

/// Idle buffers kept for reuse, at most: a few per thread.
fn max_idle() -> usize {
    2 * rayon::current_num_threads() + 2
}

/// Buffers for one scan's segments and chunks.
#[derive(Default)]
pub(super) struct BufPool {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(BufPool::default())
    }

    /// An empty buffer with room for `len` bytes: a recycled one when `len` fits a pooled buffer.
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        if len > BUF_CAPACITY {
            return Vec::with_capacity(len);
        }
        let recycled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        recycled.unwrap_or_else(|| Vec::with_capacity(BUF_CAPACITY))
    }

    /// `buf` as [`Bytes`] that give the buffer back to this pool once dropped.
    pub(super) fn share(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < BUF_CAPACITY || buf.capacity() > 2 * BUF_CAPACITY {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(self),
        })
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < max_idle() {
                idle.push(buf);
            }
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// A pooled buffer lent to [`Bytes`].
struct Pooled {
    buf: Vec<u8>,
    pool: Weak<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_slice_drops() {
        let pool = BufPool::new();
        let mut buf = pool.take(100);
        let first = buf.as_ptr();
        buf.extend_from_slice(&[7u8; 100]);
        let bytes = pool.share(buf);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a slice still holds it");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.idle(), 1);
        let again = pool.take(SEGMENT_LEN);
        assert_eq!(again.as_ptr(), first, "the same buffer, recycled");
        assert!(again.is_empty());
        // Too large to pool: a plain buffer that is not kept.
        let big = pool.take(3 * SEGMENT_LEN);
        drop(pool.share(big));
        assert_eq!(pool.idle(), 0);
        // A buffer outliving its pool is simply freed.
        let orphan = pool.share(pool.take(1));
        drop(pool);
        drop(orphan);
    }
}
