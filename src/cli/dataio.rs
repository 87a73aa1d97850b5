//! Data in and out: the `--schema` syntax, import and export formats (CSV, Parquet, Arrow IPC, JSON
//! lines), fitting batches to a table's schema, and an order-preserving checksum of table contents.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use clap::ValueEnum;

use super::error::{io_err, CliError, CliResult};

/// A file format for import and export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC file format (Feather v2); the stream format is read too.
    #[value(alias = "arrow", alias = "feather")]
    Ipc,
    /// JSON lines: one object per line.
    #[value(alias = "json", alias = "ndjson")]
    Jsonl,
}

impl Format {
    /// The format named by `path`'s extension, or by `--format`.
    pub fn resolve(given: Option<Format>, path: &Path) -> CliResult<Format> {
        if let Some(f) = given {
            return Ok(f);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        Ok(match ext.as_str() {
            "csv" | "tsv" | "txt" => Format::Csv,
            "parquet" | "pq" => Format::Parquet,
            "arrow" | "ipc" | "feather" | "arrows" => Format::Ipc,
            "json" | "jsonl" | "ndjson" => Format::Jsonl,
            _ => {
                return Err(CliError::usage(format!(
                    "cannot tell the format of {} from its extension",
                    path.display()
                ))
                .hint("pass --format csv|parquet|ipc|jsonl (extensions: .csv .parquet .arrow/.ipc .jsonl/.json)"))
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The --schema syntax.

/// Parses one type name of the `--schema` syntax.
pub fn parse_type(s: &str) -> Result<DataType, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase().replace(' ', "");
    let simple = match lower.as_str() {
        "bool" | "boolean" => Some(DataType::Boolean),
        "int8" | "i8" | "tinyint" => Some(DataType::Int8),
        "int16" | "i16" | "smallint" => Some(DataType::Int16),
        "int32" | "i32" | "int" | "integer" => Some(DataType::Int32),
        "int64" | "i64" | "long" | "bigint" => Some(DataType::Int64),
        "uint8" | "u8" => Some(DataType::UInt8),
        "uint16" | "u16" => Some(DataType::UInt16),
        "uint32" | "u32" => Some(DataType::UInt32),
        "uint64" | "u64" => Some(DataType::UInt64),
        "float32" | "f32" | "float" | "real" => Some(DataType::Float32),
        "float64" | "f64" | "double" => Some(DataType::Float64),
        "utf8" | "string" | "str" | "text" | "varchar" => Some(DataType::Utf8),
        "large_utf8" | "largeutf8" => Some(DataType::LargeUtf8),
        "binary" | "bytes" => Some(DataType::Binary),
        "date" | "date32" => Some(DataType::Date32),
        "date64" => Some(DataType::Date64),
        "timestamp" => Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
        _ => None,
    };
    if let Some(d) = simple {
        return Ok(d);
    }
    let args = |prefix: &str| -> Option<Vec<String>> {
        let rest = lower.strip_prefix(prefix)?.strip_prefix('(')?.strip_suffix(')')?;
        Some(rest.split(',').map(|a| a.to_string()).collect())
    };
    if let Some(a) = args("decimal").or_else(|| args("decimal128")) {
        let p = a.first().and_then(|p| p.parse::<u8>().ok());
        let s = a.get(1).map_or(Some(0), |s| s.parse::<i8>().ok());
        if let (Some(p), Some(s), true) = (p, s, a.len() <= 2) {
            if (1..=38).contains(&p) && s as i16 <= p as i16 {
                return Ok(DataType::Decimal128(p, s));
            }
        }
        return Err(format!(
            "{t:?}: decimal(P,S) needs a precision P of 1 to 38 and a scale S <= P"
        ));
    }
    if let Some(a) = args("timestamp") {
        let unit = match a.first().map(|s| s.as_str()) {
            Some("s") => TimeUnit::Second,
            Some("ms") => TimeUnit::Millisecond,
            Some("us") => TimeUnit::Microsecond,
            Some("ns") => TimeUnit::Nanosecond,
            _ => return Err(format!("{t:?}: timestamp(UNIT[,TZ]) takes a unit of s, ms, us or ns")),
        };
        // The time zone keeps its case: take it from the original text.
        let tz = t
            .find(',')
            .map(|i| t[i + 1..].trim().trim_end_matches(')').trim().to_string())
            .filter(|z| !z.is_empty());
        return Ok(DataType::Timestamp(unit, tz.map(Into::into)));
    }
    DataType::from_str(t).map_err(|_| {
        format!(
            "unknown type {t:?}: use bool, int8/16/32/64, uint8/16/32/64, float32, float64, utf8, binary, date32, \
             timestamp, timestamp(us,UTC), decimal(P,S), or an Arrow type name such as Int64"
        )
    })
}

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses one column of the `--schema` syntax: `name:type`, nullable unless it ends in `!` or
/// `not null`.
pub fn parse_field(spec: &str) -> Result<Field, String> {
    let spec = spec.trim();
    let (name, ty) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec:?} is not NAME:TYPE (for example id:int64)"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{spec:?} has an empty column name"));
    }
    let mut ty = ty.trim();
    let mut nullable = true;
    if let Some(t) = ty.strip_suffix('!') {
        ty = t;
        nullable = false;
    } else if ty.to_ascii_lowercase().ends_with(" not null") {
        ty = ty[..ty.len() - " not null".len()].trim_end();
        nullable = false;
    }
    Ok(Field::new(name, parse_type(ty)?, nullable))
}

/// Parses the `--schema` syntax: `id:int64!,name:utf8,amount:decimal(18,2)`.
pub fn parse_schema(s: &str) -> Result<Schema, String> {
    let fields = split_top(s)
        .into_iter()
        .filter(|f| !f.trim().is_empty())
        .map(parse_field)
        .collect::<Result<Vec<_>, _>>()?;
    if fields.is_empty() {
        return Err("the schema has no columns".into());
    }
    let mut seen = std::collections::HashSet::new();
    for f in &fields {
        if !seen.insert(f.name().clone()) {
            return Err(format!("column {} appears twice", f.name()));
        }
    }
    Ok(Schema::new(fields))
}

/// A schema as `name: type` text, one column a line.
pub fn describe_field(f: &Field) -> String {
    format!(
        "{}: {}{}",
        f.name(),
        f.data_type(),
        if f.is_nullable() { "" } else { " not null" }
    )
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// Batches read from a file (the library's bounded readers, [`colvault::import`]).
pub type Source = colvault::import::Import;
pub use colvault::import::{CsvOptions, Progress as Position};

fn open_file(path: &Path) -> CliResult<File> {
    File::open(path).map_err(|e| io_err(format!("opening {}", path.display()), e))
}

fn file_len(f: &File, path: &Path) -> CliResult<u64> {
    Ok(f.metadata()
        .map_err(|e| io_err(format!("reading {}", path.display()), e))?
        .len())
}

/// Opens `path` as `format`. With `target` (an existing table's schema) CSV and JSON are parsed
/// with the table's types; otherwise their schema is inferred from the first 100,000 records.
/// Every reader bounds its memory by what the input can hold ([`colvault::import`]).
pub fn open_source(path: &Path, format: Format, csv: CsvOptions, target: Option<&SchemaRef>) -> CliResult<Source> {
    use colvault::import::{self, SchemaFrom};
    let f = open_file(path)?;
    let total = file_len(&f, path)?;
    let schema = match (target, format) {
        (None, _) => SchemaFrom::Infer,
        (Some(t), Format::Csv) if csv.header => SchemaFrom::ByHeader(t.clone()),
        (Some(t), _) => SchemaFrom::Given(t.clone()),
    };
    let opened = match format {
        Format::Csv => import::csv(BufReader::new(f), total, csv, schema),
        Format::Jsonl => import::jsonl(f, total, schema),
        Format::Ipc => import::ipc(BufReader::new(f), total),
        Format::Parquet => import::parquet(f),
    };
    opened.map_err(|e| match e {
        colvault::Error::SchemaMismatch(m) => CliError::data(format!("{m} ({})", path.display()))
            .hint("add it first with `colvault table add-column PROJECT TABLE NAME:TYPE`"),
        other => CliError::from(other),
    })
}

/// The schema a new table gets from a file's schema: its fields, without file-level metadata.
pub fn table_schema_of(file: &Schema) -> SchemaRef {
    Arc::new(Schema::new(file.fields().clone()))
}

/// Fits a batch to `target`: columns taken by name, cast where the types differ, missing nullable
/// columns filled with nulls. A column the table does not have is refused (it would be lost).
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> CliResult<RecordBatch> {
    let schema = batch.schema();
    for f in schema.fields() {
        if target.field_with_name(f.name()).is_err() {
            return Err(
                CliError::data(format!("column {:?} is not in the table", f.name())).hint(
                    "add it first with `colvault table add-column PROJECT TABLE NAME:TYPE`, or drop it from the input",
                ),
            );
        }
    }
    let columns = target
        .fields()
        .iter()
        .map(|tf| -> CliResult<ArrayRef> {
            match schema.index_of(tf.name()) {
                Ok(i) => {
                    let col = batch.column(i);
                    if col.data_type() == tf.data_type() {
                        Ok(col.clone())
                    } else {
                        arrow::compute::cast(col, tf.data_type()).map_err(|e| {
                            CliError::data(format!(
                                "column {:?}: cannot convert {} to the table's type {}: {e}",
                                tf.name(),
                                col.data_type(),
                                tf.data_type()
                            ))
                        })
                    }
                }
                Err(_) if tf.is_nullable() => Ok(new_null_array(tf.data_type(), batch.num_rows())),
                Err(_) => Err(CliError::data(format!(
                    "the input has no column {:?}, which the table requires (not null)",
                    tf.name()
                ))),
            }
        })
        .collect::<CliResult<Vec<_>>>()?;
    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(target.clone(), columns, &opts).map_err(|e| {
        CliError::data(format!("the input does not fit the table's schema: {e}"))
            .hint("`colvault table schema PROJECT TABLE` shows the table's columns")
    })
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// A file being written: to a temporary file renamed into place on `finish`, or to stdout.
pub struct Sink {
    writer: SinkWriter,
    tmp: Option<PathBuf>,
    dest: Option<PathBuf>,
}

enum SinkWriter {
    Csv(arrow::csv::Writer<Box<dyn Write>>),
    Jsonl(arrow::json::LineDelimitedWriter<Box<dyn Write>>),
    Ipc(arrow::ipc::writer::FileWriter<Box<dyn Write>>),
    Parquet(parquet::arrow::ArrowWriter<File>),
}

impl Sink {
    /// Starts writing `schema` to `path` (`-`: stdout, CSV and JSON lines only) as `format`.
    pub fn create(path: &Path, format: Format, schema: &SchemaRef, delimiter: u8) -> CliResult<Sink> {
        let stdout = path == Path::new("-");
        if stdout && matches!(format, Format::Parquet | Format::Ipc) {
            return Err(CliError::usage(format!(
                "{format:?} output needs a file, not stdout (-)"
            )));
        }
        let (tmp, dest) = if stdout {
            (None, None)
        } else {
            let name = path
                .file_name()
                .ok_or_else(|| CliError::usage(format!("{} is not a file name", path.display())))?;
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".{}.tmp", std::process::id()));
            (Some(path.with_file_name(tmp_name)), Some(path.to_path_buf()))
        };
        let open = || -> CliResult<File> {
            let p = tmp.as_ref().expect("a file sink has a temporary path");
            // Exported rows are plaintext: the file is its owner's only, whatever the umask.
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let f = o.open(p).map_err(|e| io_err(format!("creating {}", p.display()), e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| io_err(format!("restricting {} to its owner", p.display()), e))?;
            }
            Ok(f)
        };
        let boxed = |f: File| -> Box<dyn Write> { Box::new(std::io::BufWriter::with_capacity(1 << 20, f)) };
        let out = |stdout: bool| -> CliResult<Box<dyn Write>> {
            Ok(if stdout {
                Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
            } else {
                boxed(open()?)
            })
        };
        let writer = match format {
            Format::Csv => SinkWriter::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_delimiter(delimiter)
                    .build(out(stdout)?),
            ),
            Format::Jsonl => SinkWriter::Jsonl(arrow::json::LineDelimitedWriter::new(out(stdout)?)),
            Format::Ipc => SinkWriter::Ipc(arrow::ipc::writer::FileWriter::try_new(boxed(open()?), schema)?),
            Format::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                SinkWriter::Parquet(parquet::arrow::ArrowWriter::try_new(
                    open()?,
                    schema.clone(),
                    Some(props),
                )?)
            }
        };
        Ok(Sink { writer, tmp, dest })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> CliResult {
        match &mut self.writer {
            SinkWriter::Csv(w) => w.write(batch)?,
            SinkWriter::Jsonl(w) => w.write(batch)?,
            SinkWriter::Ipc(w) => w.write(batch)?,
            SinkWriter::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }

    /// Finishes the file and moves it into place.
    pub fn finish(self) -> CliResult {
        let flush = |w: &mut dyn Write| w.flush().map_err(|e| io_err("writing the output", e));
        match self.writer {
            SinkWriter::Csv(w) => flush(&mut w.into_inner())?,
            SinkWriter::Jsonl(mut w) => {
                w.finish()?;
                flush(&mut w.into_inner())?
            }
            SinkWriter::Ipc(mut w) => {
                w.finish()?;
                flush(&mut w.into_inner()?)?
            }
            SinkWriter::Parquet(w) => {
                w.close()?;
            }
        }
        if let (Some(tmp), Some(dest)) = (&self.tmp, &self.dest) {
            std::fs::rename(tmp, dest).map_err(|e| io_err(format!("moving the output to {}", dest.display()), e))?;
        }
        Ok(())
    }

    /// Removes the temporary file of a sink that failed.
    pub fn abandon(self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checksum.

/// A checksum of a table's contents in row order, independent of how the rows are cut into
/// batches: one BLAKE3 stream per column fed with each value (nulls marked), then combined.
pub struct Checksum {
    columns: Vec<blake3::Hasher>,
    rows: u64,
}

const NULL_MARK: [u8; 1] = [0];
const VALUE_MARK: [u8; 1] = [1];

impl Checksum {
    pub fn new(columns: usize) -> Self {
        Checksum {
            columns: (0..columns).map(|_| blake3::Hasher::new()).collect(),
            rows: 0,
        }
    }

    pub fn update(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        for (h, col) in self.columns.iter_mut().zip(batch.columns()) {
            feed(h, col.as_ref());
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The combined digest, as hex.
    pub fn hex(&self) -> String {
        let mut all = blake3::Hasher::new();
        all.update(&self.rows.to_le_bytes());
        for h in &self.columns {
            all.update(h.finalize().as_bytes());
        }
        all.finalize().to_hex()[..32].to_string()
    }
}

fn feed(h: &mut blake3::Hasher, a: &dyn Array) {
    let dt = a.data_type();
    if let Some(width) = dt.primitive_width().filter(|_| dt.is_primitive()) {
        let data = a.to_data();
        let values = &data.buffers()[0].as_slice()[data.offset() * width..(data.offset() + data.len()) * width];
        if a.null_count() == 0 {
            h.update(values);
        } else {
            for i in 0..a.len() {
                if a.is_null(i) {
                    h.update(&NULL_MARK);
                } else {
                    h.update(&VALUE_MARK).update(&values[i * width..(i + 1) * width]);
                }
            }
        }
        return;
    }
    match dt {
        DataType::Utf8 => {
            for v in a.as_string::<i32>() {
                feed_bytes(h, v.map(str::as_bytes));
            }
        }
        DataType::LargeUtf8 => {
            for v in a.as_string::<i64>() {
                feed_bytes(h, v.map(str::as_bytes));
            }
        }
        DataType::Binary => {
            for v in a.as_binary::<i32>() {
                feed_bytes(h, v);
            }
        }
        DataType::Boolean => {
            for v in a.as_boolean() {
                h.update(&[match v {
                    None => 0,
                    Some(false) => 1,
                    Some(true) => 2,
                }]);
            }
        }
        _ => {
            let fmt = arrow::util::display::ArrayFormatter::try_new(a, &Default::default());
            for i in 0..a.len() {
                let s = match (&fmt, a.is_null(i)) {
                    (_, true) => None,
                    (Ok(f), false) => Some(f.value(i).to_string()),
                    (Err(_), false) => Some(String::new()),
                };
                feed_bytes(h, s.as_deref().map(str::as_bytes));
            }
        }
    }
}

fn feed_bytes(h: &mut blake3::Hasher, v: Option<&[u8]>) {
    match v {
        None => {
            h.update(&NULL_MARK);
        }
        Some(b) => {
            h.update(&VALUE_MARK).update(&(b.len() as u64).to_le_bytes()).update(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_syntax() {
        let s =
            parse_schema("id:int64!, name:utf8, amount:decimal(18,2), ts:timestamp(us,UTC), ok:bool not null").unwrap();
        assert_eq!(s.fields().len(), 5);
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert!(!s.field(0).is_nullable());
        assert!(s.field(1).is_nullable());
        assert_eq!(s.field(2).data_type(), &DataType::Decimal128(18, 2));
        assert_eq!(
            s.field(3).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(!s.field(4).is_nullable());
        assert!(parse_schema("id").is_err());
        assert!(parse_schema("id:nosuch").is_err());
        assert!(parse_schema("a:int64,a:utf8").is_err());
        assert_eq!(parse_type("Int64").unwrap(), DataType::Int64);
    }

    #[test]
    fn checksum_ignores_batch_boundaries() {
        let batches: Vec<_> = colvault::sample::SampleTable::new(1000, 3).batches(1000).collect();
        let mut a = Checksum::new(12);
        a.update(&batches[0]);
        let mut b = Checksum::new(12);
        b.update(&batches[0].slice(0, 333));
        b.update(&batches[0].slice(333, 667));
        assert_eq!(a.hex(), b.hex());
        let other: Vec<_> = colvault::sample::SampleTable::new(1000, 4).batches(1000).collect();
        let mut c = Checksum::new(12);
        c.update(&other[0]);
        assert_ne!(a.hex(), c.hex());
    }
}
