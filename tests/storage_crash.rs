//! Writers on S3 killed with SIGKILL: during a multipart upload of a large data file (the kill
//! waits until the store reports the upload under way), and at random points of a run of commits.
//! Either way nothing partial is visible, every commit the catalog recorded reads back whole, and
//! `vacuum` removes the orphans.
//!
//! The test binary re-runs itself as the child (selected by environment variables), which reaches
//! the moto server through the standard `AWS_*` environment, as a user's process would.

#![cfg(feature = "s3")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use colvault::kms::{Argon2Params, CacheOptions, KeyCache, LocalKms, LocalKmsOptions, RootSecret};
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::table::TableWriteOptions;
use colvault::Algorithm;

const PASS: &str = "s3 crash test passphrase";
/// Rows of the large file: two 64-bit columns, incompressible, about 24 MB: three parts.
const ROWS_UPLOAD: i64 = 1_500_000;

/// `n` rows `start..start+n` and a second column of scrambled values (incompressible, so the
/// file is large).
fn batch(start: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("noise", DataType::Int64, false),
    ]));
    let ids: Vec<i64> = (start..start + n).collect();
    let noise: Vec<i64> = ids
        .iter()
        .map(|i| (*i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) as i64)
        .collect();
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(ids)), Arc::new(Int64Array::from(noise))],
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

fn catalog(dir: &Path) -> Arc<dyn colvault::catalog::Catalog> {
    colvault::catalog::open(&format!("sqlite:{}", dir.join("catalog.db").display())).unwrap()
}

fn ids(p: &Project) -> Vec<i64> {
    let mut out = Vec::new();
    for b in p
        .table("t")
        .unwrap()
        .scan()
        .columns(["id"])
        .build()
        .unwrap()
        .read_all()
        .unwrap()
    {
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

/// The child: appends until killed, printing each commit's first id once it is committed.
fn child_main(dir: &Path, mode: &str) {
    if mode == "upload" {
        // Every request to the store 300 ms late, so an upload of several parts lasts long
        // enough for the parent to kill it in the middle.
        let bucket = std::env::var("COLVAULT_TEST_BUCKET").unwrap();
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .build()
            .unwrap();
        let slow = colvault::storage::Instrumented::new(Arc::new(s3), Duration::from_millis(300));
        colvault::storage::register_store(&format!("s3://{bucket}"), Arc::new(slow.clone()));
        // Report every upload started (a PUT or multipart upload start), as it starts.
        std::thread::spawn(move || {
            let mut seen = 0;
            loop {
                let puts = slow.counts().puts;
                if puts != seen {
                    seen = puts;
                    println!("puts {puts}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
    let p = Project::open(&catalog(dir), "crash", keys(dir)).unwrap();
    let t = p.table("t").unwrap().with_write_options(TableWriteOptions {
        row_group_rows: 1 << 20,
        file_rows: 8 << 20,
        ..Default::default()
    });
    let rows: i64 = if mode == "upload" { ROWS_UPLOAD } else { 1000 };
    let base: i64 = std::env::var("COLVAULT_TEST_START").map_or(1_000_000, |s| s.parse().unwrap());
    for i in 0.. {
        let start = base + i * rows;
        println!("writing {start}");
        t.append([batch(start, rows)]).unwrap();
        println!("committed {start}");
    }
}

/// The number after `key` in a line of the child's output (the test harness may have printed
/// its own text before it on the same line).
fn value(line: &str, key: &str) -> Option<i64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn child(test: &str, dir: &Path, mode: &str, start: i64, env: &[(&'static str, String)]) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("COLVAULT_TEST_CHILD", mode)
        .env("COLVAULT_TEST_START", start.to_string())
        .env("COLVAULT_TEST_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Sets up a project on a fresh bucket; the child's environment.
/// A child process's environment.
type Env = Vec<(&'static str, String)>;

fn setup(test: &str, dir: &Path) -> Option<(Project, String, Env)> {
    let server = common::moto::server(test)?;
    let bucket = server.bucket(test);
    common::stores::register_s3(server, &bucket);
    let p = Project::create(
        &catalog(dir),
        format!("s3://{bucket}/crash"),
        "crash",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(dir),
    )
    .unwrap();
    let (_, _) = p.create_table_from("t", batch(0, 1).schema(), [batch(0, 10)]).unwrap();
    Some((p, bucket, server.env()))
}

/// After a kill: what reads is exactly the creation's rows and whole commits; every data object
/// the head does not reference goes with `vacuum`, and nothing the head needs does.
fn check_after_kill(p: &Project, committed: &[i64], rows: i64, maybe: Option<i64>) {
    let got = ids(p);
    let mut want: Vec<i64> = (0..10).collect();
    for &s in committed {
        want.extend(s..s + rows);
    }
    if got.len() != want.len() {
        // The commit in flight when the child died may have reached the catalog before its
        // "committed" line: then it is there whole.
        let s = maybe.unwrap_or_else(|| {
            panic!(
                "rows appeared that no commit wrote: {} rows, {} expected",
                got.len(),
                want.len()
            )
        });
        want.extend(s..s + rows);
    }
    want.sort_unstable();
    assert_eq!(got, want, "a partial or lost commit is visible");
    let t = p.table("t").unwrap();
    p.vacuum(Duration::ZERO).unwrap();
    let live: Vec<String> = t
        .head()
        .unwrap()
        .files
        .iter()
        .map(|f| format!("data/{}", f.name))
        .collect();
    let mut on_store: Vec<String> = t.storage().list("data").unwrap().into_iter().map(|e| e.name).collect();
    on_store.sort();
    let mut live_sorted = live.clone();
    live_sorted.sort();
    assert_eq!(on_store, live_sorted, "vacuum left orphans or removed live files");
    assert_eq!(ids(p), want);
}

#[test]
fn sigkill_during_multipart_upload() {
    let test = "sigkill_during_multipart_upload";
    if let Ok(mode) = std::env::var("COLVAULT_TEST_CHILD") {
        return child_main(&PathBuf::from(std::env::var("COLVAULT_TEST_DIR").unwrap()), &mode);
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some((p, bucket, env)) = setup(test, tmp.path()) else {
        return;
    };
    let mut all_committed = Vec::new();
    // Kill the child while it uploads a file of several parts (its store is slowed down); the
    // store then lists the upload as incomplete, and nothing partial may be visible.
    for round in 0..2 {
        let start = 10_000_000 * (round as i64 + 1);
        let mut env = env.clone();
        env.push(("COLVAULT_TEST_BUCKET", bucket.clone()));
        let mut kid = child(test, tmp.path(), "upload", start, &env);
        let mut lines = BufReader::new(kid.stdout.take().unwrap()).lines();
        // (The test harness prints its own lines first.) Once writing, the first upload the
        // child starts is the data file's multipart upload: kill as soon as it is reported. Its
        // parts and completion take 300 ms each, and the manifest comes after them.
        let mut writing = false;
        let started = lines.by_ref().map_while(Result::ok).any(|l| {
            writing |= value(&l, "writing ").is_some();
            writing && value(&l, "puts ").is_some()
        });
        assert!(started, "round {round}: the child ended before starting an upload");
        kid.kill().unwrap();
        kid.wait().unwrap();
        let mut committed = Vec::new();
        let mut last_writing = start;
        for l in lines.map_while(Result::ok) {
            if let Some(s) = value(&l, "committed ") {
                committed.push(s);
            }
            if let Some(s) = value(&l, "writing ") {
                last_writing = s;
            }
        }
        all_committed.extend(&committed);
        let in_flight = Some(last_writing).filter(|s| !committed.contains(s));
        check_after_kill(&p, &all_committed, ROWS_UPLOAD, in_flight);
        if ids(&p).len() as i64 != 10 + all_committed.len() as i64 * ROWS_UPLOAD {
            all_committed.push(last_writing);
        }
        assert!(
            committed.is_empty() && all_committed.is_empty(),
            "round {round}: a commit happened: {committed:?} {all_committed:?} {} rows",
            ids(&p).len()
        );
    }
}

#[test]
fn sigkill_during_commits() {
    let test = "sigkill_during_commits";
    if let Ok(mode) = std::env::var("COLVAULT_TEST_CHILD") {
        return child_main(&PathBuf::from(std::env::var("COLVAULT_TEST_DIR").unwrap()), &mode);
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some((p, _bucket, env)) = setup(test, tmp.path()) else {
        return;
    };
    let mut all_committed: Vec<i64> = Vec::new();
    for round in 0..6i64 {
        let mut kid = child(test, tmp.path(), "commits", 1_000_000 * (round + 1), &env);
        let mut lines = BufReader::new(kid.stdout.take().unwrap()).lines();
        // Let a few commits through, then kill at a point that moves from round to round.
        let wanted = 2 + round as usize;
        let mut last_writing = None;
        let mut committed = Vec::new();
        let read_line = |committed: &mut Vec<i64>, last: &mut Option<i64>, l: String| {
            if let Some(s) = value(&l, "writing ") {
                *last = Some(s);
            }
            if let Some(s) = value(&l, "committed ") {
                committed.push(s);
            }
        };
        for l in lines.by_ref() {
            read_line(&mut committed, &mut last_writing, l.unwrap());
            if committed.len() == wanted {
                std::thread::sleep(Duration::from_millis(3 * round as u64));
                break;
            }
        }
        kid.kill().unwrap();
        kid.wait().unwrap();
        for l in lines.map_while(Result::ok) {
            read_line(&mut committed, &mut last_writing, l);
        }
        all_committed.extend(&committed);
        let in_flight = last_writing.filter(|s| !committed.contains(s));
        check_after_kill(&p, &all_committed, 1000, in_flight);
        if ids(&p).len() != 10 + all_committed.len() * 1000 {
            // The commit in flight made it into the catalog before the kill.
            all_committed.push(in_flight.unwrap());
        }
        assert_eq!(ids(&p).len(), 10 + all_committed.len() * 1000, "round {round}");
    }
}
