//! Arrow IPC, file and stream.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;

use super::limits::{check_schema, BATCH_ROWS};
use super::reader::{contained, malformed, rewind};
use super::{Import, Progress};
use crate::error::{contain, Error, Result};

const CONTINUATION: [u8; 4] = [0xff; 4];

fn read_exact_vec<R: Read>(r: &mut R, n: usize, what: &'static str) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    r.read_exact(&mut v).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::malformed(what, "truncated"),
        _ => Error::io(format!("reading the {what}"), e),
    })?;
    Ok(v)
}

/// Reads Arrow IPC from `input` (`len` bytes): the file format if it starts with `ARROW1`, else
/// the stream format.
pub fn ipc<R: Read + Seek + 'static>(mut input: R, len: u64) -> Result<Import> {
    let mut head = [0u8; 6];
    let is_file = len >= 6 && input.read_exact(&mut head).is_ok() && &head == b"ARROW1";
    rewind(&mut input)?;
    if is_file {
        ipc_file(input, len)
    } else {
        ipc_stream(input, len)
    }
}

/// Rows an IPC batch of `body` bytes may have: 8 per byte, beyond 65,536 (run-end encoded and
/// null columns take no bytes per row, and would otherwise expand without bound on import).
fn check_ipc_rows(batch: &RecordBatch, body: usize, what: &'static str) -> Result<()> {
    let max = body.saturating_mul(8).saturating_add(BATCH_ROWS);
    if batch.num_rows() > max {
        return Err(Error::malformed(
            what,
            format!("a batch of {} rows in {body} bytes", batch.num_rows()),
        ));
    }
    Ok(())
}

/// One framed message of an IPC stream: `[continuation] u32 metadata length, metadata, body`,
/// every length checked against the bytes that remain before anything is allocated.
fn ipc_message<R: Read>(r: &mut R, pos: &mut u64, len: u64) -> Result<Option<(Vec<u8>, usize)>> {
    const WHAT: &str = "Arrow IPC stream";
    let remaining = |pos: u64| len.saturating_sub(pos);
    if remaining(*pos) == 0 {
        return Ok(None);
    }
    let mut prefix = read_exact_vec(r, 4, WHAT)?;
    *pos += 4;
    if prefix == CONTINUATION {
        let l = read_exact_vec(r, 4, WHAT)?;
        *pos += 4;
        prefix.extend_from_slice(&l);
    }
    let meta_len = u32::from_le_bytes(prefix[prefix.len() - 4..].try_into().expect("4 bytes")) as u64;
    if meta_len == 0 {
        return Ok(None);
    }
    if meta_len > remaining(*pos) {
        return Err(Error::malformed(
            WHAT,
            format!(
                "a message declares {meta_len} bytes of metadata, {} remain",
                remaining(*pos)
            ),
        ));
    }
    let meta = read_exact_vec(r, meta_len as usize, WHAT)?;
    *pos += meta_len;
    let message =
        arrow::ipc::root_as_message(&meta).map_err(|e| Error::malformed(WHAT, format!("message metadata: {e}")))?;
    let body_len = message.bodyLength();
    if body_len < 0 || body_len as u64 > remaining(*pos) {
        return Err(Error::malformed(
            WHAT,
            format!(
                "a message declares a body of {body_len} bytes, {} remain",
                remaining(*pos)
            ),
        ));
    }
    let body_len = body_len as usize;
    let mut framed = prefix;
    framed.extend_from_slice(&meta);
    drop(meta);
    let at = framed.len();
    framed.resize(at + body_len, 0);
    r.read_exact(&mut framed[at..]).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::malformed(WHAT, "truncated"),
        _ => Error::io("reading the Arrow IPC stream", e),
    })?;
    *pos += body_len as u64;
    Ok(Some((framed, body_len)))
}

fn ipc_stream<R: Read + 'static>(input: R, len: u64) -> Result<Import> {
    const WHAT: &str = "Arrow IPC stream";
    let err = malformed(WHAT);
    let progress = Arc::new(AtomicU64::new(0));
    let mut r = BufReader::new(input);
    let mut pos = 0u64;
    let mut decoder = arrow::ipc::reader::StreamDecoder::new();
    // The first message is the schema.
    let (framed, _) = ipc_message(&mut r, &mut pos, len)?.ok_or_else(|| Error::malformed(WHAT, "no schema message"))?;
    let mut buf = Buffer::from(framed);
    let first = contain(WHAT, || decoder.decode(&mut buf).map_err(&err))?;
    let schema = decoder
        .schema()
        .ok_or_else(|| Error::malformed(WHAT, "the first message is not a schema"))?;
    if first.is_some() || !buf.is_empty() {
        return Err(Error::malformed(WHAT, "the first message is not a schema"));
    }
    check_schema(&schema, WHAT)?;
    let shared = progress.clone();
    let batches = std::iter::from_fn(move || -> Option<Result<RecordBatch>> {
        loop {
            let (framed, body) = match ipc_message(&mut r, &mut pos, len) {
                Ok(Some(m)) => m,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            shared.store(pos, Ordering::Relaxed);
            let mut buf = Buffer::from(framed);
            match decoder.decode(&mut buf).map_err(malformed(WHAT)) {
                Ok(Some(b)) => return Some(check_ipc_rows(&b, body, WHAT).map(|_| b)),
                // A dictionary batch: go on to the next message.
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    });
    Ok(Import {
        schema,
        batches: contained(batches, WHAT),
        total: len,
        progress: Progress::Bytes(progress),
    })
}

fn ipc_file<R: Read + Seek + 'static>(mut input: R, len: u64) -> Result<Import> {
    const WHAT: &str = "Arrow IPC file";
    let err = malformed(WHAT);
    // "ARROW1" + 2 bytes of padding, ..., footer, i32 footer length, "ARROW1".
    if len < 8 + 10 {
        return Err(Error::malformed(WHAT, "truncated"));
    }
    input
        .seek(SeekFrom::Start(len - 10))
        .map_err(|e| Error::io("reading the Arrow IPC file", e))?;
    let tail = read_exact_vec(&mut input, 10, WHAT)?;
    if &tail[4..] != b"ARROW1" {
        return Err(Error::malformed(WHAT, "no ARROW1 magic at the end (truncated?)"));
    }
    let footer_len = i32::from_le_bytes(tail[..4].try_into().expect("4 bytes"));
    let data_end = len - 10;
    if footer_len < 0 || footer_len as u64 > data_end - 8 {
        return Err(Error::malformed(
            WHAT,
            format!("a footer of {footer_len} bytes in a {len}-byte file"),
        ));
    }
    let data_end = data_end - footer_len as u64;
    input
        .seek(SeekFrom::Start(data_end))
        .map_err(|e| Error::io("reading the Arrow IPC file", e))?;
    let footer_bytes = read_exact_vec(&mut input, footer_len as usize, WHAT)?;
    let footer =
        arrow::ipc::root_as_footer(&footer_bytes).map_err(|e| Error::malformed(WHAT, format!("footer: {e}")))?;
    let fb_schema = footer
        .schema()
        .ok_or_else(|| Error::malformed(WHAT, "the footer has no schema"))?;
    if !fb_schema.endianness().equals_to_target_endianness() {
        return Err(Error::malformed(WHAT, "big-endian data is not supported"));
    }
    let schema = Arc::new(contain(WHAT, || Ok(arrow::ipc::convert::fb_to_schema(fb_schema)))?);
    check_schema(&schema, WHAT)?;
    let version = footer.version();
    let check = |b: &arrow::ipc::Block| -> Result<arrow::ipc::Block> {
        let (off, meta, body) = (b.offset(), i64::from(b.metaDataLength()), b.bodyLength());
        let end = off.checked_add(meta).and_then(|e| e.checked_add(body));
        match end {
            Some(end) if off >= 8 && meta > 0 && body >= 0 && end as u64 <= data_end => Ok(*b),
            _ => Err(Error::malformed(
                WHAT,
                format!(
                    "a block of {meta} + {body} bytes at {off} does not lie within the file's {data_end} bytes of data"
                ),
            )),
        }
    };
    let dictionaries = footer
        .dictionaries()
        .map(|d| d.iter().map(&check).collect::<Result<Vec<_>>>())
        .transpose()?
        .unwrap_or_default();
    let blocks = footer
        .recordBatches()
        .ok_or_else(|| Error::malformed(WHAT, "the footer lists no record batches"))?
        .iter()
        .map(check)
        .collect::<Result<Vec<_>>>()?;
    drop(footer_bytes);
    let read_block = |input: &mut R, b: &arrow::ipc::Block| -> Result<Buffer> {
        input
            .seek(SeekFrom::Start(b.offset() as u64))
            .map_err(|e| Error::io("reading the Arrow IPC file", e))?;
        let n = b.metaDataLength() as usize + b.bodyLength() as usize;
        Ok(Buffer::from(read_exact_vec(input, n, WHAT)?))
    };
    let mut decoder = arrow::ipc::reader::FileDecoder::new(schema.clone(), version);
    for b in &dictionaries {
        let buf = read_block(&mut input, b)?;
        contain(WHAT, || decoder.read_dictionary(b, &buf).map_err(&err))?;
    }
    let progress = Arc::new(AtomicU64::new(0));
    let shared = progress.clone();
    let mut next = 0;
    let batches = std::iter::from_fn(move || -> Option<Result<RecordBatch>> {
        while let Some(b) = blocks.get(next) {
            next += 1;
            let r =
                read_block(&mut input, b).and_then(|buf| decoder.read_record_batch(b, &buf).map_err(malformed(WHAT)));
            shared.store(
                b.offset() as u64 + b.metaDataLength() as u64 + b.bodyLength() as u64,
                Ordering::Relaxed,
            );
            match r {
                Ok(Some(batch)) => return Some(check_ipc_rows(&batch, b.bodyLength() as usize, WHAT).map(|_| batch)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
        None
    });
    Ok(Import {
        schema,
        batches: contained(batches, WHAT),
        total: len,
        progress: Progress::Bytes(progress),
    })
}
