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
//!
//! [`Error::Malformed`]: crate::error::Error::Malformed
//! [`contain`]: crate::error::contain

mod csv;
mod ipc;
mod jsonl;
mod limits;
mod parquet;
mod reader;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;

use crate::error::Result;

pub use self::csv::csv;
pub use self::ipc::ipc;
pub use self::jsonl::jsonl;
pub use self::limits::{
    batch_rows, check_schema, BATCH_ROWS, CELL_BUDGET, INFER_ROWS, MAX_COLUMNS, MAX_DEPTH, MAX_JSON_RECORD,
    MAX_JSON_VALUES, MAX_PAGE,
};
pub use self::parquet::parquet;

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
    /// header name the schema lacks is [`Error::SchemaMismatch`](crate::error::Error::SchemaMismatch).
    ByHeader(SchemaRef),
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
