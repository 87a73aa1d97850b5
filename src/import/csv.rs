//! CSV.

use std::io::{BufRead, BufReader, Read, Seek};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};

use super::limits::{batch_rows, check_schema, INFER_ROWS, MAX_COLUMNS};
use super::reader::{contained, malformed, rewind, Counting};
use super::{CsvOptions, Import, Progress, SchemaFrom};
use crate::error::{contain, Error, Result};

/// The longest CSV first record (header) looked at when counting columns.
const MAX_CSV_HEADER: u64 = 16 << 20;

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
