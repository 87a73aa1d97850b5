//! Tables across processes: concurrent appenders in two processes, and a writer killed with
//! SIGKILL at random points while it appends, compacts, rewraps and migrates.
//!
//! The test binary re-runs itself as the child process (selected by environment variables). Each
//! runs against the embedded SQLite catalog and, with the `postgres` feature, against a throwaway
//! PostgreSQL server (`tests/common/pg.rs`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use colvault::kms::{Argon2Params, CacheOptions, KeyCache, LocalKms, LocalKmsOptions, RootSecret};
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::Algorithm;

const PASS: &str = "process test passphrase";

fn batch(start: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from((start..start + n).collect::<Vec<_>>()))],
    )
    .unwrap()
}

fn keys(dir: &Path) -> Keys {
    let opts = LocalKmsOptions::new().with_argon2(Argon2Params::insecure_for_tests());
    let path = dir.join("keystore");
    let kms = Arc::new(if path.exists() {
        LocalKms::open(&path, RootSecret::passphrase(PASS), opts).unwrap()
    } else {
        LocalKms::create(&path, RootSecret::passphrase(PASS), opts).unwrap()
    });
    let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default()).unwrap());
    Keys { kms, cache }
}

/// The catalog URL of a test: the one its parent gave a child, else SQLite in the test's directory.
fn catalog_url(dir: &Path) -> String {
    std::env::var("COLVAULT_TEST_CATALOG").unwrap_or_else(|_| format!("sqlite:{}", dir.join("catalog.db").display()))
}

/// The test's catalog (each call is a new handle, as another process's).
fn catalog(dir: &Path) -> Arc<dyn colvault::catalog::Catalog> {
    colvault::catalog::open(&catalog_url(dir)).unwrap()
}

fn child(test: &str, dir: &Path, mode: &str, url: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("COLVAULT_TEST_CHILD", mode)
        .env("COLVAULT_TEST_DIR", dir)
        .env("COLVAULT_TEST_CATALOG", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

fn ids(p: &Project, table: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for b in p.table(table).unwrap().scan().build().unwrap().read_all().unwrap() {
        out.extend(
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .iter()
                .copied(),
        );
    }
    out.sort_unstable();
    out
}

/// `procs` processes append `per_proc` commits each to one table through the catalog at `url`:
/// every commit is there exactly once, and the versions are contiguous.
fn appenders(test: &str, procs: i64, per_proc: i64, url: Option<String>) {
    if let Ok(mode) = std::env::var("COLVAULT_TEST_CHILD") {
        let dir = PathBuf::from(std::env::var("COLVAULT_TEST_DIR").unwrap());
        let who: i64 = mode.strip_prefix("append:").unwrap().parse().unwrap();
        let p = Project::open(&catalog(&dir), "appending", keys(&dir)).unwrap();
        let t = p.table("t").unwrap();
        for i in 0..per_proc {
            t.append([batch(who * 100_000 + i * 10, 10)]).unwrap();
        }
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let url = url.unwrap_or_else(|| catalog_url(tmp.path()));
    let catalog = colvault::catalog::open(&url).unwrap();
    let p = Project::create(
        &catalog,
        tmp.path().join("proj"),
        "appending",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(tmp.path()),
    )
    .unwrap();
    p.create_table("t", batch(0, 1).schema()).unwrap();
    let kids: Vec<_> = (0..procs)
        .map(|i| child(test, tmp.path(), &format!("append:{i}"), &url).spawn().unwrap())
        .collect();
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    let t = p.table("t").unwrap();
    let head = t.head().unwrap();
    let commits = (procs * per_proc) as u64;
    assert_eq!(
        head.version,
        commits + 1,
        "{commits} appends committed on top of the create"
    );
    // Versions contiguous: every retained version reads, one append each after the create.
    for v in 1..=head.version {
        assert_eq!(t.snapshot(v).unwrap().files.len() as u64, v - 1, "version {v}");
    }
    let mut want: Vec<i64> = (0..procs)
        .flat_map(|w| (0..per_proc * 10).map(move |i| w * 100_000 + i))
        .collect();
    want.sort_unstable();
    assert_eq!(ids(&p, "t"), want, "every commit present exactly once");
}

#[test]
fn appenders_in_two_processes() {
    appenders("appenders_in_two_processes", 2, 100, None);
}

#[cfg(feature = "postgres")]
#[test]
fn appenders_in_four_processes_on_postgres() {
    let url = if std::env::var("COLVAULT_TEST_CHILD").is_ok() {
        None
    } else {
        match common::pg::database("appenders_in_four_processes_on_postgres") {
            Some(url) => Some(url),
            None => return,
        }
    };
    appenders("appenders_in_four_processes_on_postgres", 4, 100, url);
}

/// The child: appends forever, with compactions, rewraps and migrations in between, printing each
/// completed commit.
fn crash_child(dir: &Path) {
    let mut out = std::io::stdout();
    for round in 0u64.. {
        let p = Project::open(&catalog(dir), "crashing", keys(dir)).unwrap();
        if p.settings().migrating_from.is_some() {
            // A migration was interrupted: finish it.
            let target = ProjectSettings::encrypted(p.settings().algorithm, KeyChoice::ProjectDefault);
            p.migrate(target, &|_, _, _| {}).unwrap();
            continue;
        }
        let t = p.table("t").unwrap();
        let next = t.head().unwrap().rows() as i64 / 10;
        t.append([batch(next * 10, 10)]).unwrap();
        writeln!(out, "committed {next}").unwrap();
        out.flush().unwrap();
        match round % 6 {
            2 => {
                t.compact().unwrap();
            }
            3 => {
                p.rewrap(&|_, _, _| {}).unwrap();
            }
            5 => {
                let alg = if p.settings().algorithm == Algorithm::Aes256Gcm {
                    Algorithm::Aes256Ctr
                } else {
                    Algorithm::Aes256Gcm
                };
                p.migrate(
                    ProjectSettings::encrypted(alg, KeyChoice::ProjectDefault),
                    &|_, _, _| {},
                )
                .unwrap();
            }
            _ => {}
        }
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn sigkill_at_random_points() {
    sigkill("sigkill_at_random_points", None);
}

#[cfg(feature = "postgres")]
#[test]
fn sigkill_at_random_points_on_postgres() {
    let url = if std::env::var("COLVAULT_TEST_CHILD").is_ok() {
        None
    } else {
        match common::pg::database("sigkill_at_random_points_on_postgres") {
            Some(url) => Some(url),
            None => return,
        }
    };
    sigkill("sigkill_at_random_points_on_postgres", url);
}

/// A writer killed at 30+ random points of its commits, with the catalog at `url`: afterwards a
/// reader sees a head the catalog holds, whole commits only, and every reported commit.
fn sigkill(test: &str, url: Option<String>) {
    if std::env::var("COLVAULT_TEST_CHILD").is_ok() {
        crash_child(&PathBuf::from(std::env::var("COLVAULT_TEST_DIR").unwrap()));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let url = url.unwrap_or_else(|| catalog_url(tmp.path()));
    let catalog = || colvault::catalog::open(&url).unwrap();
    let p = Project::create(
        &catalog(),
        tmp.path().join("proj"),
        "crashing",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(tmp.path()),
    )
    .unwrap();
    p.create_table("t", batch(0, 1).schema()).unwrap();
    let cmk = p.settings().cmk.clone().unwrap();
    let mut printed_total = 0usize;
    let mut seed = 0x1234_5678_u64;
    // At least 30 kills, and on until the children have reported 30 commits between kills (a
    // loaded machine starts children slowly), within a bound.
    let mut kills = 0;
    let mut stretch = 1.0f64;
    for kill in 0..150 {
        if kill >= 30 && printed_total >= 30 {
            break;
        }
        kills += 1;
        if kill % 10 == 5 {
            // Rotate now and then, so rewraps have something to do.
            let k = keys(tmp.path());
            k.kms.rotate(&cmk).unwrap();
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // The kill lands 30-430 ms into the child, stretched while children report nothing (a loaded
        // machine starts them slowly), so kills keep landing inside commits.
        let delay = Duration::from_millis(((30 + (seed >> 33) % 400) as f64 * stretch) as u64);
        let mut kid = child(test, tmp.path(), "crash", &url).spawn().unwrap();
        let stdout = kid.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("committed"))
                .count()
        });
        std::thread::sleep(delay);
        kid.kill().unwrap(); // SIGKILL
        kid.wait().unwrap();
        let reported = reader.join().unwrap();
        printed_total += reported;
        if reported == 0 {
            stretch = (stretch * 1.5).min(20.0);
        }

        // Everything opens; the table holds exactly whole commits, every printed one included.
        let k = keys(tmp.path());
        let p = Project::open(&catalog(), "crashing", k).unwrap();
        let got = ids(&p, "t");
        assert_eq!(got.len() % 10, 0, "kill {kill}: a commit is whole or absent");
        assert_eq!(
            got,
            (0..got.len() as i64).collect::<Vec<_>>(),
            "kill {kill}: rows are exactly the committed ones"
        );
        assert!(
            got.len() / 10 >= printed_total,
            "kill {kill}: {} commits on disk, {printed_total} reported",
            got.len() / 10
        );
        // Vacuum leaves no orphans: every remaining data file is referenced by a retained version.
        p.vacuum(Duration::ZERO).unwrap();
        let t = p.table("t").unwrap();
        let head = t.head().unwrap();
        let mut live = std::collections::BTreeSet::new();
        for v in head.oldest_retained.max(1)..=head.version {
            for f in t.snapshot(v).unwrap().files {
                live.insert(f.name);
            }
        }
        let on_disk = files_in(&t.dir().join("data"));
        assert_eq!(
            on_disk,
            live.into_iter().collect::<Vec<_>>(),
            "kill {kill}: orphan files after vacuum"
        );
        assert!(
            files_in(&t.dir().join("_manifest")).iter().all(|f| f.ends_with(".cvm")),
            "kill {kill}"
        );
        assert!(
            files_in(&tmp.path().join("proj")).iter().all(|f| !f.ends_with(".tmp")),
            "kill {kill}"
        );
    }
    // Every commit a child reported is there (a commit may land just before a kill without being
    // reported, never the other way round).
    let p = Project::open(&catalog(), "crashing", keys(tmp.path())).unwrap();
    let head = p.table("t").unwrap().head().unwrap();
    eprintln!(
        "{kills} kills: {printed_total} commits reported, {} rows, table at version {}, settings generation {}",
        ids(&p, "t").len(),
        head.version,
        p.settings().generation
    );
    assert!(
        printed_total >= 30,
        "the children got work done between kills ({printed_total} commits)"
    );
    assert!(
        ids(&p, "t").len() / 10 >= printed_total,
        "{} commits on disk, {printed_total} reported",
        ids(&p, "t").len() / 10
    );
}
