//! `colvault table export`, `head` and `count`: reading a table's rows out.

use std::path::Path;

use arrow::array::RecordBatchReader;
use colvault::table::Table;
use serde_json::{json, Value};

use super::dataio::{Format, Sink};
use super::error::{CliError, CliResult};
use super::output::{bar, print_json, thousands};

/// Writes the rows of `t` (at `version`, maybe only `columns`) to `file` in `format`.
pub fn export(
    t: &Table,
    file: &Path,
    format: Option<Format>,
    columns: Option<Vec<String>>,
    version: Option<u64>,
    delimiter: u8,
) -> CliResult {
    let table = t.name();
    let fmt = Format::resolve(format, file)?;
    let total = match version {
        Some(v) => t.snapshot(v)?.rows(),
        None => t.head()?.rows(),
    };
    let mut scan = t.scan().batch_size(65_536);
    if let Some(v) = version {
        scan = scan.version(v);
    }
    if let Some(c) = columns {
        scan = scan.columns(c);
    }
    let mut reader = scan.build()?;
    let schema = RecordBatchReader::schema(&reader);
    let mut sink = Sink::create(file, fmt, &schema, delimiter)?;
    let pb = bar(total, &format!("export {table}"), false);
    let mut rows = 0u64;
    let written = (|| -> CliResult {
        while let Some(b) = reader.next_batch()? {
            sink.write(&b)?;
            rows += b.num_rows() as u64;
            pb.set_position(rows);
        }
        Ok(())
    })();
    pb.finish_and_clear();
    match written {
        Ok(()) => sink.finish()?,
        Err(e) => {
            sink.abandon();
            return Err(e);
        }
    }
    if file.as_os_str() != "-" {
        println!(
            "exported {} rows of table {table} to {}",
            thousands(rows),
            file.display()
        );
    }
    Ok(())
}

/// Prints the first `rows` rows of `t`.
pub fn head(t: &Table, rows: usize, columns: Option<Vec<String>>, json: bool) -> CliResult {
    let mut scan = t.scan().batch_size(rows.clamp(1, 65_536));
    if let Some(c) = columns {
        scan = scan.columns(c);
    }
    let mut reader = scan.build()?;
    let schema = RecordBatchReader::schema(&reader);
    let mut out = Vec::new();
    let mut n = 0;
    while n < rows {
        let Some(b) = reader.next_batch()? else { break };
        let take = b.num_rows().min(rows - n);
        n += take;
        out.push(b.slice(0, take));
    }
    if json {
        let mut buf = Vec::new();
        {
            let mut w = arrow::json::ArrayWriter::new(&mut buf);
            for b in &out {
                w.write(b)?;
            }
            w.finish()?;
        }
        let v: Value = if buf.is_empty() {
            Value::Array(vec![])
        } else {
            serde_json::from_slice(&buf)?
        };
        print_json(&v)?;
    } else if out.is_empty() {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        println!("(no rows; columns: {})", names.join(", "));
    } else {
        println!("{}", arrow::util::pretty::pretty_format_batches(&out)?);
    }
    Ok(())
}

/// Counts the rows of `t`: from the manifest, or reading one column of every file.
pub fn count(t: &Table, manifest: bool, json: bool) -> CliResult {
    let table = t.name();
    let head = t.head()?;
    let first = head.schema.fields().first().map(|f| f.name().clone());
    let read = if manifest { None } else { first };
    let rows = match &read {
        None => head.rows(),
        Some(first) => {
            let mut reader = t
                .scan()
                .version(head.version)
                .columns([first.clone()])
                .batch_size(65_536)
                .build()?;
            let mut n = 0u64;
            while let Some(b) = reader.next_batch()? {
                n += b.num_rows() as u64;
            }
            if n != head.rows() {
                return Err(CliError::data(format!(
                    "table {table}: read {n} rows, the manifest lists {}",
                    head.rows()
                )));
            }
            n
        }
    };
    let checked = match &read {
        None => "the manifest's count; no data file was read".to_string(),
        Some(c) => format!(
            "every file's footer and column {c:?} only; other columns were not read (`colvault table \
             verify` reads every column)"
        ),
    };
    if json {
        print_json(&json!({"table": table, "version": head.version, "rows": rows, "checked": checked}))?;
    } else {
        println!("{rows}");
        eprintln!("note: checked {checked}");
    }
    Ok(())
}
