//! JSON lines.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Seek};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

use super::limits::{batch_rows, check_schema, INFER_ROWS, MAX_COLUMNS, MAX_DEPTH, MAX_JSON_RECORD, MAX_JSON_VALUES};
use super::reader::{contained, malformed, rewind, Counting};
use super::{Import, Progress, SchemaFrom};
use crate::error::{contain, Error, Result};

/// JSON lines decoded between two batches at most (bytes).
const JSON_FLUSH_BYTES: usize = 1 << 20;

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
