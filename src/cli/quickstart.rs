//! `colvault quickstart`: an encrypted demo project, a million sample rows written and read back,
//! what `inspect` shows, and a key disabled and enabled again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sample::SampleTable;
use colvault::table::{Table, TableWriteOptions};
use colvault::Algorithm;

use super::context::{default_dir, KeyOpts};
use super::dataio::Checksum;
use super::error::{io_err, kind_of, CliError, CliResult};
use super::inspect::inspect;
use super::output::{size, thousands};

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Where the demo project goes; it is deleted and created again on every run
    /// [default: ~/.colvault/quickstart]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Rows of sample data.
    #[arg(long, hide = true, default_value_t = 1_000_000)]
    pub rows: usize,
}

const SEED: u64 = 42;
const BATCH_ROWS: usize = 65_536;
const TABLE: &str = "sales";
const PROJECT: &str = "quickstart";

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

/// Removes the previous run's demo project (from the catalog and from `dir`), scheduling its
/// default key for deletion.
fn clear_previous(dir: &Path, ctx: &super::context::Ctx) -> CliResult<Option<String>> {
    let mut note = None;
    if let Some(rec) = ctx.catalog.project(PROJECT)? {
        if let Ok(p) = Project::open(&ctx.catalog, PROJECT, ctx.keys.clone()) {
            if let (true, Some(k)) = (p.settings().default_key, &p.settings().cmk) {
                if ctx.kms.schedule_deletion(k, 7).is_ok() {
                    note = Some(format!(
                        "the previous demo project was removed and its key {} scheduled for deletion in 7 days",
                        k.as_str()
                    ));
                }
            }
        }
        ctx.catalog.drop_project(&rec.project_id)?;
        let old = Path::new(&rec.location);
        if old.exists() && std::path::absolute(old).ok() != std::path::absolute(dir).ok() {
            std::fs::remove_dir_all(old)
                .map_err(|e| io_err(format!("removing the previous demo {}", old.display()), e))?;
        }
    }
    if !dir.exists() {
        return Ok(note);
    }
    let ours = std::fs::read_dir(dir)
        .map_err(|e| io_err(format!("listing {}", dir.display()), e))?
        .flatten()
        .all(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n == "tables" || n == "dropped" || (n.starts_with("project") && n.ends_with(".cv"))
        });
    if !ours {
        return Err(CliError::usage(format!(
            "{} exists and is not a colvault project; the quickstart will not delete it",
            dir.display()
        ))
        .hint("choose another place with --dir DIR"));
    }
    std::fs::remove_dir_all(dir).map_err(|e| io_err(format!("removing the previous demo {}", dir.display()), e))?;
    Ok(note)
}

fn read_all(t: &Table, columns: usize) -> CliResult<Checksum> {
    let mut sum = Checksum::new(columns);
    let mut reader = t.scan().batch_size(BATCH_ROWS).build()?;
    while let Some(b) = reader.next_batch()? {
        sum.update(&b);
    }
    Ok(sum)
}

fn count(t: &Table) -> colvault::Result<u64> {
    let mut n = 0;
    let mut reader = t.scan().columns(["id"]).batch_size(BATCH_ROWS).build()?;
    while let Some(b) = reader.next_batch()? {
        n += b.num_rows() as u64;
    }
    Ok(n)
}

pub fn run(args: QuickstartArgs, opts: &KeyOpts) -> CliResult {
    let started = Instant::now();
    let dir = match args.dir {
        Some(d) => d,
        None => default_dir()?.join("quickstart"),
    };
    let rows = args.rows.max(1);
    println!(
        "colvault quickstart: an encrypted project, {} rows written and read back, and a key switched off and on",
        thousands(rows as u64)
    );

    let mut notes = Vec::new();
    let ctx = opts.open_with_notes(&mut |n| notes.push(n))?;
    if ctx.selected == colvault::kms::select::KmsUrl::Local {
        step(1, "Keystore (the embedded local KMS)");
        println!("   keystore   {}", ctx.keystore.display());
    } else {
        step(1, "Key management service");
        println!("   KMS        {} ({})", ctx.selected, ctx.kms.name());
    }
    for n in &notes {
        println!("   {n}");
    }
    if notes.is_empty() && ctx.selected == colvault::kms::select::KmsUrl::Local {
        println!("   (opened the existing keystore)");
    }

    step(2, "Project with encryption on");
    if let Some(n) = clear_previous(&dir, &ctx)? {
        println!("   {n}");
    }
    let settings = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault);
    let project = Project::create(&ctx.catalog, &dir, PROJECT, settings, ctx.keys.clone())?;
    let cmk = project
        .settings()
        .cmk
        .clone()
        .ok_or_else(|| CliError::other("the demo project has no key"))?;
    println!(
        "   $ colvault project create {} --name {PROJECT} --encrypt --algorithm aes256",
        dir.display()
    );
    println!(
        "   project {PROJECT}: AES-256-GCM, under its default key {} (created in the KMS, granted to the project)",
        cmk.as_str()
    );

    step(3, "Write sample rows, encrypted");
    let schema = SampleTable::schema();
    let t0 = Instant::now();
    let batches: Vec<_> = SampleTable::new(rows, SEED).batches(BATCH_ROWS).collect();
    let generated = t0.elapsed();
    let mut written = Checksum::new(schema.fields().len());
    let mut mem_bytes = 0u64;
    for b in &batches {
        written.update(b);
        mem_bytes += b.get_array_memory_size() as u64;
    }
    let table = project
        .create_table(TABLE, schema.clone())?
        .with_write_options(TableWriteOptions {
            row_group_rows: 1 << 18,
            ..TableWriteOptions::default()
        });
    let t0 = Instant::now();
    let commit = table.append(batches)?;
    let write_time = t0.elapsed();
    let head = table.head()?;
    let disk: u64 = head.files.iter().map(|f| f.len).sum();
    let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    println!(
        "   generated {} rows x {} columns ({}) in {:.2} s",
        thousands(rows as u64),
        cols.len(),
        cols.join(", "),
        secs(generated)
    );
    println!(
        "   wrote table {TABLE} (version {}, {} file(s), {} on disk from {} of Arrow data) in {:.2} s: \
         {} rows/s, {:.0} MB/s",
        commit.version,
        commit.files_added,
        size(disk),
        size(mem_bytes),
        secs(write_time),
        thousands((rows as f64 / secs(write_time)) as u64),
        mem_bytes as f64 / 1e6 / secs(write_time)
    );

    step(4, "Read it back and check it");
    let t0 = Instant::now();
    let read = read_all(&table, schema.fields().len())?;
    let read_time = t0.elapsed();
    println!(
        "   read {} rows in {:.2} s: {} rows/s, {:.0} MB/s (decrypted, authenticated, decoded)",
        thousands(read.rows()),
        secs(read_time),
        thousands((read.rows() as f64 / secs(read_time)) as u64),
        mem_bytes as f64 / 1e6 / secs(read_time)
    );
    println!(
        "   checksum written {}  rows {}",
        written.hex(),
        thousands(written.rows())
    );
    println!("   checksum read    {}  rows {}", read.hex(), thousands(read.rows()));
    if read.rows() != written.rows() || read.hex() != written.hex() {
        return Err(CliError::data("the rows read back differ from the rows written"));
    }
    println!("   OK: the same rows, in the same order");

    step(5, "Inspect a data file");
    let file = head
        .files
        .first()
        .map(|f| table.dir().join("data").join(&f.name))
        .ok_or_else(|| CliError::other("the demo table has no file"))?;
    println!("   $ colvault inspect {}", file.display());
    for l in inspect(&file, None)?.lines {
        println!("   {l}");
    }
    println!(
        "   $ colvault inspect {} --project {}   (with the key; first row group)",
        file.display(),
        dir.display()
    );
    let keyed = inspect(&file, Some(&table))?;
    let start = keyed.lines.iter().position(|l| l.starts_with("rows ")).unwrap_or(0);
    for l in keyed.lines[start..]
        .iter()
        .take_while(|l| !l.starts_with("row group 1"))
    {
        println!("   {l}");
    }

    step(6, "Disable the key: reads fail at once");
    ctx.kms.disable(&cmk)?;
    // The KEK cache of this process still holds the key: drop it so the change applies at once (a
    // separate process would stop within its cache lifetime, COLVAULT_KEY_CACHE_SECONDS).
    ctx.keys.cache.invalidate();
    println!("   $ colvault kms disable {}", cmk.as_str());
    println!("   $ colvault table count {} {TABLE}", dir.display());
    let failed = count(&table);
    let outcome = match failed {
        Err(e) => {
            let kind = kind_of(&e);
            println!("   error: {e}");
            println!("   (exit code {}: a key error)", kind.code());
            Ok(())
        }
        Ok(n) => Err(CliError::other(format!(
            "the read should have failed with the key disabled, but it read {n} rows"
        ))),
    };
    step(7, "Enable the key: reads work again");
    ctx.kms.enable(&cmk)?;
    outcome?;
    println!("   $ colvault kms enable {}", cmk.as_str());
    println!("   $ colvault table count {} {TABLE}", dir.display());
    let n = count(&table)?;
    println!("   {n}");
    if n != rows as u64 {
        return Err(CliError::data(format!("counted {n} rows, expected {rows}")));
    }

    println!("\nDone in {:.1} s. Try next:", secs(started.elapsed()));
    let d = dir.display();
    println!("   colvault project show {d}");
    println!("   colvault table head {d} {TABLE} -n 5 --columns id,city,amount,ts");
    println!("   colvault table export {d} {TABLE} sales.parquet");
    println!("   colvault project verify {d}");
    println!("   colvault kms list");
    println!("   colvault --help");
    Ok(())
}
