//! Readers in other threads (each with its own project handle, as another process would have)
//! while the table is compacted, rewrapped, re-encrypted, expired and vacuumed, rotated, and
//! migrated to another algorithm: every read they finish sees one whole snapshot (all rows,
//! once each), and every error they meet is one a fresh scan fixes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use colvault::kms::KmsAdmin;
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::{Algorithm, Error};
use common::id_batch as batch;
use common::Fixture;

const APPENDS: i64 = 8;
const ROWS: i64 = 500;

/// The sorted ids of one scan of the table through a project handle opened now.
fn scan(dir: &std::path::Path, keys: &Keys) -> Result<Vec<i64>, Error> {
    // Its own catalog handle, as another process would have.
    let catalog = common::catalog_in(dir.parent().expect("the project is inside the fixture's directory"));
    let p = Project::open(&catalog, "concurrency", keys.clone())?;
    let t = p.table("t")?;
    let mut ids: Vec<i64> = Vec::new();
    for b in t.scan().build()?.read_all()? {
        ids.extend(b.column(0).as_primitive::<Int64Type>().values().iter());
    }
    ids.sort_unstable();
    Ok(ids)
}

/// An aes256 project with an empty table `t`.
fn setup() -> (Fixture, Keys, std::path::PathBuf, Project, colvault::table::Table) {
    let fx = Fixture::new();
    let keys = common::keys(&fx);
    let dir = fx.dir.path().join("proj");
    let p = Project::create(
        &fx.catalog,
        &dir,
        "concurrency",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys.clone(),
    )
    .unwrap();
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    (fx, keys, dir, p, t)
}

#[test]
fn readers_see_whole_snapshots_during_every_maintenance_operation() {
    let (fx, keys, dir, p, t) = setup();
    for i in 0..APPENDS {
        t.append([batch(i * ROWS, ROWS)]).unwrap();
    }
    let expected: Vec<i64> = (0..APPENDS * ROWS).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, reads, retried) = (stop.clone(), reads.clone(), retried.clone());
            let (dir, keys, expected) = (dir.clone(), keys.clone(), expected.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let ids = match scan(&dir, &keys) {
                        Ok(ids) => ids,
                        Err(first) => {
                            // Only a concurrent change may fail a read, and a fresh scan fixes it.
                            assert!(
                                matches!(first, Error::SnapshotExpired { .. }),
                                "a concurrent change surfaced as {first:?}"
                            );
                            retried.fetch_add(1, Ordering::SeqCst);
                            let mut again = scan(&dir, &keys);
                            for _ in 0..20 {
                                match again {
                                    Err(Error::SnapshotExpired { .. }) => again = scan(&dir, &keys),
                                    _ => break,
                                }
                            }
                            again.unwrap_or_else(|e| panic!("retry after {first} failed with {e:?}"))
                        }
                    };
                    assert_eq!(ids, expected, "a read saw a partial or mixed snapshot");
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Let the readers get going before each operation, so reads overlap every one of them.
    let wait_for_reads = |n: usize| {
        let target = reads.load(Ordering::SeqCst) + n;
        while reads.load(Ordering::SeqCst) < target {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let none = |_: &str, _: u64, _: u64| {};
    wait_for_reads(2);
    t.compact().unwrap().expect("eight small files compact");
    wait_for_reads(2);
    p.rewrap(&none).unwrap();
    wait_for_reads(2);
    p.reencrypt(&none).unwrap();
    wait_for_reads(2);
    let head = t.head().unwrap().version;
    t.expire_snapshots(head).unwrap();
    t.vacuum(Duration::ZERO).unwrap();
    wait_for_reads(2);
    fx.kms.rotate(p.settings().cmk.as_ref().unwrap()).unwrap();
    fx.cache.invalidate();
    p.rewrap(&none).unwrap();
    wait_for_reads(2);
    let migrated = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Aes256Ctr, KeyChoice::ProjectDefault),
            &none,
        )
        .unwrap();
    wait_for_reads(2);
    // Several rounds of append + compact + expire + vacuum in quick succession.
    let t2 = migrated.table("t").unwrap();
    for _ in 0..5 {
        t2.compact().unwrap();
        let head = t2.head().unwrap().version;
        t2.expire_snapshots(head).unwrap();
        t2.vacuum(Duration::ZERO).unwrap();
        migrated.rewrap(&none).unwrap();
    }
    wait_for_reads(2);
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("a reader failed (see its panic above)");
    }
    assert_eq!(scan(&dir, &keys).unwrap(), expected);
    assert_eq!(migrated.settings().algorithm, Algorithm::Aes256Ctr);
    eprintln!(
        "{} whole reads, {} retried after a concurrent change",
        reads.load(Ordering::SeqCst),
        retried.load(Ordering::SeqCst)
    );
}

#[test]
fn a_scan_whose_snapshot_is_vacuumed_underneath_it_gets_a_retriable_error() {
    let (_fx, keys, dir, _p, t) = setup();
    for i in 0..3 {
        t.append([batch(i * ROWS, ROWS)]).unwrap();
    }
    // The scan has read its manifest; files are opened as it goes.
    let reader = t.scan().build().unwrap();
    t.compact().unwrap().unwrap();
    let head = t.head().unwrap().version;
    t.expire_snapshots(head).unwrap();
    assert!(t.vacuum(Duration::ZERO).unwrap() >= 3);
    let err = reader.read_all().unwrap_err();
    assert!(matches!(err, Error::SnapshotExpired { version: 4, .. }), "{err:?}");
    // A fresh scan reads the current version.
    assert_eq!(scan(&dir, &keys).unwrap(), (0..3 * ROWS).collect::<Vec<_>>());

    // A file missing from a version that is still retained is damage, not a race.
    let m = t.head().unwrap();
    std::fs::remove_file(t.dir().join("data").join(&m.files[0].name)).unwrap();
    let err = scan(&dir, &keys).unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
}
