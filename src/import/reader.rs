//! What every reader shares: Arrow errors mapped to [`Error`], a byte-counting reader for
//! progress, rewinding, and batch iterators that contain a dependency's panics.

use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;

use crate::error::{contain, Error, Result};

pub(super) fn malformed(what: &'static str) -> impl Fn(ArrowError) -> Error {
    move |e| match e {
        ArrowError::IoError(msg, source) => Error::io(format!("reading the {what} ({msg})"), source),
        ArrowError::ExternalError(inner) => match inner.downcast::<Error>() {
            Ok(e) => *e,
            Err(other) => Error::malformed(what, other.to_string()),
        },
        other => Error::malformed(what, other.to_string()),
    }
}

/// A reader that counts the bytes read (for progress) and knows the input's length.
pub(super) struct Counting<R> {
    pub(super) inner: R,
    pub(super) pos: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let p = self.inner.seek(to)?;
        self.pos.store(p, Ordering::Relaxed);
        Ok(p)
    }
}

pub(super) fn rewind<R: Seek>(r: &mut R) -> Result<()> {
    r.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("rewinding the input", e))
        .map(drop)
}

/// A batch iterator whose every step runs [`contain`]ed, and that ends after its first error.
struct Contained<I> {
    inner: I,
    what: &'static str,
    done: bool,
}

impl<I: Iterator<Item = Result<RecordBatch>>> Iterator for Contained<I> {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let inner = &mut self.inner;
        let r = contain(self.what, || inner.next().transpose()).transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

pub(super) fn contained<I: Iterator<Item = Result<RecordBatch>> + 'static>(
    inner: I,
    what: &'static str,
) -> Box<dyn Iterator<Item = Result<RecordBatch>>> {
    Box::new(Contained {
        inner,
        what,
        done: false,
    })
}
