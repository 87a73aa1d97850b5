//! Tables across processes: concurrent appenders in two processes, and a writer killed with
//! SIGKILL at random points while it appends, compacts, rewraps and migrates.
//!
//! The test binary re-runs itself as the child process (selected by environment variables).

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

/// The catalog of the test's directory (SQLite; each call is a new handle, as another process's).
fn catalog(dir: &Path) -> Arc<dyn colvault::catalog::Catalog> {
    colvault::catalog::open(&format!("sqlite:{}", dir.join("catalog.db").display())).unwrap()
}

fn child(test: &str, dir: &Path, mode: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("COLVAULT_TEST_CHILD", mode)
        .env("COLVAULT_TEST_DIR", dir)
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

#[test]
fn appenders_in_two_processes() {
    if let Ok(mode) = std::env::var("COLVAULT_TEST_CHILD") {
        let dir = PathBuf::from(std::env::var("COLVAULT_TEST_DIR").unwrap());
        let who: i64 = mode.strip_prefix("append:").unwrap().parse().unwrap();
        let p = Project::open(&catalog(&dir), "two_procs", keys(&dir)).unwrap();
        let t = p.table("t").unwrap();
        for i in 0..50 {
            t.append([batch(who * 100_000 + i * 10, 10)]).unwrap();
        }
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = Project::create(
        &catalog(tmp.path()),
        tmp.path().join("proj"),
        "two_procs",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(tmp.path()),
    )
    .unwrap();
    p.create_table("t", batch(0, 1).schema()).unwrap();
    let kids: Vec<_> = (0..2)
        .map(|i| {
            child("appenders_in_two_processes", tmp.path(), &format!("append:{i}"))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    let head = p.table("t").unwrap().head().unwrap();
    assert_eq!(head.version, 101, "100 appends committed on top of the create");
    let mut want: Vec<i64> = (0..2).flat_map(|w| (0..500).map(move |i| w * 100_000 + i)).collect();
    want.sort_unstable();
    assert_eq!(ids(&p, "t"), want);
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
    if std::env::var("COLVAULT_TEST_CHILD").is_ok() {
        crash_child(&PathBuf::from(std::env::var("COLVAULT_TEST_DIR").unwrap()));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = Project::create(
        &catalog(tmp.path()),
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
        let delay = Duration::from_millis(30 + (seed >> 33) % 400);
        let mut kid = child("sigkill_at_random_points", tmp.path(), "crash").spawn().unwrap();
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
        printed_total += reader.join().unwrap();

        // Everything opens; the table holds exactly whole commits, every printed one included.
        let k = keys(tmp.path());
        let p = Project::open(&catalog(tmp.path()), "crashing", k).unwrap();
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
    let p = Project::open(&catalog(tmp.path()), "crashing", keys(tmp.path())).unwrap();
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
