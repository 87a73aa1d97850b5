//! Projects and tables: settings, commits, snapshots, schema evolution, compaction, expiry,
//! vacuum, concurrency, tamper detection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use colvault::kms::{CreateKeyRequest, KmsAdmin, Principal};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::table::{Table, TableWriteOptions};
use colvault::{Algorithm, Error};
use common::keys;
use common::Fixture;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn rows(start: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let names: Vec<Option<String>> = ids.iter().map(|i| Some(format!("n{i}"))).collect();
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))],
    )
    .unwrap()
}

fn ids(t: &Table) -> Vec<i64> {
    let mut out = Vec::new();
    for b in t.scan().build().unwrap().read_all().unwrap() {
        let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend(a.values().iter().copied());
    }
    out.sort_unstable();
    out
}

/// The project's (only) settings file.
fn settings_file(p: &Project) -> std::path::PathBuf {
    let mut found: Vec<_> = std::fs::read_dir(p.dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cv"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

fn project(fx: &Fixture, alg: Algorithm) -> Project {
    let settings = match alg {
        Algorithm::None => ProjectSettings::plaintext(),
        a => ProjectSettings::encrypted(a, KeyChoice::ProjectDefault).allow_legacy_rc4(),
    };
    Project::create(
        &fx.catalog,
        fx.dir.path().join(format!("p_{alg}")),
        &format!("proj_{alg}"),
        settings,
        keys(fx),
    )
    .unwrap()
}

#[test]
fn project_names_and_settings() {
    let fx = Fixture::new();
    for bad in ["ab", "1abc", "has-dash", "a234567890123456789012345678", "spa ce"] {
        let err = Project::create(
            &fx.catalog,
            fx.dir.path().join(bad),
            bad,
            ProjectSettings::plaintext(),
            keys(&fx),
        )
        .unwrap_err();
        assert!(err.to_string().contains("starts with a letter"), "{bad}: {err}");
    }
    let p = project(&fx, Algorithm::Aes256Ctr);
    let again = Project::open(p.catalog(), p.name(), keys(&fx)).unwrap();
    assert_eq!(again.settings(), p.settings());
    assert_eq!(again.settings().algorithm, Algorithm::Aes256Ctr);
    let cmk = again.settings().cmk.clone().unwrap();
    // Grants name the project's immutable id, never its name.
    let grants = fx.kms.describe(&cmk).unwrap().grants;
    assert!(grants.contains(&Principal::new(p.project_id()).unwrap()));
    assert!(!grants.contains(&Principal::new("proj_aesctr").unwrap()));

    // Settings cannot be edited: any changed byte is refused.
    let path = settings_file(&p);
    let good = std::fs::read(&path).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        assert!(
            Project::open(p.catalog(), p.name(), keys(&fx)).is_err(),
            "byte {i} of the settings changed unnoticed"
        );
    }
    std::fs::write(&path, &good).unwrap();
    Project::open(p.catalog(), p.name(), keys(&fx)).unwrap();
}

#[test]
fn byok_needs_a_grant() {
    let fx = Fixture::new();
    let key = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    let s = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(key.clone()));
    let id = colvault::project::new_project_id().unwrap();
    let err = Project::create_with_id(
        &fx.catalog,
        fx.dir.path().join("b1"),
        "byok_proj",
        s.clone(),
        keys(&fx),
        id.clone(),
    )
    .unwrap_err();
    match &err {
        Error::AccessDenied { .. } => {
            // The grant command for this very project, said once.
            let msg = err.to_string();
            assert_eq!(msg.matches("colvault kms grant").count(), 1, "{msg}");
            assert!(msg.contains(&format!("colvault kms grant {key} {id}")), "{msg}");
        }
        other => panic!("expected AccessDenied, got {other}"),
    }
    // A grant to the project's name does not count: grants name ids.
    fx.kms.grant(&key, &Principal::new("byok_proj").unwrap()).unwrap();
    assert!(matches!(
        Project::create_with_id(
            &fx.catalog,
            fx.dir.path().join("b1"),
            "byok_proj",
            s.clone(),
            keys(&fx),
            id.clone()
        ),
        Err(Error::AccessDenied { .. })
    ));
    fx.kms.grant(&key, &Principal::new(&id).unwrap()).unwrap();
    let p = Project::create_with_id(&fx.catalog, fx.dir.path().join("b2"), "byok_proj", s, keys(&fx), id).unwrap();
    let t = p.create_table("t", schema()).unwrap();
    t.append([rows(0, 10)]).unwrap();
    assert_eq!(ids(&t).len(), 10);
}

#[test]
fn commits_snapshots_and_evolution() {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let p = project(&fx, alg);
        let t = p.create_table("events", schema()).unwrap();
        assert!(p.create_table("events", schema()).is_err());
        assert_eq!(p.list_tables().unwrap(), vec!["events".to_string()]);
        let c1 = t.append([rows(0, 100), rows(100, 50)]).unwrap();
        assert_eq!((c1.version, c1.rows_added), (2, 150));
        t.append([rows(150, 10)]).unwrap();
        assert_eq!(ids(&t), (0..160).collect::<Vec<_>>(), "{alg}");
        // An earlier snapshot still reads as it was.
        let old = t.scan().version(2).build().unwrap().read_all().unwrap();
        assert_eq!(old.iter().map(|b| b.num_rows()).sum::<usize>(), 150);
        // A rollback to an earlier version is refused when the caller knows a newer one.
        assert!(t.scan().version(2).min_version(3).build().is_err());

        // Add a nullable column: older files read it as null.
        t.add_column(Field::new("note", DataType::Utf8, true)).unwrap();
        assert!(t.add_column(Field::new("bad", DataType::Utf8, false)).is_err());
        let b = t.scan().columns(["id", "note"]).build().unwrap().read_all().unwrap();
        assert_eq!(b[0].schema().field(1).name(), "note");
        assert_eq!(b[0].column(1).null_count(), b[0].num_rows());

        t.overwrite([]).unwrap();
        assert!(ids(&t).is_empty());
        let h = t.history().unwrap();
        let ops: Vec<_> = h.iter().map(|e| e.operation.as_str()).collect();
        assert_eq!(ops, ["create", "append", "append", "add column", "overwrite"], "{alg}");

        p.drop_table("events").unwrap();
        assert!(p.table("events").is_err());
    }
}

#[test]
fn compact_expire_vacuum() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let t = p
        .create_table("t", schema())
        .unwrap()
        .with_write_options(TableWriteOptions {
            file_rows: 1000,
            ..Default::default()
        });
    for i in 0..6 {
        t.append([rows(i * 10, 10)]).unwrap();
    }
    let before = t.head().unwrap();
    assert_eq!(before.files.len(), 6);
    let v = t.compact().unwrap().unwrap();
    let after = t.head().unwrap();
    assert_eq!((after.version, after.files.len()), (v, 1));
    assert_eq!(ids(&t), (0..60).collect::<Vec<_>>());
    assert_eq!(std::fs::read_dir(t.dir().join("data")).unwrap().count(), 7);
    // Old snapshots still need the old files.
    assert_eq!(t.vacuum(Duration::ZERO).unwrap(), 0);
    t.expire_snapshots(v).unwrap();
    assert!(t.scan().version(2).build().is_err(), "an expired snapshot is gone");
    assert_eq!(t.vacuum(Duration::ZERO).unwrap(), 6);
    assert_eq!(std::fs::read_dir(t.dir().join("data")).unwrap().count(), 1);
    assert_eq!(ids(&t), (0..60).collect::<Vec<_>>());
    // A stray uncommitted file is left alone during the grace period, removed after.
    std::fs::write(t.dir().join("data/stray.cvlt"), b"x").unwrap();
    assert_eq!(t.vacuum(Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(t.vacuum(Duration::ZERO).unwrap(), 1);
}

#[test]
fn concurrent_appends_from_threads() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let t = p.create_table("t", schema()).unwrap();
    std::thread::scope(|s| {
        for th in 0..8i64 {
            let t = t.clone();
            s.spawn(move || {
                for i in 0..50i64 {
                    t.append([rows(th * 1000 + i * 10, 10)]).unwrap();
                }
            });
        }
    });
    let head = t.head().unwrap();
    assert_eq!(head.version, 401);
    assert_eq!(head.files.len(), 400);
    let mut want: Vec<i64> = (0..8).flat_map(|th| (0..500).map(move |i| th * 1000 + i)).collect();
    want.sort_unstable();
    assert_eq!(ids(&t), want);
}

#[test]
fn table_level_tampering_is_detected() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let a = p.create_table("a", schema()).unwrap();
    let b = p.create_table("b", schema()).unwrap();
    a.append([rows(0, 10)]).unwrap();
    a.append([rows(10, 10)]).unwrap();
    b.append([rows(100, 10)]).unwrap();
    let data = |t: &str| {
        let mut v: Vec<_> = std::fs::read_dir(p.table(t).unwrap().dir().join("data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    // 1. A data file replaced by an authentic file of another table.
    let a_files = data("a");
    let saved = std::fs::read(&a_files[0]).unwrap();
    std::fs::copy(&data("b")[0], &a_files[0]).unwrap();
    assert!(a.scan().build().unwrap().read_all().is_err());
    // 2. ... or by another authentic file of the same table.
    std::fs::copy(&a_files[1], &a_files[0]).unwrap();
    assert!(a.scan().build().unwrap().read_all().is_err());
    std::fs::write(&a_files[0], &saved).unwrap();
    assert_eq!(ids(&a).len(), 20);
    // 3. A manifest edited.
    a.head().unwrap();
    b.head().unwrap();
    let m = a.manifest_file(3).unwrap();
    let good = std::fs::read(&m).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 20] ^= 1;
    std::fs::write(&m, &bad).unwrap();
    let fresh = p.table("a").unwrap();
    assert!(matches!(fresh.head(), Err(Error::Integrity { .. })));
    std::fs::write(&m, &good).unwrap();
    // 4. A manifest version removed from the chain.
    let m2 = a.manifest_file(2).unwrap();
    let saved2 = std::fs::read(&m2).unwrap();
    std::fs::remove_file(&m2).unwrap();
    assert!(matches!(p.table("a").unwrap().head(), Err(Error::Integrity { .. })));
    std::fs::write(&m2, &saved2).unwrap();
    // 5. A manifest of another table moved in.
    let mb = b.manifest_file(2).unwrap();
    std::fs::copy(&mb, &m2).unwrap();
    assert!(p.table("a").unwrap().head().is_err());
    std::fs::write(&m2, &saved2).unwrap();
    assert_eq!(ids(&p.table("a").unwrap()).len(), 20);
}

#[test]
fn downgraded_manifest_is_refused() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let t = p.create_table("t", schema()).unwrap();
    t.append([rows(0, 10)]).unwrap();
    let head = t.head().unwrap();
    // An attacker without keys writes the next version as a checksummed (unencrypted) manifest that
    // lists the same files: readers follow the catalog's head, never a file they list, so it is
    // ignored, and vacuum removes it as an orphan.
    let mut forged = head.clone();
    forged.version = head.version + 1;
    let prev = std::fs::read(t.manifest_file(head.version).unwrap()).unwrap();
    forged.prev_digest = *blake3::hash(&prev).as_bytes();
    forged.algorithm = Algorithm::None;
    let bytes = forged.seal(None).unwrap();
    let forged_path = t.dir().join(format!("_manifest/v{:020}.cvm", forged.version));
    std::fs::write(&forged_path, &bytes).unwrap();
    let fresh = p.table("t").unwrap();
    assert_eq!(fresh.head().unwrap().version, head.version);
    assert_eq!(ids(&fresh).len(), 10);
    assert_eq!(fresh.vacuum(Duration::ZERO).unwrap(), 1);
    assert!(!forged_path.exists());
    // The same unsealed manifest in place of the head's file is refused.
    std::fs::write(t.manifest_file(head.version).unwrap(), &bytes).unwrap();
    let err = p.table("t").unwrap().head().unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
}

/// A manifest sealed under a CMK other than the project's is refused with `ManifestKeyMismatch`,
/// even when the project's principal may use that CMK and everything else about the manifest is
/// right (this project, table and version, chained after the head). Before, a manifest's key was
/// never compared with the project's CMK.
#[test]
fn a_manifest_under_another_cmk_is_refused() {
    use colvault::table::Manifest;
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let t = p.create_table("t", schema()).unwrap();
    t.append([rows(0, 10)]).unwrap();
    let head = t.head().unwrap();
    let cmk = p.settings().cmk.clone().unwrap();
    // Another key this project may use (a column key, or a BYOK granted to it).
    let other = fx
        .kms
        .create_key(CreateKeyRequest::project_default(p.principal().clone()))
        .unwrap()
        .id;
    let mut next = head.clone();
    next.version = head.version + 1;
    next.prev_digest = *blake3::hash(&std::fs::read(t.manifest_file(head.version).unwrap()).unwrap()).as_bytes();
    next.operation = "append".into();
    let access = p.access(t.table_id());
    let under_other = next.seal(Some((&access, &other))).unwrap();

    // The function itself: refused under the project's key, before any other check; opens when
    // that key is the one allowed (so the refusal is the key check's, not the seal's).
    let err = Manifest::open(
        &under_other,
        next.version,
        Some(t.table_id()),
        Some((&access, std::slice::from_ref(&cmk))),
    )
    .unwrap_err();
    match &err {
        Error::ManifestKeyMismatch {
            version,
            found,
            expected,
        } => {
            assert_eq!(*version, next.version);
            assert_eq!(found, other.as_str());
            assert_eq!(expected, cmk.as_str());
        }
        e => panic!("expected ManifestKeyMismatch, got {e}"),
    }
    let opened = Manifest::open(
        &under_other,
        next.version,
        Some(t.table_id()),
        Some((&access, std::slice::from_ref(&other))),
    )
    .unwrap();
    assert_eq!(opened, next);

    // Through the table, with the catalog's head pointed at it (as only someone who can write the
    // catalog could): the same next version sealed under the project's key is accepted ...
    let commit = |bytes: &[u8]| {
        let digest = *blake3::hash(bytes).as_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            t.dir().join(format!("_manifest/v{:020}-{hex}.cvm", next.version)),
            bytes,
        )
        .unwrap();
        let cur = fx.catalog.table_by_id(t.table_id()).unwrap().unwrap().head;
        let new = colvault::catalog::TableHead {
            version: next.version,
            digest,
        };
        assert!(fx.catalog.swap_head(t.table_id(), &cur, &new).unwrap());
    };
    commit(&next.seal(Some((&access, &cmk))).unwrap());
    assert_eq!(p.table("t").unwrap().head().unwrap().version, next.version);
    // ... and under the other key refused, with the typed error.
    commit(&under_other);
    let err = p.table("t").unwrap().head().unwrap_err();
    assert!(matches!(err, Error::ManifestKeyMismatch { .. }), "{err}");
}

#[test]
fn scan_options_and_expiry_by_age() {
    use colvault::{CmpOp, Predicate};
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Ctr);
    let t = p.create_table("t", schema()).unwrap();
    t.append([rows(0, 100)]).unwrap();
    t.append([rows(100, 100)]).unwrap();
    // Pruning by statistics skips the first file's row group entirely.
    let v: arrow::array::ArrayRef = Arc::new(Int64Array::from(vec![150]));
    let got = t
        .scan()
        .filter(Predicate::compare("id", CmpOp::GtEq, v))
        .batch_size(7)
        .build()
        .unwrap()
        .read_all()
        .unwrap();
    assert!(got.iter().all(|b| b.num_rows() <= 7));
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 100);
    let only_names = t.scan().columns(["name"]).build().unwrap().read_all().unwrap();
    assert_eq!(only_names[0].num_columns(), 1);
    // Nothing is older than an hour; everything is older than zero seconds (but the head stays).
    assert_eq!(t.expire_older_than(Duration::from_secs(3600)).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        t.expire_older_than(Duration::ZERO).unwrap(),
        2,
        "versions 1 and 2 go; the head stays"
    );
    assert_eq!(ids(&t).len(), 200);
}

#[test]
fn rewrites_after_add_column_and_refused_byok_leaves_nothing() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let t = p
        .create_table("t", schema())
        .unwrap()
        .with_write_options(TableWriteOptions {
            file_rows: 1000,
            ..Default::default()
        });
    t.append([rows(0, 10)]).unwrap();
    t.append([rows(10, 10)]).unwrap();
    t.add_column(Field::new("extra", DataType::Utf8, true)).unwrap();
    // Files written before the new column are widened with nulls when rewritten.
    t.compact().unwrap().unwrap();
    t.reencrypt(&|_, _, _| {}).unwrap();
    let p = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Aes256Ctr, KeyChoice::ProjectDefault),
            &|_, _, _| {},
        )
        .unwrap();
    let t = p.table("t").unwrap();
    assert_eq!(ids(&t), (0..20).collect::<Vec<_>>());
    let b = t.scan().columns(["extra"]).build().unwrap().read_all().unwrap();
    assert_eq!(b.iter().map(|b| b.column(0).null_count()).sum::<usize>(), 20);

    // A refused BYOK creation leaves no directory behind.
    let key = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    let dir = fx.dir.path().join("refused");
    let s = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(key));
    assert!(Project::create(&fx.catalog, &dir, "refused_proj", s, keys(&fx)).is_err());
    assert!(fx.catalog.project("refused_proj").unwrap().is_none());
    assert!(!dir.exists());
}
