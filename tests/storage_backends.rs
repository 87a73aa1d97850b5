//! The table and hostile-storage suites on every data-plane backend: a local directory,
//! `memory://`, and S3 (moto's server on loopback, a bucket per test; feature `s3`).
//!
//! Each test body takes a [`Backend`]; `backend_tests!` runs it as `NAME::local`, `NAME::memory`
//! and `NAME::s3`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use colvault::kms::KmsAdmin;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::storage::{Instrumented, Storage};
use colvault::table::Table;
use colvault::{Algorithm, Error};
use common::stores::{location, Backend};
use common::{keys, Fixture};

fn wide(start: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("score", DataType::Int64, true),
    ]));
    let ids: Vec<i64> = (start..start + n).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("name-{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                ids.iter().map(|i| (i % 7 != 0).then_some(i * 3)).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn ids(t: &Table) -> Result<Vec<i64>, Error> {
    let mut out = Vec::new();
    for b in t.scan().build()?.read_all()? {
        let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend(a.values().iter().copied());
    }
    out.sort_unstable();
    Ok(out)
}

fn encrypted() -> ProjectSettings {
    ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault)
}

/// A fixture and an encrypted project on `backend`, or `None` (skipped).
fn setup(backend: Backend, test: &str) -> Option<(Fixture, Project)> {
    let fx = Fixture::new();
    let loc = location(backend, fx.dir.path(), test)?;
    let p = Project::create(&fx.catalog, &loc, "sales", encrypted(), keys(&fx)).unwrap();
    assert_eq!(p.location(), loc, "the catalog records the location as given");
    Some((fx, p))
}

fn round_trip_and_maintenance(backend: Backend) {
    let Some((fx, p)) = setup(backend, "round_trip_and_maintenance") else {
        return;
    };
    let (t, _) = p
        .create_table_from("orders", wide(0, 1).schema(), [wide(0, 500)])
        .unwrap();
    for i in 1..4 {
        t.append([wide(i * 500, 500)]).unwrap();
    }
    let want: Vec<i64> = (0..2000).collect();
    assert_eq!(ids(&t).unwrap(), want);

    // Reopened by name through the catalog, as another process would.
    let again = Project::open(&fx.catalog, "sales", keys(&fx)).unwrap();
    let t2 = again.table("orders").unwrap();
    assert_eq!(ids(&t2).unwrap(), want);
    // One column, with a filter the statistics decide.
    let names: usize = t2
        .scan()
        .columns(["name"])
        .build()
        .unwrap()
        .read_all()
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(names, 2000);

    // Maintenance: compact, rotate + rewrap, re-encrypt, migrate, expire, vacuum.
    assert!(t.compact().unwrap().is_some());
    assert_eq!(t.head().unwrap().files.len(), 1);
    let cmk = p.settings().cmk.clone().unwrap();
    fx.kms.rotate(&cmk).unwrap();
    fx.cache.invalidate();
    let r = t.rewrap(&|_, _, _| {}).unwrap();
    assert_eq!(r.files, 1);
    assert!(t.head().unwrap().files.iter().all(|f| f.key_version == 2));
    t.reencrypt(&|_, _, _| {}).unwrap();
    let p = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Aes256Ctr, KeyChoice::ProjectDefault),
            &|_, _, _| {},
        )
        .unwrap();
    assert_eq!(p.settings().algorithm, Algorithm::Aes256Ctr);
    let t = p.table("orders").unwrap();
    assert_eq!(t.head().unwrap().algorithm, Algorithm::Aes256Ctr);
    assert_eq!(ids(&t).unwrap(), want);
    let head = t.head().unwrap().version;
    assert!(t.expire_snapshots(head).unwrap() > 0);
    let before = p.storage().list("").unwrap().len();
    let removed = p.vacuum(Duration::ZERO).unwrap();
    assert!(removed > 0, "vacuum removed nothing");
    assert_eq!(p.storage().list("").unwrap().len(), before - removed);
    assert_eq!(ids(&t).unwrap(), want, "vacuum removed something the head needs");
    // Everything left is reachable: one data file, the retained manifests (the expiry's own
    // commit and the version it kept), table.id, the settings.
    let left: Vec<String> = p.storage().list("").unwrap().into_iter().map(|e| e.name).collect();
    let h = t.head().unwrap();
    let retained = (h.version - h.oldest_retained + 1) as usize;
    assert_eq!(retained, 2);
    assert_eq!(left.len(), 3 + retained, "{left:?}");
    assert_eq!(left.iter().filter(|n| n.ends_with(".cvlt")).count(), 1, "{left:?}");

    // Dropping the table and the project leaves nothing behind.
    p.drop_table("orders").unwrap();
    assert_eq!(p.storage().list("tables").unwrap(), vec![]);
    let storage = p.storage().clone();
    p.drop_project().unwrap();
    assert_eq!(storage.list("").unwrap(), vec![]);
}

fn vacuum_keeps_young_orphans_and_what_is_live(backend: Backend) {
    let Some((_fx, p)) = setup(backend, "vacuum_grace") else {
        return;
    };
    let (t, _) = p.create_table_from("t", wide(0, 1).schema(), [wide(0, 10)]).unwrap();
    let s = t.storage();
    s.put_new("data/orphan.cvlt", Bytes::from_static(b"left by a crash"))
        .unwrap();
    s.put_new(
        "_manifest/v00000000000000000009-00000000000000000000000000000000.cvm",
        Bytes::from_static(b"x"),
    )
    .unwrap();
    // Young orphans survive (a concurrent writer's uncommitted objects look the same).
    assert_eq!(p.vacuum(Duration::from_secs(3600)).unwrap(), 0);
    assert!(s.get("data/orphan.cvlt").unwrap().is_some());
    assert_eq!(p.vacuum(Duration::ZERO).unwrap(), 2);
    assert!(s.get("data/orphan.cvlt").unwrap().is_none());
    assert_eq!(ids(&t).unwrap(), (0..10).collect::<Vec<_>>());
    // An unregistered table prefix (a creation killed before its registration) goes too.
    p.storage()
        .put_new(
            "tables/0123456789abcdef0123456789abcdef/table.id",
            Bytes::from_static(b"x"),
        )
        .unwrap();
    assert_eq!(p.vacuum(Duration::ZERO).unwrap(), 1);
    assert_eq!(p.storage().list_dirs("tables").unwrap().len(), 1);
}

/// Flips one byte of object `name` in place (an attacker with write access to the bucket).
fn flip(s: &Storage, name: &str, at: usize) {
    let mut b = s.get(name).unwrap().unwrap().to_vec();
    b[at] ^= 0x01;
    s.put(name, b.into()).unwrap();
}

fn hostile_storage_is_refused(backend: Backend) {
    let Some((fx, p)) = setup(backend, "hostile_storage") else {
        return;
    };
    let (t, _) = p.create_table_from("t", wide(0, 1).schema(), [wide(0, 300)]).unwrap();
    t.append([wide(300, 300)]).unwrap();
    let head = t.head().unwrap();
    let s = t.storage().clone();
    let data = format!("data/{}", head.files[0].name);
    let len = head.files[0].len as usize;

    // A flipped byte in a chunk, in the footer, and a truncated file: typed errors, no panic.
    for at in [10, len - 20] {
        let orig = s.get(&data).unwrap().unwrap();
        flip(&s, &data, at);
        let err = ids(&t).unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "flip at {at}: {err:?}");
        s.put(&data, orig).unwrap();
    }
    let orig = s.get(&data).unwrap().unwrap();
    s.put(&data, orig.slice(..len / 2)).unwrap();
    let err = ids(&t).unwrap_err();
    assert!(
        matches!(err, Error::Integrity { .. } | Error::Io { .. } | Error::NotColvault(_)),
        "truncated: {err:?}"
    );
    s.put(&data, orig).unwrap();
    assert_eq!(ids(&t).unwrap().len(), 600);

    // The head manifest deleted or replaced by an older one: a rollback, refused.
    let head_file = t.manifest_file(head.version).unwrap();
    let head_name = format!("_manifest/{}", head_file.file_name().unwrap().to_str().unwrap());
    let saved = s.get(&head_name).unwrap().unwrap();
    s.delete(&head_name).unwrap();
    let fresh = Project::open(&fx.catalog, "sales", keys(&fx))
        .unwrap()
        .table("t")
        .unwrap();
    assert!(
        matches!(fresh.head(), Err(Error::TableRollback { .. })),
        "{:?}",
        fresh.head()
    );
    assert!(p.vacuum(Duration::ZERO).is_err(), "vacuum ran on a rolled-back table");
    s.put_new(&head_name, saved).unwrap();
    assert_eq!(ids(&fresh).unwrap().len(), 600);

    // The settings replaced by a plaintext project's: a downgrade, refused before any key is used.
    let fx2 = Fixture::new();
    let loc2 = location(backend, fx2.dir.path(), "hostile_storage_plain").unwrap();
    let plain = Project::create(&fx2.catalog, &loc2, "sales", ProjectSettings::plaintext(), keys(&fx2)).unwrap();
    let plain_settings = plain
        .storage()
        .list("")
        .unwrap()
        .into_iter()
        .find(|e| e.name.starts_with("project-"))
        .unwrap();
    let bytes = plain.storage().get(&plain_settings.name).unwrap().unwrap();
    let ours = p
        .storage()
        .list("")
        .unwrap()
        .into_iter()
        .find(|e| e.name.starts_with("project-"))
        .unwrap();
    let saved = p.storage().get(&ours.name).unwrap().unwrap();
    p.storage().put(&ours.name, bytes).unwrap();
    let err = Project::open(&fx.catalog, "sales", keys(&fx)).unwrap_err();
    assert!(
        matches!(err, Error::Downgrade { .. } | Error::Integrity { .. }),
        "{err:?}"
    );
    p.storage().put(&ours.name, saved).unwrap();
    Project::open(&fx.catalog, "sales", keys(&fx)).unwrap();
}

fn concurrent_appenders_lose_nothing(backend: Backend) {
    let Some((fx, p)) = setup(backend, "concurrent_appenders") else {
        return;
    };
    p.create_table("t", wide(0, 1).schema()).unwrap();
    let writers = 16;
    let per = 3;
    std::thread::scope(|s| {
        for w in 0..writers {
            let catalog = common::catalog_in(fx.dir.path());
            let keys = keys(&fx);
            s.spawn(move || {
                // Each writer with its own catalog handle and project handle, as another process.
                let p = Project::open(&catalog, "sales", keys).unwrap();
                let t = p.table("t").unwrap();
                for i in 0..per {
                    t.append([wide((w * per + i) * 10, 10)]).unwrap();
                }
            });
        }
    });
    let t = p.table("t").unwrap();
    let got = ids(&t).unwrap();
    assert_eq!(got, (0..writers * per * 10).collect::<Vec<_>>(), "a commit was lost");
    assert_eq!(t.head().unwrap().version, (writers * per + 1) as u64);
    // Every lost race's manifest was removed or is vacuumable; nothing live goes.
    p.vacuum(Duration::ZERO).unwrap();
    assert_eq!(ids(&t).unwrap().len() as i64, writers * per * 10);
}

crate::backend_tests!(
    round_trip_and_maintenance,
    vacuum_keeps_young_orphans_and_what_is_live,
    hostile_storage_is_refused,
    concurrent_appenders_lose_nothing,
);

/// Requests and bytes of reads on an instrumented in-memory store: opening a file costs one
/// round trip (its magic and tail, in parallel), and a one-column read fetches that column's
/// chunks (coalesced) and nothing of the others.
#[test]
fn reads_take_few_requests_and_only_the_needed_bytes() {
    let fx = Fixture::new();
    let inner = Arc::new(object_store::memory::InMemory::new());
    let counted = Instrumented::new(inner, Duration::ZERO);
    colvault::storage::register_store("counted://reads", Arc::new(counted.clone()));
    let p = Project::create(&fx.catalog, "counted://reads/p", "sales", encrypted(), keys(&fx)).unwrap();
    let big = wide(0, 200_000);
    let (t, _) = p.create_table_from("t", big.schema(), [big]).unwrap();
    let head = t.head().unwrap();
    assert_eq!(head.files.len(), 1);
    let file_len = head.files[0].len;
    assert!(
        file_len > 2 * 64 * 1024,
        "the sample file must be larger than the tail read"
    );

    counted.reset();
    let n: usize = t
        .scan()
        .build()
        .unwrap()
        .read_all()
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(n, 200_000);
    let whole = counted.counts();
    counted.reset();
    let one: usize = t
        .scan()
        .columns(["score"])
        .build()
        .unwrap()
        .read_all()
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(one, 200_000);
    let col = counted.counts();
    eprintln!("whole-table read: {whole:?}; one-column read: {col:?}; file {file_len} bytes");
    // The head manifest (1 GET), the file's magic and tail (2 GETs, one round trip), and the
    // column's chunks coalesced into few requests.
    assert!(col.gets <= 4, "one-column read took {} GETs", col.gets);
    assert!(whole.gets <= 6, "whole-table read took {} GETs", whole.gets);
    // Bytes: the one-column read fetched well under the whole file.
    assert!(
        col.get_bytes < whole.get_bytes,
        "one column fetched {} bytes, the whole table {}",
        col.get_bytes,
        whole.get_bytes
    );
    assert!(
        whole.get_bytes >= file_len,
        "the whole-table read fetched less than the file"
    );
}
