//! `colvault table ...`: create, list, drop, import, export, head, count, partitions,
//! drop-partition, schema, add-column, compact, history, expire-snapshots.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::Schema;
use clap::{ArgGroup, Subcommand};
use colvault::kms::KeyId;
use colvault::table::{ColumnKey, Table, TableOptions, TableWriteOptions};
use serde_json::{json, Value};

use super::context::KeyOpts;
use super::dataio::{describe_field, open_source, parse_field, parse_schema, table_schema_of, CsvOptions, Format};
use super::error::{CliError, CliResult};
use super::output::{print_json, size, spinner, thousands, time_ms};
use super::table_import::{import, ImportArgs};
use super::table_partitions::{drop_partition, partition_by_arg, partitions};
use super::table_read::{count, export, head};

fn schema_arg(s: &str) -> Result<Schema, String> {
    parse_schema(s)
}

/// `COLUMN=KEY_ID` (the last `=` separates them: key ids never hold one).
fn column_key_arg(s: &str) -> Result<(String, KeyId), String> {
    let (column, key) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: a column key is COLUMN=KEY_ID, e.g. salary=k-1a2b"))?;
    if column.is_empty() {
        return Err(format!("{s:?}: the column name is missing (COLUMN=KEY_ID)"));
    }
    Ok((column.to_string(), KeyId::new(key).map_err(|e| e.to_string())?))
}

fn table_options(keys: Vec<(String, KeyId)>, partition_by: Vec<String>) -> TableOptions {
    keys.into_iter()
        .fold(TableOptions::new(), |o, (column, key)| o.column_key(column, key))
        .partition_by(partition_by)
}

/// `column=key, ...`, or `none`.
pub fn describe_column_keys(keys: &[ColumnKey]) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    keys.iter()
        .map(|k| format!("{}={}", k.column, k.cmk))
        .collect::<Vec<_>>()
        .join(", ")
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
                      colvault table create ./sales orders --schema-from orders.parquet\n  \
                      colvault table create ./hr staff --schema \"id:int64!,name:utf8,salary:float64\" --column-key salary=KEY_ID\n  \
                      colvault table create ./sales events --schema \"ds:utf8!,region:utf8,amount:float64\" --partition-by ds,region"
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
        /// Keep a top-level column (all of its leaves) under a key of its own: COLUMN=KEY_ID
        /// (repeatable; the project must be encrypted and allowed to use the key)
        #[arg(long = "column-key", value_name = "COLUMN=KEY_ID", value_parser = column_key_arg)]
        column_keys: Vec<(String, KeyId)>,
        /// Partition the table by these columns (comma-separated, in order; strings, integers,
        /// dates or booleans): each data file holds one partition's rows, and scans and SQL skip the
        /// partitions their filters rule out
        #[arg(long, value_name = "COLUMN[,COLUMN...]", value_delimiter = ',', value_parser = partition_by_arg)]
        partition_by: Vec<String>,
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
                            colvault table import ./sales events events.ndjson --format jsonl --overwrite\n  \
                            colvault table import ./sales events events.csv --partition-by ds")]
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
        /// For a table the import creates: keep a top-level column under a key of its own,
        /// COLUMN=KEY_ID (repeatable)
        #[arg(long = "column-key", value_name = "COLUMN=KEY_ID", value_parser = column_key_arg)]
        column_keys: Vec<(String, KeyId)>,
        /// For a table the import creates: partition it by these columns (comma-separated)
        #[arg(long, value_name = "COLUMN[,COLUMN...]", value_delimiter = ',', value_parser = partition_by_arg)]
        partition_by: Vec<String>,
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
    /// List a partitioned table's partitions, with their files, rows and size
    Partitions {
        project: PathBuf,
        table: String,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Drop one partition of a partitioned table (its files leave the table in one commit; older
    /// versions keep them until expired and vacuumed)
    #[command(
        after_help = "Example:\n  colvault table drop-partition ./sales events ds=2024-01-01\n  \
                            colvault table drop-partition ./sales events ds=2024-01-01/region=eu\n\n\
                            A null value is written __NULL__."
    )]
    DropPartition {
        project: PathBuf,
        table: String,
        /// The partition: COLUMN=VALUE joined with '/', one per partition column
        partition: String,
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

fn history_json(t: &Table) -> CliResult<Value> {
    Ok(t.history()?
        .iter()
        .map(|h| {
            json!({"version": h.version, "time": time_ms(h.timestamp_ms), "timestamp_ms": h.timestamp_ms,
                   "operation": h.operation, "files": h.files, "rows": h.rows})
        })
        .collect())
}

/// The fields, each with the key of its own if it has one.
fn print_fields(schema: &Schema, keys: &[ColumnKey], indent: &str) {
    for f in schema.fields() {
        match keys.iter().find(|k| &k.column == f.name()) {
            Some(k) => println!("{indent}{}  (under its own key {})", describe_field(f), k.cmk),
            None => println!("{indent}{}", describe_field(f)),
        }
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
            column_keys,
            partition_by,
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
            let t = p.create_table_with(&table, schema.clone(), table_options(column_keys, partition_by))?;
            println!("created table {} with {} column(s):", t.name(), schema.fields().len());
            print_fields(&schema, t.column_keys(), "  ");
            if !t.partition_by().is_empty() {
                println!("partitioned by {}", t.partition_by().join(", "));
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
            column_keys,
            partition_by,
        } => {
            let p = ctx.project(&project)?;
            let csv = CsvOptions {
                delimiter,
                header: !no_header,
            };
            import(
                &p,
                ImportArgs {
                    table: &table,
                    file: &file,
                    format,
                    overwrite,
                    csv,
                    options: table_options(column_keys, partition_by),
                },
            )?;
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
            export(&p.table(&table)?, &file, format, columns, version, delimiter)?;
        }
        TableCmd::Head {
            project,
            table,
            rows,
            columns,
            json,
        } => head(&ctx.project(&project)?.table(&table)?, rows, columns, json)?,
        TableCmd::Count {
            project,
            table,
            manifest,
            json,
        } => count(&ctx.project(&project)?.table(&table)?, manifest, json)?,
        TableCmd::Partitions { project, table, json } => partitions(&ctx.project(&project)?.table(&table)?, json)?,
        TableCmd::DropPartition {
            project,
            table,
            partition,
        } => drop_partition(&ctx.project(&project)?.table(&table)?, &partition)?,
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
            let t = p.table(&table)?;
            let schema = t.head()?.schema;
            let key_of = |name: &str| {
                t.column_keys()
                    .iter()
                    .find(|k| k.column == name)
                    .map(|k| k.cmk.as_str())
            };
            if json {
                print_json(&json!({"fields": schema.fields().iter().map(|f| json!({
                    "name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable(),
                    "key_id": key_of(f.name())
                })).collect::<Vec<_>>(), "partition_by": t.partition_by()}))?;
            } else {
                print_fields(&schema, t.column_keys(), "");
                if !t.partition_by().is_empty() {
                    println!("partitioned by {}", t.partition_by().join(", "));
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
