//! Parquet.

use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::reader::{ChunkReader, Length};

use super::limits::{batch_rows, check_schema, MAX_COLUMNS, MAX_PAGE};
use super::reader::{contained, malformed};
use super::{Import, Progress};
use crate::error::{contain, Error, Result};
use crate::format::thrift;

/// A [`ChunkReader`] that refuses any range past the end of its input before reading it (the
/// `parquet` crate sizes its buffer from the requested length first).
struct Bounded<T> {
    inner: Arc<T>,
    len: u64,
}

impl<T> Clone for Bounded<T> {
    fn clone(&self) -> Self {
        Bounded {
            inner: self.inner.clone(),
            len: self.len,
        }
    }
}

impl<T: ChunkReader> Bounded<T> {
    fn range_err(&self, start: u64, n: u64) -> parquet::errors::ParquetError {
        parquet::errors::ParquetError::General(format!(
            "a read of {n} bytes at {start} past the end of the {}-byte input",
            self.len
        ))
    }
}

impl<T: ChunkReader> Length for Bounded<T> {
    fn len(&self) -> u64 {
        self.len
    }
}

impl<T: ChunkReader> ChunkReader for Bounded<T> {
    type T = T::T;
    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        if start > self.len {
            return Err(self.range_err(start, 0));
        }
        self.inner.get_read(start)
    }
    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match start.checked_add(length as u64) {
            Some(end) if end <= self.len => self.inner.get_bytes(start, length),
            _ => Err(self.range_err(start, length as u64)),
        }
    }
}

/// The most a page compressed with `codec` can expand `compressed` bytes to (each codec's
/// format-given maximum ratio, with slack), capped at [`MAX_PAGE`].
fn max_uncompressed(codec: Compression, compressed: u64) -> u64 {
    let ratio = match codec {
        Compression::UNCOMPRESSED => 1,
        Compression::SNAPPY => 32,
        Compression::LZ4 | Compression::LZ4_RAW => 256,
        // A 4-byte zstd RLE block expands to 128 KiB.
        _ => 32_768,
    };
    compressed
        .saturating_mul(ratio)
        .saturating_add(1024)
        .min(MAX_PAGE as u64)
}

/// Checks every page header of a column chunk lying at `start..start + len`.
fn check_pages<T: ChunkReader>(input: &Bounded<T>, start: u64, len: u64, codec: Compression) -> Result<()> {
    const WHAT: &str = "Parquet input";
    let end = start + len;
    let mut pos = start;
    while pos < end {
        let mut window = (end - pos).min(64 << 10);
        let sizes = loop {
            let bytes = input
                .get_bytes(pos, window as usize)
                .map_err(|e| Error::malformed(WHAT, e.to_string()))?;
            match thrift::page_sizes(&bytes) {
                Ok(s) => break s,
                Err(e) if window == end - pos || window >= 16 << 20 => return Err(e),
                Err(_) => window = (window * 16).min(end - pos),
            }
        };
        let (c, u, v) = (sizes.compressed, sizes.uncompressed, sizes.num_values);
        let after = pos + sizes.header_len as u64;
        if c < 0 || u < 0 || v < 0 || after + c as u64 > end {
            return Err(Error::malformed(
                WHAT,
                format!("a page of {c} bytes at {pos} does not fit its column chunk"),
            ));
        }
        if u as u64 > max_uncompressed(codec, c as u64) {
            return Err(Error::malformed(
                WHAT,
                format!("a page of {c} bytes declares {u} bytes uncompressed ({codec:?})"),
            ));
        }
        if v as u64 > (u as u64).saturating_mul(8).max(1 << 20) {
            return Err(Error::malformed(
                WHAT,
                format!("a page of {u} bytes declares {v} values"),
            ));
        }
        pos = after + c as u64;
    }
    Ok(())
}

/// Reads Parquet from `input` (a [`File`](std::fs::File), [`Bytes`] ...).
pub fn parquet<T: ChunkReader + 'static>(input: T) -> Result<Import> {
    const WHAT: &str = "Parquet input";
    let pq_err = |e: parquet::errors::ParquetError| Error::malformed(WHAT, e.to_string());
    let len = input.len();
    let input = Bounded {
        inner: Arc::new(input),
        len,
    };
    if len < 12 {
        return Err(Error::malformed(WHAT, "truncated"));
    }
    let tail = input.get_bytes(len - 8, 8).map_err(pq_err)?;
    if &tail[4..] != b"PAR1" {
        return Err(Error::malformed(
            WHAT,
            "no PAR1 magic at the end (truncated, encrypted, or not Parquet)",
        ));
    }
    let meta_len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if meta_len > len - 12 {
        return Err(Error::malformed(
            WHAT,
            format!("a footer of {meta_len} bytes in a {len}-byte file"),
        ));
    }
    let meta = input.get_bytes(len - 8 - meta_len, meta_len as usize).map_err(pq_err)?;
    thrift::check_file_metadata(&meta)?;
    let metadata = contain(WHAT, || ParquetMetaDataReader::decode_metadata(&meta).map_err(pq_err))?;
    drop(meta);
    let leaves = metadata.file_metadata().schema_descr().num_columns();
    if leaves > MAX_COLUMNS {
        return Err(Error::malformed(WHAT, format!("more than {MAX_COLUMNS} columns")));
    }
    for rg in metadata.row_groups() {
        for col in rg.columns() {
            let start = col.dictionary_page_offset().unwrap_or(col.data_page_offset());
            let n = col.compressed_size();
            let fits = start >= 4 && n >= 0 && (start as u64).checked_add(n as u64).is_some_and(|e| e <= len - 8);
            if !fits {
                return Err(Error::malformed(
                    WHAT,
                    format!("a column chunk of {n} bytes at {start} does not lie within the file"),
                ));
            }
            check_pages(&input, start as u64, n as u64, col.compression())?;
        }
    }
    let rows = metadata.file_metadata().num_rows().max(0) as u64;
    let meta = contain(WHAT, || {
        ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new()).map_err(pq_err)
    })?;
    let schema = meta.schema().clone();
    check_schema(&schema, WHAT)?;
    let reader = contain(WHAT, || {
        ParquetRecordBatchReaderBuilder::new_with_metadata(input, meta)
            .with_batch_size(batch_rows(leaves))
            .build()
            .map_err(pq_err)
    })?;
    Ok(Import {
        schema,
        batches: contained(reader.map(move |b| b.map_err(malformed(WHAT))), WHAT),
        total: rows,
        progress: Progress::Rows,
    })
}
