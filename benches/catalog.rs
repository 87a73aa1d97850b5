//! The catalog's cost (issue 14): the round trips a table commit and a scan make to the catalog,
//! against the rest of their work, on SQLite and (optionally) PostgreSQL.
//!
//! ```sh
//! cargo bench --bench catalog --profile release                 # SQLite only, about 15 s here (2 cores)
//! cargo bench --bench catalog --profile release --features postgres -- --postgres postgres://user@127.0.0.1:5432/db
//! cargo bench --bench catalog --profile release -- --ops 200 --dir /some/disk
//! ```
//!
//! (`--profile release` reuses the release build of the dependencies; without it the bench
//! profile, which adds debuginfo, builds them all again.) With PostgreSQL it takes 30 to 60 s here.
//! Appends are bound by fsync (each syncs a data file, its directory, a manifest and the catalog's
//! commit), so on a shared disk the means vary from run to run; the medians are steadier.
//!
//! For each catalog and for an `aes256` and a plaintext project it times:
//!
//! 1. `--ops` (1,000) small appends, one 10-row batch each, to one table (so its manifest grows to
//!    1,000 files, as a real small-append workload does);
//! 2. `--ops` scans of a second table holding 100 rows in 10 files (the catalog head read, the
//!    manifest chain check, every file opened and read);
//! 3. the catalog's share. The project runs on the catalog through a wrapper that counts and times
//!    every catalog call (an append makes one `table_by_id`, whose head the commit builds on, and
//!    one `swap_head`; a scan one `table_by_id`; the counts are measured, not assumed). Then the same calls are
//!    made again alone, on the same catalog handle: `table_by_id` of the same table, and `swap_head`
//!    on a probe record registered for the purpose (no storage behind it), so the real table's
//!    head is untouched.
//!
//! The code path before the catalog (the head found by listing the table's directory) no longer
//! exists, so "without catalog" is the measured time per operation minus the catalog calls' time
//! timed alone: what the operation would cost if its catalog calls were free. The time the calls
//! took inside the run (the wrapper's clock) is printed beside it as a check.
//!
//! Storage is a temporary directory (`--dir` chooses where); the SQLite catalog is a fresh
//! `catalog.db` there (WAL, `synchronous = FULL`, as `catalog::open` sets it). PostgreSQL is used
//! as given, nothing is started here; the bench's projects are dropped from it at the end.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use colvault::catalog::{Catalog, ProjectRecord, TableHead, TableRecord};
use colvault::kms::{Argon2Params, CacheOptions, KeyCache, LocalKms, LocalKmsOptions, RootSecret};
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::table::Table;
use colvault::{Algorithm, Result};

const BATCH_ROWS: i64 = 10;
/// Appends (of `BATCH_ROWS` rows each) making up the scanned table.
const SCAN_FILES: i64 = 10;
/// Untimed operations before each timed series.
const WARMUP: usize = 20;

struct Args {
    ops: usize,
    postgres: Option<String>,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        ops: 1000,
        postgres: None,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ops" => a.ops = it.next().and_then(|v| v.parse().ok()).expect("--ops N"),
            "--postgres" => a.postgres = Some(it.next().expect("--postgres URL")),
            "--dir" => a.dir = Some(it.next().expect("--dir DIR").into()),
            "--bench" => {}
            other => panic!("unknown argument {other:?}: expected --ops N, --postgres URL, --dir DIR"),
        }
    }
    assert!(a.ops > 0, "--ops must be positive");
    a
}

// ---------------------------------------------------------------------------------------------
// A catalog that counts and times the calls made to it.

#[derive(Default)]
struct Counter {
    calls: AtomicU64,
    nanos: AtomicU64,
}

impl Counter {
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        self.nanos.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        out
    }
    fn take(&self) -> (u64, Duration) {
        (
            self.calls.swap(0, Ordering::Relaxed),
            Duration::from_nanos(self.nanos.swap(0, Ordering::Relaxed)),
        )
    }
}

/// What the catalog was asked between two [`Timed::take`]s.
#[derive(Clone, Copy, Debug, Default)]
struct Calls {
    table_by_id: (u64, Duration),
    swap_head: (u64, Duration),
    other: (u64, Duration),
}

impl Calls {
    fn total(&self) -> Duration {
        self.table_by_id.1 + self.swap_head.1 + self.other.1
    }
}

#[derive(Debug)]
struct Timed {
    inner: Arc<dyn Catalog>,
    table_by_id: Counter,
    swap_head: Counter,
    other: Counter,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter").finish_non_exhaustive()
    }
}

impl Timed {
    fn new(inner: Arc<dyn Catalog>) -> Self {
        Timed {
            inner,
            table_by_id: Counter::default(),
            swap_head: Counter::default(),
            other: Counter::default(),
        }
    }
    fn take(&self) -> Calls {
        Calls {
            table_by_id: self.table_by_id.take(),
            swap_head: self.swap_head.take(),
            other: self.other.take(),
        }
    }
}

impl Catalog for Timed {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn create_project(&self, project: &ProjectRecord, tables: &[TableRecord]) -> Result<()> {
        self.other.time(|| self.inner.create_project(project, tables))
    }
    fn project(&self, name: &str) -> Result<Option<ProjectRecord>> {
        self.other.time(|| self.inner.project(name))
    }
    fn project_by_id(&self, project_id: &str) -> Result<Option<ProjectRecord>> {
        self.other.time(|| self.inner.project_by_id(project_id))
    }
    fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        self.other.time(|| self.inner.list_projects())
    }
    fn update_project(&self, expected: &ProjectRecord, new: &ProjectRecord) -> Result<bool> {
        self.other.time(|| self.inner.update_project(expected, new))
    }
    fn drop_project(&self, project_id: &str) -> Result<()> {
        self.other.time(|| self.inner.drop_project(project_id))
    }
    fn create_table(&self, table: &TableRecord) -> Result<()> {
        self.other.time(|| self.inner.create_table(table))
    }
    fn table(&self, project_id: &str, name: &str) -> Result<Option<TableRecord>> {
        self.other.time(|| self.inner.table(project_id, name))
    }
    fn table_by_id(&self, table_id: &str) -> Result<Option<TableRecord>> {
        self.table_by_id.time(|| self.inner.table_by_id(table_id))
    }
    fn list_tables(&self, project_id: &str) -> Result<Vec<TableRecord>> {
        self.other.time(|| self.inner.list_tables(project_id))
    }
    fn swap_head(&self, table_id: &str, expected: &TableHead, new: &TableHead) -> Result<bool> {
        self.swap_head.time(|| self.inner.swap_head(table_id, expected, new))
    }
    fn drop_table(&self, table_id: &str) -> Result<()> {
        self.other.time(|| self.inner.drop_table(table_id))
    }
    fn observe_kms_generation(&self, kms: &str, generation: u64) -> Result<()> {
        self.other.time(|| self.inner.observe_kms_generation(kms, generation))
    }
    fn kms_generation(&self, kms: &str) -> Result<Option<u64>> {
        self.other.time(|| self.inner.kms_generation(kms))
    }
}

// ---------------------------------------------------------------------------------------------
// Data and measurements.

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn rows(start: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + BATCH_ROWS).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("name {i}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))],
    )
    .unwrap()
}

fn scan_rows(t: &Table) -> usize {
    t.scan()
        .build()
        .unwrap()
        .read_all()
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

/// Operations between two runs of their catalog calls made alone (so both see the same state of
/// a shared machine's disk and CPUs).
const BLOCK: usize = 50;

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mean_us(d: &[Duration]) -> f64 {
    us(d.iter().sum::<Duration>()) / d.len() as f64
}

fn median_us(d: &[Duration]) -> f64 {
    let mut t = d.to_vec();
    t.sort();
    us(t[t.len() / 2])
}

/// One timed series of operations.
struct Series {
    /// Each operation's wall time.
    times: Vec<Duration>,
    /// The time of each operation's catalog calls, inside it (the wrapper's clock).
    inside: Vec<Duration>,
    /// The time of each operation's catalog calls made again alone.
    alone: Vec<Duration>,
    /// Of `alone`, summed: the `table_by_id`s and the `swap_head`s.
    alone_split: (Duration, Duration),
    /// The catalog calls of the whole series.
    calls: Calls,
    /// Per operation: `table_by_id` and `swap_head` calls.
    per_op: (u64, u64),
}

impl Series {
    fn total(&self) -> Duration {
        self.times.iter().sum()
    }
    /// Mean µs of the first and the last tenth of the operations.
    fn first_last_us(&self) -> (f64, f64) {
        let k = (self.times.len() / 10).max(1);
        (mean_us(&self.times[..k]), mean_us(&self.times[self.times.len() - k..]))
    }
}

/// Catalog calls per operation in `calls` over `n` operations: whole numbers, and only the two
/// kinds a commit and a scan make.
fn per_op(calls: &Calls, n: u64) -> (u64, u64) {
    let (r, s) = (calls.table_by_id.0, calls.swap_head.0);
    assert!(
        r % n == 0 && s % n == 0 && calls.other.0 == 0,
        "unexpected catalog calls in {n} operations: {calls:?}"
    );
    (r / n, s / n)
}

/// The catalog calls of one operation (`reads` `table_by_id` and `swaps` `swap_head`), made alone
/// on `catalog`: reads of table `table_id`, swaps of the probe record `probe` from `head` on.
/// Returns the time of the reads and of the swaps.
fn replay_one(
    catalog: &dyn Catalog,
    (reads, swaps): (u64, u64),
    table_id: &str,
    probe: &str,
    head: &mut TableHead,
) -> (Duration, Duration) {
    let t0 = Instant::now();
    for _ in 0..reads {
        std::hint::black_box(catalog.table_by_id(table_id).unwrap().unwrap());
    }
    let t1 = Instant::now();
    for _ in 0..swaps {
        let mut next = TableHead {
            version: head.version + 1,
            digest: head.digest,
        };
        next.digest[..8].copy_from_slice(&next.version.to_le_bytes());
        assert!(catalog.swap_head(probe, head, &next).unwrap(), "probe head moved");
        *head = next;
    }
    (t1 - t0, t1.elapsed())
}

/// `n` operations `op` through the counting catalog `timed` (after a warm-up that finds how many
/// catalog calls each makes), and in blocks between them the same calls made alone on `inner`.
fn series(
    timed: &Timed,
    inner: &dyn Catalog,
    n: usize,
    table_id: &str,
    probe: &str,
    mut op: impl FnMut(usize),
) -> Series {
    timed.take();
    for i in 0..WARMUP {
        op(i);
    }
    let calls_per_op = per_op(&timed.take(), WARMUP as u64);
    let mut head = inner.table_by_id(probe).unwrap().unwrap().head;
    let mut s = Series {
        times: Vec::with_capacity(n),
        inside: Vec::with_capacity(n),
        alone: Vec::with_capacity(n),
        alone_split: (Duration::ZERO, Duration::ZERO),
        calls: Calls::default(),
        per_op: calls_per_op,
    };
    let add = |a: &mut (u64, Duration), b: (u64, Duration)| {
        a.0 += b.0;
        a.1 += b.1;
    };
    for start in (0..n).step_by(BLOCK) {
        let block = BLOCK.min(n - start);
        for i in start..start + block {
            let t0 = Instant::now();
            op(WARMUP + i);
            s.times.push(t0.elapsed());
            let c = timed.take();
            s.inside.push(c.total());
            add(&mut s.calls.table_by_id, c.table_by_id);
            add(&mut s.calls.swap_head, c.swap_head);
            add(&mut s.calls.other, c.other);
        }
        for _ in 0..block {
            let (r, w) = replay_one(inner, calls_per_op, table_id, probe, &mut head);
            s.alone.push(r + w);
            s.alone_split.0 += r;
            s.alone_split.1 += w;
        }
    }
    assert_eq!(
        per_op(&s.calls, n as u64),
        calls_per_op,
        "catalog calls per operation changed"
    );
    s
}

/// One row of the report.
struct Row {
    catalog: &'static str,
    algorithm: Algorithm,
    op: &'static str,
    series: Series,
}

/// A fresh record id (32 lowercase hex digits, as the catalog requires).
fn random_hex() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Measures appends and scans on one catalog, for an aes256 and a plaintext project.
fn run_catalog(label: &'static str, url: &str, root: &std::path::Path, keys: &Keys, n: usize, out: &mut Vec<Row>) {
    let inner = match colvault::catalog::open(url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{label}: cannot open the catalog: {e}");
            return;
        }
    };
    let timed = Arc::new(Timed::new(inner.clone()));
    let catalog: Arc<dyn Catalog> = timed.clone();
    let tag = std::process::id() % 100_000;
    for algorithm in [Algorithm::Aes256Gcm, Algorithm::None] {
        let settings = match algorithm {
            Algorithm::None => ProjectSettings::plaintext(),
            a => ProjectSettings::encrypted(a, KeyChoice::ProjectDefault),
        };
        let short = if algorithm == Algorithm::None { "plain" } else { "aes" };
        let name = format!("bench_{label}_{short}_{tag}");
        let dir = root.join(&name);
        let project = Project::create(&catalog, &dir, &name, settings, keys.clone()).unwrap();
        let appends = project.create_table("appends", schema()).unwrap();
        let scanned = project.create_table("scanned", schema()).unwrap();
        for i in 0..SCAN_FILES {
            scanned.append([rows(i * BATCH_ROWS)]).unwrap();
        }
        let probe = TableRecord {
            table_id: random_hex(),
            project_id: project.project_id().to_string(),
            name: "catalog_probe".into(),
            location: "tables/catalog_probe".into(),
            head: TableHead {
                version: 1,
                digest: [7; 32],
            },
            column_keys: Vec::new(),
            partition_by: Vec::new(),
        };
        inner.create_table(&probe).unwrap();

        eprintln!("{label} {algorithm}: {n} appends ...");
        let series_a = series(&timed, inner.as_ref(), n, appends.table_id(), &probe.table_id, |i| {
            appends.append([rows(i as i64 * BATCH_ROWS)]).unwrap();
        });
        out.push(Row {
            catalog: label,
            algorithm,
            op: "append",
            series: series_a,
        });

        eprintln!("{label} {algorithm}: {n} scans ...");
        let expected = (SCAN_FILES * BATCH_ROWS) as usize;
        let series_s = series(&timed, inner.as_ref(), n, scanned.table_id(), &probe.table_id, |_| {
            assert_eq!(scan_rows(&scanned), expected)
        });
        out.push(Row {
            catalog: label,
            algorithm,
            op: "scan",
            series: series_s,
        });

        inner.drop_table(&probe.table_id).unwrap();
        drop((appends, scanned));
        project.drop_project().unwrap();
    }
}

fn main() {
    let a = args();
    let tmp = match &a.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let kms = Arc::new(
        LocalKms::create(
            tmp.path().join("keystore"),
            RootSecret::passphrase("catalog bench passphrase"),
            LocalKmsOptions::new().with_argon2(Argon2Params::insecure_for_tests()),
        )
        .unwrap(),
    );
    let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default()).unwrap());
    let keys = Keys { kms, cache };

    let mut rows_out = Vec::new();
    let t0 = Instant::now();
    let sqlite = format!("sqlite:{}", tmp.path().join("catalog.db").display());
    run_catalog("sqlite", &sqlite, tmp.path(), &keys, a.ops, &mut rows_out);
    if let Some(url) = &a.postgres {
        run_catalog("postgres", url, tmp.path(), &keys, a.ops, &mut rows_out);
    }
    eprintln!("done in {:.1} s", t0.elapsed().as_secs_f64());

    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} operations each; appends of one {BATCH_ROWS}-row batch to one table (growing to {} files); \
         scans of a {}-row table in {SCAN_FILES} files. Storage: {}.",
        a.ops,
        a.ops + WARMUP,
        SCAN_FILES * BATCH_ROWS,
        tmp.path().display()
    );
    let _ = writeln!(
        s,
        "\n| catalog  | algorithm | op     | total ms | µs/op mean (median) | first / last 10% | catalog calls per op       | catalog alone µs/op (median) | share  | catalog in run µs/op (median) | share  | without catalog µs/op |"
    );
    let _ = writeln!(
        s,
        "|----------|-----------|--------|---------:|--------------------:|-----------------:|----------------------------|-----------------------------:|-------:|------------------------------:|-------:|----------------------:|"
    );
    for r in &rows_out {
        let t = &r.series;
        let per = mean_us(&t.times);
        let (first, last) = t.first_last_us();
        let (reads, swaps) = t.per_op;
        let calls = if swaps > 0 {
            format!("{reads} table_by_id, {swaps} swap_head")
        } else {
            format!("{reads} table_by_id")
        };
        let (alone, inside) = (mean_us(&t.alone), mean_us(&t.inside));
        let _ = writeln!(
            s,
            "| {:<8} | {:<9} | {:<6} | {:>8.1} | {:>8.0} ({:>8.0}) | {:>7.0} / {:<6.0} | {:<26} | {:>14.1} ({:>11.1}) | {:>4.1} % | {:>15.1} ({:>11.1}) | {:>4.1} % | {:>21.0} |",
            r.catalog,
            r.algorithm.to_string(),
            r.op,
            us(t.total()) / 1e3,
            per,
            median_us(&t.times),
            first,
            last,
            calls,
            alone,
            median_us(&t.alone),
            100.0 * alone / per,
            inside,
            median_us(&t.inside),
            100.0 * inside / per,
            per - alone,
        );
    }
    let _ = writeln!(s);
    for r in &rows_out {
        let t = &r.series;
        let per = mean_us(&t.times);
        let n = t.times.len() as f64;
        let (reads, swaps) = t.per_op;
        let each = |d: Duration, k: u64| us(d) / (n * k.max(1) as f64);
        let (alone, inside) = (mean_us(&t.alone), mean_us(&t.inside));
        let mut line = format!(
            "{} {}: catalog round trips: {alone:.1} µs of {per:.0} µs per {} ({:.1} %; {inside:.1} µs, {:.1} %, \
             inside the run); without them {:.0} µs. One table_by_id {:.1} µs alone, {:.1} µs in the run",
            r.catalog,
            r.algorithm,
            r.op,
            100.0 * alone / per,
            100.0 * inside / per,
            per - alone,
            each(t.alone_split.0, reads),
            each(t.calls.table_by_id.1, reads),
        );
        if swaps > 0 {
            let _ = write!(
                line,
                "; one swap_head {:.1} µs alone, {:.1} µs in the run",
                each(t.alone_split.1, swaps),
                each(t.calls.swap_head.1, swaps)
            );
        }
        let _ = writeln!(s, "{line}.");
    }
    let _ = writeln!(
        s,
        "\n\"Without catalog\" stands in for the local directory path, which no longer exists: the time per \
         operation minus its catalog calls made alone on the same catalog handle (in blocks of {BLOCK} between \
         the operations). \"In run\" is the time the same calls took inside the operations (a counting \
         wrapper's clock: colder caches, and a commit's catalog write waits behind the data files' fsyncs)."
    );
    println!("{s}");
}
