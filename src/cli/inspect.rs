//! `colvault inspect FILE`: what a data file shows without keys (its envelope), and with the
//! project's keys its row groups, chunks and statistics.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::DataType;
use arrow::util::display::ArrayFormatter;
use clap::Args;
use colvault::crypto::FileId;
use colvault::format::envelope::KeyRole;
use colvault::kms::DataKeyEnvelope;
use colvault::kms::KeyId;
use colvault::read::read_envelope;
use colvault::table::Table;
use colvault::{Algorithm, FileReader, ReaderOptions};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use serde_json::{json, Value};

use super::context::KeyOpts;
use super::error::{io_err, CliError, CliResult};
use super::output::{print_json, size, thousands};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  colvault inspect ./sales/tables/<table id>/data/<file id>.cvlt\n  \
                        colvault inspect ./sales/tables/<table id>/data/<file id>.cvlt --project ./sales"
)]
pub struct InspectArgs {
    /// A colvault data file (PROJECT/tables/TABLE_ID/data/*.cvlt)
    pub file: PathBuf,
    /// The project the file belongs to: with its key, also row groups, chunks and statistics
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<PathBuf>,
    /// The file's table [default: taken from the file's path]
    #[arg(long, requires = "project")]
    pub table: Option<String>,
    /// Print the result as JSON, for scripts
    #[arg(long)]
    pub json: bool,
}

fn algorithm_text(a: Algorithm) -> &'static str {
    match a {
        Algorithm::None => "none (not encrypted; BLAKE3 checksums catch accidental corruption only)",
        Algorithm::Aes256Gcm => "aes256 (AES-256-GCM over 1 MiB segments)",
        Algorithm::Aes256Ctr => "aesctr (AES-256-CTR, encrypt-then-MAC with keyed BLAKE3)",
        Algorithm::Rc4 => "rc4 (legacy: RC4 drop-3072, encrypt-then-MAC with keyed BLAKE3)",
    }
}

/// The inspection of one file: text lines and the same as JSON.
pub struct Inspection {
    pub lines: Vec<String>,
    pub json: Value,
}

fn open(path: &Path) -> CliResult<File> {
    File::open(path).map_err(|e| io_err(format!("opening {}", path.display()), e))
}

/// Inspects `path`; with its table (or for an unencrypted file) also its row groups and statistics,
/// the file read as the table expects it (see [`expectation`]).
pub fn inspect(path: &Path, table: Option<&Table>) -> CliResult<Inspection> {
    let f = open(path)?;
    let (info, env_bytes) = read_envelope(&f)?;
    let env = &info.envelope;
    let mut lines = vec![
        format!("file            {}", path.display()),
        format!(
            "format          colvault {}.{}",
            colvault::format::VERSION_MAJOR,
            env.minor
        ),
        format!("algorithm       {}", algorithm_text(env.algorithm)),
        format!("file id         {}", env.file_id),
    ];
    if !env.kms.is_empty() {
        lines.push(format!("kms             {}", env.kms));
    }
    let mut keys_json = Vec::new();
    for k in &env.keys {
        let role = match k.role {
            KeyRole::File => "file key".to_string(),
            KeyRole::Column(c) => format!("column {c} key"),
        };
        match DataKeyEnvelope::from_bytes(&k.wrapped) {
            Ok(d) => {
                lines.push(format!(
                    "{role:<15} CMK {} version {} (DEK wrapped by a KEK wrapped by the CMK, key-committed)",
                    d.key_id().as_str(),
                    d.key_version()
                ));
                keys_json.push(
                    json!({"role": role, "key_id": d.key_id().as_str(), "key_version": d.key_version(),
                                      "kms": d.kms_name()}),
                );
            }
            Err(e) => {
                lines.push(format!("{role:<15} (unreadable key envelope: {e})"));
                keys_json.push(json!({"role": role, "error": e.to_string()}));
            }
        }
    }
    let trailer_and_magic = (colvault::format::TRAILER_LEN + colvault::format::MAGIC.len()) as u64;
    lines.push(format!(
        "size            {} bytes: column chunks {}, envelope {}, sealed footer {}, magic and trailer {}",
        thousands(info.file_len),
        thousands(info.chunk_bytes),
        thousands(env_bytes.len() as u64),
        thousands(info.sealed_body_len),
        trailer_and_magic
    ));
    let mut out = json!({
        "file": path.display().to_string(),
        "format_version": format!("{}.{}", colvault::format::VERSION_MAJOR, env.minor),
        "algorithm": env.algorithm.name(),
        "file_id": env.file_id.to_string(),
        "kms": env.kms,
        "keys": keys_json,
        "file_len": info.file_len,
        "chunk_bytes": info.chunk_bytes,
        "envelope_len": env_bytes.len(),
        "sealed_footer_len": info.sealed_body_len,
    });
    if table.is_none() && env.algorithm.is_encrypted() {
        lines.push(
            "(row groups, chunks and statistics are sealed: pass --project PROJECT to read them with the key)".into(),
        );
        return Ok(Inspection { lines, json: out });
    }
    let opts = match table {
        Some(t) => expectation(t, env.file_id)?,
        None => ReaderOptions::plaintext(),
    };
    let reader = FileReader::open(f, opts)?;
    let (body_lines, body_json) = footer(&reader)?;
    lines.extend(body_lines);
    out["footer"] = body_json;
    Ok(Inspection { lines, json: out })
}

/// A codec's name without its level: `zstd`, `snappy`, `uncompressed`.
fn codec(c: parquet::basic::Compression) -> String {
    let s = format!("{c:?}").to_lowercase();
    s.split('(').next().unwrap_or_default().to_string()
}

fn shorten(s: String) -> String {
    if s.chars().count() > 28 {
        let mut t: String = s.chars().take(27).collect();
        t.push('…');
        t
    } else {
        s
    }
}

fn value_at(a: &ArrayRef, i: usize) -> Option<String> {
    if i >= a.len() || a.is_null(i) {
        return None;
    }
    // Named time zones need a time zone database this build does not carry: show such times in UTC.
    if let DataType::Timestamp(unit, Some(tz)) = a.data_type() {
        let naive = arrow::compute::cast(a, &DataType::Timestamp(*unit, None)).ok()?;
        let utc = matches!(tz.as_ref(), "UTC" | "utc" | "Z" | "+00:00");
        return value_at(&naive, i).map(|v| if utc { format!("{v}Z") } else { format!("{v} UTC") });
    }
    let f = ArrayFormatter::try_new(a.as_ref(), &Default::default()).ok()?;
    let mut s = String::new();
    std::fmt::Write::write_fmt(&mut s, format_args!("{}", f.value(i))).ok()?;
    Some(s)
}

/// Row groups, chunks and statistics from an opened (authenticated) footer.
fn footer(r: &FileReader) -> CliResult<(Vec<String>, Value)> {
    let md = r.parquet_metadata();
    let schema = r.schema();
    let pq_schema = md.file_metadata().schema_descr();
    let mut lines = vec![
        format!(
            "rows            {} in {} row group(s) (footer authenticated)",
            thousands(r.num_rows()),
            r.num_row_groups()
        ),
        "schema".to_string(),
    ];
    for f in schema.fields() {
        lines.push(format!("  {}", super::dataio::describe_field(f)));
    }
    // Statistics per top-level field, across row groups, as Arrow values.
    let stats: Vec<Option<(ArrayRef, ArrayRef)>> = schema
        .fields()
        .iter()
        .map(|f| {
            let c = StatisticsConverter::try_new(f.name(), &schema, pq_schema).ok()?;
            Some((
                c.row_group_mins(md.row_groups()).ok()?,
                c.row_group_maxes(md.row_groups()).ok()?,
            ))
        })
        .collect();
    let mut rgs_json = Vec::new();
    for (i, rg) in md.row_groups().iter().enumerate() {
        let sealed = r.chunk_lengths(i);
        lines.push(format!(
            "row group {i}     {} rows, {} uncompressed",
            thousands(rg.num_rows() as u64),
            size(rg.total_byte_size().max(0) as u64)
        ));
        lines.push(format!(
            "  {:<16} {:<10} {:>12} {:>12} {:>8}  {:<28} max",
            "column", "codec", "encoded", "sealed", "nulls", "min"
        ));
        let mut cols_json = Vec::new();
        for (leaf, col) in rg.columns().iter().enumerate() {
            let path = col.column_path().string();
            let top = col.column_path().parts().first().cloned().unwrap_or_default();
            let field = schema.index_of(&top).ok();
            let (min, max) = match (field.and_then(|f| stats[f].as_ref()), col.column_path().parts().len()) {
                (Some((mins, maxes)), 1) => (value_at(mins, i), value_at(maxes, i)),
                _ => (None, None),
            };
            let nulls = col.statistics().and_then(|s| s.null_count_opt());
            let sealed_len = sealed.get(leaf).copied().unwrap_or(0);
            lines.push(
                format!(
                    "  {:<16} {:<10} {:>12} {:>12} {:>8}  {:<28} {:<28}",
                    path,
                    codec(col.compression()),
                    thousands(col.compressed_size().max(0) as u64),
                    thousands(sealed_len),
                    nulls.map_or("-".into(), thousands),
                    shorten(min.clone().unwrap_or_else(|| "-".into())),
                    shorten(max.clone().unwrap_or_else(|| "-".into())),
                )
                .trim_end()
                .to_string(),
            );
            cols_json.push(json!({
                "column": path, "compression": codec(col.compression()),
                "encoded_bytes": col.compressed_size(), "uncompressed_bytes": col.uncompressed_size(),
                "sealed_bytes": sealed_len, "nulls": nulls, "min": min, "max": max,
            }));
        }
        rgs_json.push(json!({"rows": rg.num_rows(), "columns": cols_json}));
    }
    let v = json!({
        "rows": r.num_rows(),
        "schema": schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string(),
                                                         "nullable": f.is_nullable()})).collect::<Vec<_>>(),
        "row_groups": rgs_json,
    });
    Ok((lines, v))
}

/// What a reader of file `file_id` of `table` must expect: what the table's current version records
/// for it, or for a file it does not list, the project's settings (its algorithm and CMK, and the
/// ones a migration is leaving). Never what the file itself claims.
fn expectation(table: &Table, file_id: FileId) -> CliResult<ReaderOptions> {
    let head = table.head()?;
    if let Some(f) = head.files.iter().find(|f| f.file_id == file_id) {
        return Ok(table.reader_options(f, &head)?);
    }
    let s = table.project().settings();
    let migrating = s.migrating_from.as_ref();
    let cmks: Vec<KeyId> = s
        .cmk
        .iter()
        .chain(migrating.and_then(|(_, k)| k.as_ref()))
        .cloned()
        .collect();
    let algorithm = match migrating {
        Some((from, _)) if !s.algorithm.is_encrypted() => *from,
        _ => s.algorithm,
    };
    Ok(match algorithm.is_encrypted() {
        true => ReaderOptions::encrypted(algorithm, table.project().access(table.table_id()), cmks),
        false => ReaderOptions::plaintext(),
    })
}

/// The table of a file of a project: the table is named, or taken from the path.
fn table_for(ctx: &super::context::Ctx, project: &Path, table: Option<&str>, file: &Path) -> CliResult<Table> {
    let p = ctx.project(project)?;
    let name = match table {
        Some(t) => t.to_string(),
        None => {
            let table_dir = file
                .canonicalize()
                .map_err(|e| io_err(format!("resolving {}", file.display()), e))?
                .parent()
                .and_then(|d| d.parent())
                .map(Path::to_path_buf);
            let mut found = None;
            for name in p.list_tables()? {
                if p.table(&name)?.dir().canonicalize().ok() == table_dir {
                    found = Some(name);
                    break;
                }
            }
            found.ok_or_else(|| {
                CliError::usage(format!(
                    "{} is not a data file of a table of project {}",
                    file.display(),
                    p.name()
                ))
                .hint("name its table with --table TABLE (`colvault catalog show PROJECT` lists the tables and their directories)")
            })?
        }
    };
    Ok(p.table(&name)?)
}

pub fn run(args: InspectArgs, opts: &KeyOpts) -> CliResult {
    let table = match &args.project {
        Some(project) => {
            let ctx = opts.open_existing()?;
            Some(table_for(&ctx, project, args.table.as_deref(), &args.file)?)
        }
        None => None,
    };
    let i = inspect(&args.file, table.as_ref())?;
    if args.json {
        print_json(&i.json)?;
    } else {
        for l in &i.lines {
            println!("{l}");
        }
    }
    Ok(())
}
