//! The catalog's cost (issue 14): the round trips a table commit and a scan make to the catalog,
//! against the rest of their work, on SQLite and (optionally) PostgreSQL.
//!
//! ```sh
//! cargo bench --bench catalog --profile release                 # SQLite only, about 15 s here
//! cargo bench --bench catalog --profile release --features postgres -- --postgres postgres://user@127.0.0.1:5432/db
//! cargo bench --bench catalog --profile release -- --ops 200 --dir /some/disk
//! ```
//!
//! (`--profile release` reuses the release build of the dependencies; without it the bench
//! profile, which adds debuginfo, builds them all again.)
//!
//! For each catalog and for an `aes256` and a plaintext project it times:
//!
//! 1. `--ops` (1,000) small appends, one 10-row batch each, to one table (so its manifest grows to
//!    1,000 files, as a real small-append workload does);
//! 2. `--ops` scans of a second table holding 100 rows in 10 files (the catalog head read, the
//!    manifest chain check, every file opened and read);
//! 3. the catalog's share. The project runs on the catalog through a wrapper that counts and times
//!    every catalog call (an append makes two `table_by_id`, one from `Table::head` for the schema
//!    and one in `commit`, and one `swap_head`; a scan one `table_by_id`). Then the same calls are
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

/// One timed series: each operation's time, and the catalog calls made meanwhile.
struct Series {
    times: Vec<Duration>,
    calls: Calls,
}

impl Series {
    fn total(&self) -> Duration {
        self.times.iter().sum()
    }
    fn per_op_us(&self) -> f64 {
        self.total().as_secs_f64() * 1e6 / self.times.len() as f64
    }
    fn median_us(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort();
        t[t.len() / 2].as_secs_f64() * 1e6
    }
    /// Mean µs of the first and the last tenth of the operations.
    fn first_last_us(&self) -> (f64, f64) {
        let k = (self.times.len() / 10).max(1);
        let mean = |s: &[Duration]| s.iter().sum::<Duration>().as_secs_f64() * 1e6 / s.len() as f64;
        (mean(&self.times[..k]), mean(&self.times[self.times.len() - k..]))
    }
    /// Catalog calls per operation, which must be whole numbers for the replay.
    fn calls_per_op(&self) -> (u64, u64) {
        let n = self.times.len() as u64;
        let (r, s) = (self.calls.table_by_id.0, self.calls.swap_head.0);
        assert!(
            r % n == 0 && s % n == 0 && self.calls.other.0 == 0,
            "unexpected catalog calls in {n} operations: {:?}",
            self.calls
        );
        (r / n, s / n)
    }
}

fn series(timed: &Timed, n: usize, mut op: impl FnMut(usize)) -> Series {
    for i in 0..WARMUP {
        op(i);
    }
    timed.take();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        op(WARMUP + i);
        times.push(t0.elapsed());
    }
    Series {
        times,
        calls: timed.take(),
    }
}

/// The catalog calls of `n` operations (`reads` `table_by_id` and `swaps` `swap_head` each), made
/// alone on `catalog`: reads of table `table_id`, swaps on the probe record `probe`. Returns the
/// time of the reads and of the swaps.
fn replay(
    catalog: &dyn Catalog,
    n: usize,
    (reads, swaps): (u64, u64),
    table_id: &str,
    probe: &str,
) -> (Duration, Duration) {
    let mut head = catalog.table_by_id(probe).unwrap().unwrap().head;
    let (mut read_time, mut swap_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
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
            assert!(catalog.swap_head(probe, &head, &next).unwrap(), "probe head moved");
            head = next;
        }
        read_time += t1 - t0;
        swap_time += t1.elapsed();
    }
    (read_time, swap_time)
}

/// One row of the report.
struct Row {
    catalog: &'static str,
    algorithm: Algorithm,
    op: &'static str,
    series: Series,
    /// The same catalog calls, timed alone: the `table_by_id`s and the `swap_head`s.
    bare: (Duration, Duration),
}

impl Row {
    fn bare_us(&self) -> f64 {
        (self.bare.0 + self.bare.1).as_secs_f64() * 1e6 / self.series.times.len() as f64
    }
    fn inside_us(&self) -> f64 {
        self.series.calls.total().as_secs_f64() * 1e6 / self.series.times.len() as f64
    }
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
        };
        inner.create_table(&probe).unwrap();

        eprintln!("{label} {algorithm}: {n} appends ...");
        let s = series(&timed, n, |i| {
            appends.append([rows(i as i64 * BATCH_ROWS)]).unwrap();
        });
        let bare = replay(inner.as_ref(), n, s.calls_per_op(), appends.table_id(), &probe.table_id);
        out.push(Row {
            catalog: label,
            algorithm,
            op: "append",
            series: s,
            bare,
        });

        eprintln!("{label} {algorithm}: {n} scans ...");
        let expected = (SCAN_FILES * BATCH_ROWS) as usize;
        let s = series(&timed, n, |_| assert_eq!(scan_rows(&scanned), expected));
        let bare = replay(inner.as_ref(), n, s.calls_per_op(), scanned.table_id(), &probe.table_id);
        out.push(Row {
            catalog: label,
            algorithm,
            op: "scan",
            series: s,
            bare,
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
        "\n| catalog  | algorithm | op     | total ms | µs/op | median | first / last 10% | catalog calls per op       | catalog alone µs/op | in run µs/op    | without catalog µs/op |"
    );
    let _ = writeln!(
        s,
        "|----------|-----------|--------|---------:|------:|-------:|-----------------:|----------------------------|--------------------:|----------------:|----------------------:|"
    );
    for r in &rows_out {
        let per = r.series.per_op_us();
        let (first, last) = r.series.first_last_us();
        let (reads, swaps) = r.series.calls_per_op();
        let calls = if swaps > 0 {
            format!("{reads} table_by_id, {swaps} swap_head")
        } else {
            format!("{reads} table_by_id")
        };
        let (alone, inside) = (r.bare_us(), r.inside_us());
        let _ = writeln!(
            s,
            "| {:<8} | {:<9} | {:<6} | {:>8.1} | {:>5.0} | {:>6.0} | {:>7.0} / {:<6.0} | {:<26} | {:>7.1} ({:>5.1} %) | {:>6.1} ({:>4.1} %) | {:>21.0} |",
            r.catalog,
            r.algorithm.to_string(),
            r.op,
            r.series.total().as_secs_f64() * 1e3,
            per,
            r.series.median_us(),
            first,
            last,
            calls,
            alone,
            100.0 * alone / per,
            inside,
            100.0 * inside / per,
            per - alone,
        );
    }
    let _ = writeln!(s);
    for r in &rows_out {
        let per = r.series.per_op_us();
        let n = r.series.times.len() as f64;
        let (reads, swaps) = r.series.calls_per_op();
        let each = |d: Duration, k: u64| d.as_secs_f64() * 1e6 / (n * k.max(1) as f64);
        let mut line = format!(
            "{} {}: catalog round trips: {:.1} µs of {:.0} µs per {} ({:.1} %; {:.1} µs inside the run); \
             without them {:.0} µs. Alone, one table_by_id {:.1} µs",
            r.catalog,
            r.algorithm,
            r.bare_us(),
            per,
            r.op,
            100.0 * r.bare_us() / per,
            r.inside_us(),
            per - r.bare_us(),
            each(r.bare.0, reads),
        );
        if swaps > 0 {
            let _ = write!(line, ", one swap_head {:.1} µs", each(r.bare.1, swaps));
        }
        let c = &r.series.calls;
        let _ = write!(
            line,
            "; in the run {:.1} µs",
            each(c.table_by_id.1, c.table_by_id.0 / n as u64)
        );
        if swaps > 0 {
            let _ = write!(line, " and {:.1} µs", each(c.swap_head.1, c.swap_head.0 / n as u64));
        }
        let _ = writeln!(s, "{line}.");
    }
    let _ = writeln!(
        s,
        "\n\"Without catalog\" stands in for the local directory path, which no longer exists: the time per \
         operation minus its catalog calls made alone on the same catalog handle. \"In run\" is the time \
         the same calls took inside the measured operations (a counting wrapper's clock; colder caches)."
    );
    println!("{s}");
}
