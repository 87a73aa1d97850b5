//! `colvault sql`: SQL over a project's tables (DataFusion), one statement or an interactive
//! prompt.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use clap::{Args, ValueEnum};
use colvault::sql::SqlSession;
use futures::StreamExt;

use super::context::KeyOpts;
use super::dataio::{Format, Sink};
use super::error::{io_err, CliError, CliResult};

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    /// A table for people.
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON lines: one object per row.
    #[value(alias = "jsonl", alias = "ndjson")]
    Json,
    /// Apache Parquet (needs --output).
    Parquet,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    colvault sql ./sales \"SELECT city, count(*) FROM orders GROUP BY city\"\n  \
    colvault sql sales \"SELECT * FROM orders WHERE id > 100\" --format csv > big.csv\n  \
    colvault sql sales \"CREATE TABLE oslo AS SELECT * FROM orders WHERE city = 'Oslo'\"\n  \
    colvault sql sales \"INSERT INTO orders SELECT * FROM sales.staging\"   # one commit\n  \
    colvault sql sales \"SELECT * FROM orders\" --format parquet --output orders.parquet\n  \
    colvault sql sales                      # a prompt: statements end with ';'\n\n\
    Tables of PROJECT are named TABLE; every project of the catalog is a schema (PROJECT.TABLE).")]
pub struct SqlArgs {
    /// The project (its name, or its directory): its tables are the default schema
    project: PathBuf,
    /// The statement; without one, statements are read from stdin, each ended by ';'
    query: Option<String>,
    /// How results are printed
    #[arg(long, value_enum, default_value = "table")]
    format: SqlFormat,
    /// Write results to this file instead of stdout (needed for parquet)
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the query plan (logical and physical) instead of running the statement
    #[arg(long)]
    explain: bool,
    /// Run queries and INSERTs on the Ballista cluster whose scheduler is at URL
    /// (http://HOST:PORT, or HOST:PORT); this process plans them, with its own catalog and keys,
    /// and the executors read and write with theirs
    #[cfg(feature = "ballista")]
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
}

/// Where statements run: in this process, or on a cluster.
enum Engine {
    Local(SqlSession),
    #[cfg(feature = "ballista")]
    Cluster(colvault::sql::cluster::ClusterSession),
}

impl Engine {
    /// The statement's plan as text (for --explain).
    async fn explain(&self, sql: &str) -> CliResult<String> {
        match self {
            Engine::Local(session) => {
                let plan = session
                    .sql(sql)
                    .await?
                    .explain(false, false)
                    .map_err(colvault::sql::error_from_datafusion)?
                    .collect()
                    .await
                    .map_err(colvault::sql::error_from_datafusion)?;
                Ok(arrow::util::pretty::pretty_format_batches(&plan)?.to_string())
            }
            #[cfg(feature = "ballista")]
            Engine::Cluster(cluster) => {
                let plan = cluster.plan(sql).await?;
                let text = datafusion::physical_plan::displayable(plan.as_ref())
                    .indent(true)
                    .to_string();
                Ok(text)
            }
        }
    }

    /// Runs the statement; its result as a stream.
    async fn execute(&self, sql: &str) -> CliResult<datafusion::physical_plan::SendableRecordBatchStream> {
        match self {
            Engine::Local(session) => Ok(session
                .sql(sql)
                .await?
                .execute_stream()
                .await
                .map_err(colvault::sql::error_from_datafusion)?),
            #[cfg(feature = "ballista")]
            Engine::Cluster(cluster) => Ok(cluster.execute(sql).await?),
        }
    }
}

pub fn run(args: SqlArgs, opts: &KeyOpts) -> CliResult {
    if args.format == SqlFormat::Parquet && args.output.is_none() {
        return Err(CliError::usage("--format parquet needs --output FILE")
            .hint("colvault sql PROJECT \"SELECT ...\" --format parquet --output out.parquet"));
    }
    let ctx = opts.open_existing()?;
    let project = ctx.project(&args.project)?;
    let session = SqlSession::for_project(&project);
    #[cfg(feature = "ballista")]
    let session = match &args.cluster {
        Some(url) => Engine::Cluster(colvault::sql::cluster::ClusterSession::new(session, url)?),
        None => Engine::Local(session),
    };
    #[cfg(not(feature = "ballista"))]
    let session = Engine::Local(session);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| io_err("starting the SQL runtime", e))?;
    if let Some(q) = &args.query {
        return rt.block_on(statement(&session, q, &args));
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut splitter = Splitter::default();
    let prompt = |more: bool| {
        if interactive {
            eprint!("{}", if more { "      -> " } else { "colvault> " });
            let _ = std::io::stderr().flush();
        }
    };
    prompt(false);
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| io_err("reading statements from stdin", e))?;
        for s in splitter.push_line(&line) {
            match rt.block_on(statement(&session, &s, &args)) {
                Ok(()) => {}
                // At a prompt an error ends the statement, not the session.
                Err(e) if interactive => {
                    let _ = e.report();
                }
                Err(e) => return Err(e),
            }
        }
        prompt(splitter.pending());
    }
    if let Some(s) = splitter.finish() {
        rt.block_on(statement(&session, &s, &args))?;
    }
    Ok(())
}

/// Runs one statement and prints (or writes) its result.
async fn statement(session: &Engine, sql: &str, args: &SqlArgs) -> CliResult {
    if args.explain {
        println!("{}", session.explain(sql).await?);
        return Ok(());
    }
    let mut stream = session.execute(sql).await?;
    let schema = stream.schema();
    let next = |b: Option<datafusion::error::Result<RecordBatch>>| -> CliResult<Option<RecordBatch>> {
        b.transpose()
            .map_err(|e| colvault::sql::error_from_datafusion(e).into())
    };
    if args.format == SqlFormat::Table && args.output.is_none() {
        let mut out = Vec::new();
        while let Some(b) = next(stream.next().await)? {
            out.push(b);
        }
        if out.iter().all(|b| b.num_rows() == 0) {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            println!("(no rows; columns: {})", names.join(", "));
        } else {
            println!("{}", arrow::util::pretty::pretty_format_batches(&out)?);
        }
        return Ok(());
    }
    let format = match args.format {
        SqlFormat::Csv => Format::Csv,
        SqlFormat::Json => Format::Jsonl,
        SqlFormat::Parquet => Format::Parquet,
        SqlFormat::Table => {
            return Err(CliError::usage(
                "--format table prints to the terminal: drop --output, or choose csv, json or parquet",
            ))
        }
    };
    let path = args.output.clone().unwrap_or_else(|| PathBuf::from("-"));
    let mut sink = Sink::create(Path::new(&path), format, &schema, b',')?;
    loop {
        match next(stream.next().await) {
            Ok(Some(b)) => {
                if let Err(e) = sink.write(&b) {
                    sink.abandon();
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                sink.abandon();
                return Err(e);
            }
        }
    }
    sink.finish()
}

/// Cuts lines into statements at `;` outside quotes; `--` starts a comment to the end of the line.
#[derive(Default)]
struct Splitter {
    buf: String,
    quote: Option<char>,
}

impl Splitter {
    fn push_line(&mut self, line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match self.quote {
                Some(q) => {
                    self.buf.push(c);
                    if c == q {
                        self.quote = None;
                    }
                }
                None => match c {
                    '\'' | '"' => {
                        self.quote = Some(c);
                        self.buf.push(c);
                    }
                    '-' if chars.peek() == Some(&'-') => break,
                    ';' => {
                        let s = self.buf.trim();
                        if !s.is_empty() {
                            out.push(s.to_string());
                        }
                        self.buf.clear();
                    }
                    _ => self.buf.push(c),
                },
            }
        }
        self.buf.push('\n');
        out
    }

    /// Whether a statement has begun and not ended.
    fn pending(&self) -> bool {
        !self.buf.trim().is_empty()
    }

    /// A last statement not ended by `;`.
    fn finish(self) -> Option<String> {
        let s = self.buf.trim();
        (!s.is_empty()).then(|| s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::Splitter;

    #[test]
    fn statements_end_at_semicolons_outside_quotes() {
        let mut s = Splitter::default();
        assert!(s.push_line("SELECT 'a;b' AS x").is_empty());
        assert!(s.pending());
        assert_eq!(
            s.push_line("  ; SELECT 2; -- a comment; not a statement"),
            vec!["SELECT 'a;b' AS x", "SELECT 2"]
        );
        assert!(!s.pending());
        s.push_line("SELECT \"odd;name\" FROM t");
        assert_eq!(s.finish().as_deref(), Some("SELECT \"odd;name\" FROM t"));
    }
}
