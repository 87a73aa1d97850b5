//! `colvault table import`: rows from a CSV, Parquet, Arrow IPC or JSON lines file into a table, in
//! one atomic commit (the table created from the file's schema if it does not exist).

use std::sync::Arc;

use arrow::array::{new_null_array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use colvault::project::Project;
use colvault::table::TableOptions;
use indicatif::ProgressBar;

use super::dataio::{conform, open_source, table_schema_of, CsvOptions, Format, Position, Source};
use super::error::{CliError, CliResult};
use super::output::{bar, thousands};

/// Feeds a source's batches, fitted to the table's schema, into a commit. On an error it yields a
/// batch of another schema, which makes the library abort the commit before anything is committed.
struct Feed<'a> {
    src: Source,
    schema: SchemaRef,
    failed: &'a mut Option<CliError>,
    pb: &'a ProgressBar,
    done: bool,
}

impl Feed<'_> {
    fn fail(&mut self, e: CliError) -> Option<RecordBatch> {
        *self.failed = Some(e);
        self.done = true;
        let abort = Arc::new(Schema::new(vec![Field::new(
            "__colvault_import_aborted__",
            DataType::Null,
            true,
        )]));
        RecordBatch::try_new(abort, vec![new_null_array(&DataType::Null, 0)]).ok()
    }
}

impl Iterator for Feed<'_> {
    type Item = RecordBatch;
    fn next(&mut self) -> Option<RecordBatch> {
        if self.done {
            return None;
        }
        match self.src.batches.next()? {
            Err(e) => self.fail(e.into()),
            Ok(b) => match conform(&b, &self.schema) {
                Err(e) => self.fail(e),
                Ok(b) => {
                    match &self.src.progress {
                        Position::Bytes(p) => self.pb.set_position(p.load(std::sync::atomic::Ordering::Relaxed)),
                        Position::Rows => self.pb.inc(b.num_rows() as u64),
                    }
                    Some(b)
                }
            },
        }
    }
}

/// What `table import` was asked to do.
pub struct ImportArgs<'a> {
    pub table: &'a str,
    pub file: &'a std::path::Path,
    pub format: Option<Format>,
    pub overwrite: bool,
    pub csv: CsvOptions,
    /// Column keys, for a table the import creates (an existing table's are fixed: they must be
    /// the same or not given).
    pub options: TableOptions,
}

pub fn import(p: &Project, args: ImportArgs<'_>) -> CliResult {
    let ImportArgs {
        table,
        file,
        format,
        overwrite,
        csv,
        options,
    } = args;
    let fmt = Format::resolve(format, file)?;
    let exists = p.list_tables()?.iter().any(|t| t == table);
    let target = if exists {
        let t = p.table(table)?;
        let asked = options.column_keys();
        let has = t.column_keys();
        let same = asked.len() == has.len()
            && asked
                .iter()
                .all(|(c, k)| has.iter().any(|h| &h.column == c && &h.cmk == k));
        if !asked.is_empty() && !same {
            return Err(CliError::usage(format!(
                "table {table} exists, and its column keys are fixed when it is created ({}); drop --column-key to \
                 append to it",
                super::table::describe_column_keys(has)
            )));
        }
        let asked = options.partition_columns();
        if !asked.is_empty() && asked != t.partition_by() {
            let has = match t.partition_by() {
                [] => "it is not partitioned".to_string(),
                cols => format!("it is partitioned by {}", cols.join(", ")),
            };
            return Err(CliError::usage(format!(
                "table {table} exists, and its partition columns are fixed when it is created ({has}); drop \
                 --partition-by to append to it"
            )));
        }
        Some(t.head()?.schema)
    } else {
        None
    };
    let src = open_source(file, fmt, csv, target.as_ref())?;
    if src.schema.fields().is_empty() {
        return Err(CliError::data(format!(
            "{} has no columns (an empty file, or no header line): nothing to create table {table} from",
            file.display()
        ))
        .hint("a CSV file needs a header line naming its columns"));
    }
    let pb = bar(
        src.total,
        &format!("import {table}"),
        matches!(src.progress, Position::Bytes(_)),
    );
    let mut failed = None;
    let result = match target {
        Some(schema) => {
            let t = p.table(table)?;
            let feed = Feed {
                src,
                schema,
                failed: &mut failed,
                pb: &pb,
                done: false,
            };
            if overwrite {
                t.overwrite(feed)
            } else {
                t.append(feed)
            }
        }
        None => {
            // A new table and its first rows are one unit: on any failure no table is left.
            let schema = table_schema_of(&src.schema);
            let feed = Feed {
                src,
                schema: schema.clone(),
                failed: &mut failed,
                pb: &pb,
                done: false,
            };
            p.create_table_from_with(table, schema, options, feed)
                .map(|(_, info)| info)
        }
    };
    pb.finish_and_clear();
    let outcome = match (failed, result) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(e.into()),
        (None, Ok(info)) => Ok(info),
    };
    match outcome {
        Ok(info) => {
            println!(
                "{} {} rows into table {table} ({}), version {}, {} new file(s)",
                if overwrite { "wrote" } else { "imported" },
                thousands(info.rows_added),
                if exists {
                    "existing table"
                } else {
                    "created from the file's schema"
                },
                info.version,
                info.files_added
            );
            Ok(())
        }
        Err(e) => Err(CliError {
            message: format!(
                "import of {} failed, nothing was committed{}: {}",
                file.display(),
                if exists { "" } else { " and no table was created" },
                e.message
            ),
            ..e
        }),
    }
}
