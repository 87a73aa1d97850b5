//! `colvault table ...`: create, list, drop, import, export, head, count, schema, add-column,
//! compact, history, expire-snapshots.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{new_null_array, RecordBatch, RecordBatchReader};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use clap::{ArgGroup, Subcommand};
use colvault::project::Project;
use colvault::table::{Table, TableWriteOptions};
use indicatif::ProgressBar;
use serde_json::{json, Value};

use super::context::KeyOpts;
use super::dataio::{
    conform, describe_field, open_source, parse_field, parse_schema, table_schema_of, CsvOptions, Format, Position,
    Sink, Source,
};
use super::error::{CliError, CliResult};
use super::output::{bar, print_json, size, spinner, thousands, time_ms};

fn schema_arg(s: &str) -> Result<Schema, String> {
    parse_schema(s)
}

fn delimiter_arg(s: &str) -> Result<u8, String> {
    match s {
        "\\t" | "tab" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!("{s:?}: a delimiter is one ASCII character (or \\t)")),
    }
}

#[derive(Subcommand, Debug)]
pub enum TableCmd {
    /// Create an empty table with a schema
    #[command(
        group(ArgGroup::new("source").required(true).args(["schema", "schema_from"])),
        after_help = "Schema syntax: NAME:TYPE[,NAME:TYPE...]; a column is nullable unless its type ends in `!`.\n\
                      Types: bool, int8/16/32/64, uint8/16/32/64, float32, float64, utf8, binary, date32, timestamp,\n\
                      timestamp(us,UTC), decimal(P,S), or an Arrow type name such as Int64.\n\n\
                      Examples:\n  colvault table create ./sales orders --schema \"id:int64!,customer:utf8,amount:decimal(18,2)\"\n  \
                      colvault table create ./sales orders --schema-from orders.parquet"
    )]
    Create {
        /// The project's directory
        project: PathBuf,
        /// The table's name: a letter, then letters, digits or underscores
        table: String,
        /// The columns, e.g. "id:int64!,name:utf8"
        #[arg(long, value_parser = schema_arg)]
        schema: Option<Schema>,
        /// Take the schema from a data file (CSV, Parquet, Arrow IPC, JSON lines)
        #[arg(long, value_name = "FILE")]
        schema_from: Option<PathBuf>,
        /// The format of --schema-from [default: from its extension]
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// List a project's tables
    List {
        project: PathBuf,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Drop a table and delete its files
    Drop { project: PathBuf, table: String },
    /// Append (or with --overwrite, replace) rows from a CSV, Parquet, Arrow IPC or JSON lines file, in one
    /// atomic commit; the table is created from the file's schema if it does not exist
    #[command(after_help = "Examples:\n  colvault table import ./sales orders orders.csv\n  \
                            colvault table import ./sales orders more.parquet\n  \
                            colvault table import ./sales events events.ndjson --format jsonl --overwrite")]
    Import {
        project: PathBuf,
        table: String,
        file: PathBuf,
        /// The file's format [default: from its extension]
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Replace the table's rows instead of appending
        #[arg(long)]
        overwrite: bool,
        /// CSV field delimiter
        #[arg(long, default_value = ",", value_parser = delimiter_arg)]
        delimiter: u8,
        /// The CSV file has no header line (columns are taken in the table's order)
        #[arg(long)]
        no_header: bool,
    },
    /// Write a table's rows to a CSV, Parquet, Arrow IPC or JSON lines file (`-`: stdout, CSV or JSON lines)
    #[command(after_help = "Examples:\n  colvault table export ./sales orders orders.parquet\n  \
                            colvault table export ./sales orders - --format csv --columns id,amount | head")]
    Export {
        project: PathBuf,
        table: String,
        file: PathBuf,
        /// The file's format [default: from its extension]
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Only these columns (comma-separated)
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// Export this retained version instead of the current one
        #[arg(long)]
        version: Option<u64>,
        /// CSV field delimiter
        #[arg(long, default_value = ",", value_parser = delimiter_arg)]
        delimiter: u8,
    },
    /// Print the first rows
    Head {
        project: PathBuf,
        table: String,
        /// How many rows
        #[arg(short = 'n', long, default_value_t = 10)]
        rows: usize,
        /// Only these columns (comma-separated)
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// Print the rows as a JSON array of objects
        #[arg(long)]
        json: bool,
    },
    /// Count the rows: authenticates every file's footer but reads only one column, so damage in
    /// other columns goes unseen; `table verify` reads every column
    Count {
        project: PathBuf,
        table: String,
        /// Trust the (authenticated) manifest's count instead of reading the files
        #[arg(long)]
        manifest: bool,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Read every column of every file of the table and check it (authenticated, or checksummed for a
    /// project without encryption); `project verify` does every table
    Verify {
        project: PathBuf,
        table: String,
        /// Also read every retained older snapshot, not only the current one
        #[arg(long)]
        all_versions: bool,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Print the table's columns
    Schema {
        project: PathBuf,
        table: String,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Add a nullable column; existing rows read it as null
    #[command(after_help = "Example:\n  colvault table add-column ./sales orders discount:float64")]
    AddColumn {
        project: PathBuf,
        table: String,
        /// NAME:TYPE, for example discount:float64
        column: String,
    },
    /// Rewrite small files into larger ones, in one commit
    Compact {
        project: PathBuf,
        table: String,
        /// Rows per file to aim for; files under half of it are compacted
        #[arg(long, default_value_t = 8 << 20)]
        file_rows: usize,
    },
    /// Show the table's retained versions
    History {
        project: PathBuf,
        table: String,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Forget old versions (their manifests are deleted; `project vacuum` then deletes unneeded files)
    #[command(
        group(ArgGroup::new("which").required(true).args(["keep_from", "older_than"])),
        after_help = "Examples:\n  colvault table expire-snapshots ./sales orders --keep-from 12\n  \
                      colvault table expire-snapshots ./sales orders --older-than 604800   # a week\n  \
                      colvault project vacuum ./sales --grace-seconds 0"
    )]
    ExpireSnapshots {
        project: PathBuf,
        table: String,
        /// Keep this version and newer ones
        #[arg(long, value_name = "VERSION")]
        keep_from: Option<u64>,
        /// Expire versions committed more than SECONDS ago (the current version is always kept)
        #[arg(long, value_name = "SECONDS")]
        older_than: Option<u64>,
    },
}

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

fn history_json(t: &Table) -> CliResult<Value> {
    Ok(t.history()?
        .iter()
        .map(|h| {
            json!({"version": h.version, "time": time_ms(h.timestamp_ms), "timestamp_ms": h.timestamp_ms,
                   "operation": h.operation, "files": h.files, "rows": h.rows})
        })
        .collect())
}

fn import(
    p: &Project,
    table: &str,
    file: &std::path::Path,
    format: Option<Format>,
    overwrite: bool,
    csv: CsvOptions,
) -> CliResult {
    let fmt = Format::resolve(format, file)?;
    let exists = p.list_tables()?.iter().any(|t| t == table);
    let target = if exists {
        Some(p.table(table)?.head()?.schema)
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
            p.create_table_from(table, schema, feed).map(|(_, info)| info)
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

pub fn run(cmd: TableCmd, opts: &KeyOpts) -> CliResult {
    // No table command creates a keystore or a root key: without one, plaintext projects work and
    // encrypted ones fail saying where colvault looked.
    let ctx = opts.open_existing()?;
    match cmd {
        TableCmd::Create {
            project,
            table,
            schema,
            schema_from,
            format,
        } => {
            let p = ctx.project(&project)?;
            let schema = match (schema, schema_from) {
                (Some(s), _) => Arc::new(s),
                (None, Some(f)) => {
                    let fmt = Format::resolve(format, &f)?;
                    let csv = CsvOptions {
                        delimiter: b',',
                        header: true,
                    };
                    table_schema_of(&open_source(&f, fmt, csv, None)?.schema)
                }
                (None, None) => unreachable!("clap requires one of --schema and --schema-from"),
            };
            let t = p.create_table(&table, schema.clone())?;
            println!("created table {} with {} column(s):", t.name(), schema.fields().len());
            for f in schema.fields() {
                println!("  {}", describe_field(f));
            }
        }
        TableCmd::List { project, json } => {
            let p = ctx.project(&project)?;
            let mut rows = Vec::new();
            for name in p.list_tables()? {
                let head = p.table(&name)?.head()?;
                let bytes: u64 = head.files.iter().map(|f| f.len).sum();
                rows.push((
                    name,
                    head.version,
                    head.files.len(),
                    head.rows(),
                    bytes,
                    head.schema.fields().len(),
                ));
            }
            if json {
                print_json(
                    &rows
                        .iter()
                        .map(|(n, v, f, r, b, c)| {
                            json!({"name": n, "version": v, "files": f, "rows": r, "bytes": b, "columns": c})
                        })
                        .collect(),
                )?;
            } else if rows.is_empty() {
                println!("project {} has no tables", p.settings().name);
            } else {
                println!(
                    "{:<28} {:>8} {:>8} {:>6} {:>14} {:>10}",
                    "TABLE", "VERSION", "COLUMNS", "FILES", "ROWS", "SIZE"
                );
                for (n, v, f, r, b, c) in &rows {
                    println!("{n:<28} {v:>8} {c:>8} {f:>6} {:>14} {:>10}", thousands(*r), size(*b));
                }
            }
        }
        TableCmd::Drop { project, table } => {
            let p = ctx.project(&project)?;
            p.drop_table(&table)?;
            println!("dropped table {table}");
        }
        TableCmd::Import {
            project,
            table,
            file,
            format,
            overwrite,
            delimiter,
            no_header,
        } => {
            let p = ctx.project(&project)?;
            let csv = CsvOptions {
                delimiter,
                header: !no_header,
            };
            import(&p, &table, &file, format, overwrite, csv)?;
        }
        TableCmd::Export {
            project,
            table,
            file,
            format,
            columns,
            version,
            delimiter,
        } => {
            let p = ctx.project(&project)?;
            let t = p.table(&table)?;
            let fmt = Format::resolve(format, &file)?;
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
            let mut sink = Sink::create(&file, fmt, &schema, delimiter)?;
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
        }
        TableCmd::Head {
            project,
            table,
            rows,
            columns,
            json,
        } => {
            let p = ctx.project(&project)?;
            let t = p.table(&table)?;
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
        }
        TableCmd::Count {
            project,
            table,
            manifest,
            json,
        } => {
            let p = ctx.project(&project)?;
            let t = p.table(&table)?;
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
        }
        TableCmd::Verify {
            project,
            table,
            all_versions,
            json,
        } => {
            let p = ctx.project(&project)?;
            let results = super::project::verify_table(&p, &table, all_versions, json)?;
            if json {
                print_json(&json!({"ok": true, "tables": results}))?;
            } else {
                println!(
                    "table {table} verified: {} snapshot(s), every column of every file read and {}",
                    results.len(),
                    super::project::checked_word(&p)
                );
            }
        }
        TableCmd::Schema { project, table, json } => {
            let p = ctx.project(&project)?;
            let schema = p.table(&table)?.head()?.schema;
            if json {
                print_json(&json!({"fields": schema.fields().iter().map(|f| json!({
                    "name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()
                })).collect::<Vec<_>>()}))?;
            } else {
                for f in schema.fields() {
                    println!("{}", describe_field(f));
                }
            }
        }
        TableCmd::AddColumn { project, table, column } => {
            let field = parse_field(&column).map_err(CliError::usage)?;
            if !field.is_nullable() {
                return Err(CliError::usage(
                    "an added column must be nullable (rows written before have no value): drop the `!`",
                ));
            }
            let p = ctx.project(&project)?;
            let v = p.table(&table)?.add_column(field.clone())?;
            println!("added column {} to table {table}: version {v}", describe_field(&field));
        }
        TableCmd::Compact {
            project,
            table,
            file_rows,
        } => {
            let p = ctx.project(&project)?;
            let t = p.table(&table)?.with_write_options(TableWriteOptions {
                file_rows: file_rows.max(1),
                ..TableWriteOptions::default()
            });
            let before = t.head()?.files.len();
            let sp = spinner(&format!("compacting {table}"));
            let r = t.compact();
            sp.finish_and_clear();
            match r? {
                Some(v) => println!(
                    "compacted table {table}: {before} file(s) -> {}, version {v}",
                    t.head()?.files.len()
                ),
                None => println!("table {table}: nothing to compact ({before} file(s))"),
            }
        }
        TableCmd::History { project, table, json } => {
            let p = ctx.project(&project)?;
            let t = p.table(&table)?;
            if json {
                print_json(&history_json(&t)?)?;
            } else {
                println!(
                    "{:>8}  {:<20}  {:<18} {:>6} {:>14}",
                    "VERSION", "TIME", "OPERATION", "FILES", "ROWS"
                );
                for h in t.history()? {
                    println!(
                        "{:>8}  {:<20}  {:<18} {:>6} {:>14}",
                        h.version,
                        time_ms(h.timestamp_ms),
                        h.operation,
                        h.files,
                        thousands(h.rows)
                    );
                }
            }
        }
        TableCmd::ExpireSnapshots {
            project,
            table,
            keep_from,
            older_than,
        } => {
            let p = ctx.project(&project)?;
            let t = p.table(&table)?;
            let n = match (keep_from, older_than) {
                (Some(v), _) => t.expire_snapshots(v)?,
                (None, Some(s)) => t.expire_older_than(Duration::from_secs(s))?,
                (None, None) => unreachable!("clap requires --keep-from or --older-than"),
            };
            let head = t.head()?;
            println!(
                "expired {n} version(s) of table {table}; retained versions {} to {}. \
                 `colvault project vacuum {}` deletes files no retained version needs",
                head.oldest_retained.max(1),
                head.version,
                project.display()
            );
        }
    }
    Ok(())
}
