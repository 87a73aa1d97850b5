//! Reading other formats into record batches (what `colvault table import` reads): CSV, JSON lines,
//! Arrow IPC (file and stream) and Parquet, over input that is not trusted.
//!
//! Every reader bounds what it allocates by what its input can hold:
//! - no length or count read from the input sizes an allocation before it is checked against the
//!   bytes that remain (Arrow IPC message and body lengths, IPC footer blocks, Parquet footer,
//!   column chunk ranges and page headers, Thrift list counts);
//! - a schema has at most [`MAX_COLUMNS`] fields (nested ones counted) nested at most
//!   [`MAX_DEPTH`] deep;
//! - a batch holds at most [`CELL_BUDGET`] values (rows times leaf columns), so a wide input gets
//!   shorter batches instead of buffers of rows times columns;
//! - a JSON line is at most [`MAX_JSON_RECORD`] bytes and [`MAX_JSON_VALUES`] values;
//! - a Parquet page declares at most what its codec can expand its bytes to, and at most
//!   [`MAX_PAGE`] bytes; an Arrow IPC batch at most 8 rows per body byte beyond 65,536 rows;
//! - a panic in a decoder of a dependency becomes [`Error::Malformed`] ([`contain`]).
//!
//! What remains is proportional to the input: a batch of decoded values, a compressed Parquet page
//! expanded by at most its codec's ratio (`zstd` can reach about 32,768), one JSON line parsed.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::reader::{ChunkReader, Length};

use crate::error::{contain, Error, Result};
use crate::format::thrift;

/// Most fields a schema may have, nested fields counted.
pub const MAX_COLUMNS: usize = 10_000;
/// Deepest nesting of a field.
pub const MAX_DEPTH: usize = 32;
/// Most values (rows times leaf columns) in one batch.
pub const CELL_BUDGET: usize = 1 << 20;
/// Most rows in one batch.
pub const BATCH_ROWS: usize = 65_536;
/// Records (CSV, JSON lines) whose types schema inference looks at.
pub const INFER_ROWS: usize = 100_000;
/// Longest JSON line.
pub const MAX_JSON_RECORD: usize = 16 << 20;
/// Most values (scalars, arrays, objects, keys) in one JSON line.
pub const MAX_JSON_VALUES: usize = 1 << 18;
/// Largest uncompressed Parquet page.
pub const MAX_PAGE: usize = 256 << 20;
/// JSON lines decoded between two batches at most (bytes).
const JSON_FLUSH_BYTES: usize = 1 << 20;
/// The longest CSV first record (header) looked at when counting columns.
const MAX_CSV_HEADER: u64 = 16 << 20;

/// How far an import has got.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Bytes of the input read so far (shared with the reader), of [`Import::total`].
    Bytes(Arc<AtomicU64>),
    /// Rows: the consumer adds each batch's rows, of [`Import::total`].
    Rows,
}

/// Batches read from an input.
pub struct Import {
    /// The schema of the batches.
    pub schema: SchemaRef,
    /// The batches; after an error the iterator ends.
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch>>>,
    /// The progress total (bytes or rows, as `progress` says).
    pub total: u64,
    /// How progress is measured.
    pub progress: Progress,
}

impl std::fmt::Debug for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("schema", &self.schema)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// Options of a CSV input.
#[derive(Clone, Copy, Debug)]
pub struct CsvOptions {
    /// The field delimiter.
    pub delimiter: u8,
    /// Whether the first record is a header of column names.
    pub header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            header: true,
        }
    }
}

/// Where the schema of a CSV or JSON lines input comes from.
#[derive(Clone, Debug)]
pub enum SchemaFrom {
    /// Inferred from the first [`INFER_ROWS`] records.
    Infer,
    /// This schema, columns in order (CSV without a header, JSON lines).
    Given(SchemaRef),
    /// CSV with a header: the given schema's fields named by the header, in the header's order; a
    /// header name the schema lacks is [`Error::SchemaMismatch`].
    ByHeader(SchemaRef),
}

fn malformed(what: &'static str) -> impl Fn(ArrowError) -> Error {
    move |e| match e {
        ArrowError::IoError(msg, source) => Error::io(format!("reading the {what} ({msg})"), source),
        ArrowError::ExternalError(inner) => match inner.downcast::<Error>() {
            Ok(e) => *e,
            Err(other) => Error::malformed(what, other.to_string()),
        },
        other => Error::malformed(what, other.to_string()),
    }
}

/// Checks a schema's size: at most [`MAX_COLUMNS`] fields, nested at most [`MAX_DEPTH`] deep.
/// Returns its number of leaf columns.
pub fn check_schema(schema: &Schema, what: &'static str) -> Result<usize> {
    fn walk(f: &Field, depth: usize, fields: &mut usize, leaves: &mut usize, what: &'static str) -> Result<()> {
        *fields += 1;
        if *fields > MAX_COLUMNS {
            return Err(Error::malformed(what, format!("more than {MAX_COLUMNS} columns")));
        }
        if depth > MAX_DEPTH {
            return Err(Error::malformed(
                what,
                format!("columns nested deeper than {MAX_DEPTH}"),
            ));
        }
        let children: Vec<&Field> = match f.data_type() {
            DataType::List(c)
            | DataType::LargeList(c)
            | DataType::ListView(c)
            | DataType::LargeListView(c)
            | DataType::FixedSizeList(c, _)
            | DataType::Map(c, _) => vec![c.as_ref()],
            DataType::Struct(cs) => cs.iter().map(|c| c.as_ref()).collect(),
            DataType::Union(u, _) => u.iter().map(|(_, c)| c.as_ref()).collect(),
            DataType::Dictionary(_, v) => {
                return walk(
                    &Field::new("values", v.as_ref().clone(), true),
                    depth + 1,
                    fields,
                    leaves,
                    what,
                )
            }
            DataType::RunEndEncoded(_, v) => vec![v.as_ref()],
            _ => Vec::new(),
        };
        if children.is_empty() {
            *leaves += 1;
        }
        for c in children {
            walk(c, depth + 1, fields, leaves, what)?;
        }
        Ok(())
    }
    if schema.fields().is_empty() {
        return Err(Error::malformed(what, "no columns"));
    }
    let (mut fields, mut leaves) = (0, 0);
    for f in schema.fields() {
        walk(f, 1, &mut fields, &mut leaves, what)?;
    }
    Ok(leaves.max(1))
}

/// Rows per batch for `leaves` leaf columns: at most [`CELL_BUDGET`] values a batch.
pub fn batch_rows(leaves: usize) -> usize {
    (CELL_BUDGET / leaves.max(1)).clamp(1, BATCH_ROWS)
}

/// A reader that counts the bytes read (for progress) and knows the input's length.
struct Counting<R> {
    inner: R,
    pos: Arc<AtomicU64>,
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

fn rewind<R: Seek>(r: &mut R) -> Result<()> {
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

fn contained<I: Iterator<Item = Result<RecordBatch>> + 'static>(
    inner: I,
    what: &'static str,
) -> Box<dyn Iterator<Item = Result<RecordBatch>>> {
    Box::new(Contained {
        inner,
        what,
        done: false,
    })
}

// ---------------------------------------------------------------------------------------------
// CSV.

/// The number of fields of the first record, counted without allocating; more than
/// [`MAX_COLUMNS`] is refused before anything sizes itself by it.
fn csv_width<R: Read>(input: R, delimiter: u8) -> Result<usize> {
    let mut r = BufReader::new(input.take(MAX_CSV_HEADER));
    let (mut fields, mut quoted, mut any) = (1usize, false, false);
    loop {
        let buf = r.fill_buf().map_err(|e| Error::io("reading the CSV input", e))?;
        if buf.is_empty() {
            if !any {
                return Err(Error::malformed("CSV input", "the input is empty"));
            }
            return Ok(fields);
        }
        any = true;
        let n = buf.len();
        for &b in buf {
            match b {
                b'"' => quoted = !quoted,
                b'\n' | b'\r' if !quoted => return Ok(fields),
                d if d == delimiter && !quoted => {
                    fields += 1;
                    if fields > MAX_COLUMNS {
                        return Err(Error::malformed(
                            "CSV input",
                            format!("the first record has more than {MAX_COLUMNS} columns"),
                        ));
                    }
                }
                _ => {}
            }
        }
        r.consume(n);
    }
}

/// Reads CSV from `input` (`len` bytes, for progress).
pub fn csv<R: Read + Seek + 'static>(mut input: R, len: u64, opts: CsvOptions, schema: SchemaFrom) -> Result<Import> {
    const WHAT: &str = "CSV input";
    let err = malformed(WHAT);
    let width = csv_width(&mut input, opts.delimiter)?;
    rewind(&mut input)?;
    let fmt = arrow::csv::reader::Format::default()
        .with_header(opts.header)
        .with_delimiter(opts.delimiter);
    let schema: SchemaRef = match schema {
        SchemaFrom::Infer => {
            let s = contain(WHAT, || {
                fmt.infer_schema(BufReader::new(&mut input), Some(INFER_ROWS))
                    .map_err(&err)
            })?;
            Arc::new(s.0)
        }
        SchemaFrom::Given(t) => t,
        SchemaFrom::ByHeader(t) => {
            let (header, _) = contain(WHAT, || {
                fmt.infer_schema(BufReader::new(&mut input), Some(0)).map_err(&err)
            })?;
            let fields = header
                .fields()
                .iter()
                .map(|h| {
                    t.field_with_name(h.name()).cloned().map_err(|_| {
                        Error::SchemaMismatch(format!("column {:?} of the input is not in the table", h.name()))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Arc::new(Schema::new(fields))
        }
    };
    let leaves = check_schema(&schema, WHAT)?.max(width);
    rewind(&mut input)?;
    let pos = Arc::new(AtomicU64::new(0));
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_format(fmt)
        .with_batch_size(batch_rows(leaves))
        .build(Counting {
            inner: input,
            pos: pos.clone(),
        })
        .map_err(&err)?;
    Ok(Import {
        schema,
        batches: contained(reader.map(move |b| b.map_err(malformed(WHAT))), WHAT),
        total: len,
        progress: Progress::Bytes(pos),
    })
}

// ---------------------------------------------------------------------------------------------
// JSON lines.

/// Lines of at most [`MAX_JSON_RECORD`] bytes and [`MAX_JSON_VALUES`] values.
struct Lines<R> {
    input: BufReader<R>,
    line: Vec<u8>,
}

impl<R: Read> Lines<R> {
    /// The next non-blank line into `self.line`; false at the end.
    fn next_line(&mut self) -> Result<bool> {
        loop {
            self.line.clear();
            let n = (&mut self.input)
                .take(MAX_JSON_RECORD as u64 + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::io("reading the JSON lines input", e))?;
            if n == 0 {
                return Ok(false);
            }
            if self.line.len() > MAX_JSON_RECORD {
                return Err(Error::malformed(
                    "JSON lines input",
                    format!("a line longer than {MAX_JSON_RECORD} bytes"),
                ));
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let (mut values, mut quoted, mut escaped) = (1usize, false, false);
            for &b in &self.line {
                if quoted {
                    match (escaped, b) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => quoted = false,
                        _ => {}
                    }
                    continue;
                }
                match b {
                    b'"' => quoted = true,
                    b',' | b':' | b'[' | b'{' => values += 1,
                    _ => {}
                }
            }
            if values > MAX_JSON_VALUES {
                return Err(Error::malformed(
                    "JSON lines input",
                    format!("a line with more than {MAX_JSON_VALUES} values"),
                ));
            }
            return Ok(true);
        }
    }
}

/// The distinct field paths of the values inference has seen, so inference stops at
/// [`MAX_COLUMNS`] instead of growing a schema as wide as the input.
fn json_paths(v: &serde_json::Value, prefix: u64, depth: usize, seen: &mut HashSet<u64>) -> Result<()> {
    use std::hash::{Hash, Hasher};
    if depth > MAX_DEPTH {
        return Err(Error::malformed(
            "JSON lines input",
            format!("values nested deeper than {MAX_DEPTH}"),
        ));
    }
    let child = |key: &str| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (prefix, key).hash(&mut h);
        h.finish()
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = child(k);
                if seen.insert(p) && seen.len() > MAX_COLUMNS {
                    return Err(Error::malformed(
                        "JSON lines input",
                        format!("more than {MAX_COLUMNS} columns"),
                    ));
                }
                json_paths(v, p, depth + 1, seen)?;
            }
        }
        serde_json::Value::Array(a) => {
            let p = child("[]");
            for v in a {
                json_paths(v, p, depth + 1, seen)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads JSON lines (one object a line) from `input` (`len` bytes, for progress).
pub fn jsonl<R: Read + Seek + 'static>(mut input: R, len: u64, schema: SchemaFrom) -> Result<Import> {
    const WHAT: &str = "JSON lines input";
    let err = malformed(WHAT);
    let schema: SchemaRef = match schema {
        SchemaFrom::Given(t) | SchemaFrom::ByHeader(t) => t,
        SchemaFrom::Infer => {
            let mut lines = Lines {
                input: BufReader::new(&mut input),
                line: Vec::new(),
            };
            let mut seen = HashSet::new();
            let mut failed = None;
            let mut count = 0;
            let values = std::iter::from_fn(|| {
                if failed.is_some() || count >= INFER_ROWS {
                    return None;
                }
                count += 1;
                let r = lines.next_line().and_then(|more| {
                    if !more {
                        return Ok(None);
                    }
                    let v: serde_json::Value = serde_json::from_slice(&lines.line)
                        .map_err(|e| Error::malformed(WHAT, format!("line {count}: {e}")))?;
                    json_paths(&v, 0, 0, &mut seen)?;
                    Ok(Some(v))
                });
                match r {
                    Ok(v) => v.map(Ok),
                    Err(e) => {
                        let msg = e.to_string();
                        failed = Some(e);
                        Some(Err(ArrowError::ExternalError(msg.into())))
                    }
                }
            });
            let inferred = contain(WHAT, || {
                arrow::json::reader::infer_json_schema_from_iterator(values).map_err(&err)
            });
            if let Some(e) = failed {
                return Err(e);
            }
            Arc::new(inferred?)
        }
    };
    let leaves = check_schema(&schema, WHAT)?;
    rewind(&mut input)?;
    let rows = batch_rows(leaves);
    let decoder = contain(WHAT, || {
        arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(rows)
            .with_strict_mode(true)
            .build_decoder()
            .map_err(&err)
    })?;
    let pos = Arc::new(AtomicU64::new(0));
    let mut lines = Lines {
        input: BufReader::new(Counting {
            inner: input,
            pos: pos.clone(),
        }),
        line: Vec::new(),
    };
    let (mut decoder, mut pending, mut ended) = (decoder, false, false);
    let batches = std::iter::from_fn(move || -> Option<Result<RecordBatch>> {
        let mut fed = 0usize;
        loop {
            if !pending && !ended {
                match lines.next_line() {
                    Ok(true) => pending = true,
                    Ok(false) => ended = true,
                    Err(e) => return Some(Err(e)),
                }
            }
            let full = decoder.len() >= rows || fed >= JSON_FLUSH_BYTES;
            if ended || full {
                return match decoder.flush().map_err(malformed(WHAT)) {
                    Ok(Some(b)) => Some(Ok(b)),
                    Ok(None) if ended => None,
                    Ok(None) => continue,
                    Err(e) => Some(Err(e)),
                };
            }
            match decoder.decode(&lines.line).map_err(malformed(WHAT)) {
                Ok(n) if n == lines.line.len() => {
                    fed += n;
                    pending = false;
                }
                Ok(n) => {
                    // The decoder is full mid-line: flush, then feed the rest.
                    lines.line.drain(..n);
                    fed = JSON_FLUSH_BYTES;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    });
    Ok(Import {
        schema,
        batches: contained(batches, WHAT),
        total: len,
        progress: Progress::Bytes(pos),
    })
}

// ---------------------------------------------------------------------------------------------
// Arrow IPC.

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

// ---------------------------------------------------------------------------------------------
// Parquet.

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

/// The format of an input, for [`open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CSV.
    Csv,
    /// JSON lines.
    Jsonl,
    /// Arrow IPC, file or stream.
    Ipc,
    /// Parquet.
    Parquet,
}

/// Reads `bytes` as `format` (what the fuzz targets and tests call).
pub fn open_bytes(bytes: Bytes, format: Format, csv_opts: CsvOptions, schema: SchemaFrom) -> Result<Import> {
    let len = bytes.len() as u64;
    let cursor = || std::io::Cursor::new(bytes.clone());
    match format {
        Format::Csv => csv(cursor(), len, csv_opts, schema),
        Format::Jsonl => jsonl(cursor(), len, schema),
        Format::Ipc => ipc(cursor(), len),
        Format::Parquet => parquet(bytes),
    }
}
