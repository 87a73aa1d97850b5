//! Projects and tables: settings, commits, snapshots, schema evolution, compaction, expiry,
//! vacuum, concurrency, tamper detection; every test on every data-plane backend (a local
//! directory, `memory://`, S3 on moto: `NAME::local`, `NAME::memory`, `NAME::s3`), the tampering
//! done through the project's storage as an attacker with write access to the bucket would.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use colvault::kms::{CreateKeyRequest, KmsAdmin, Principal};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::table::{Table, TableWriteOptions};
use colvault::{Algorithm, Error};
use common::stores::{inventory, is_gone, location, manifest_object, settings_objects, Backend};
use common::{keys, Fixture};

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

/// The project's (only) settings object.
fn settings_file(p: &Project) -> String {
    let mut found = settings_objects(p.storage());
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// A project of algorithm `alg` at a fresh location on `backend`, or `None` (skipped).
fn project(fx: &Fixture, backend: Backend, test: &str, alg: Algorithm) -> Option<Project> {
    let settings = match alg {
        Algorithm::None => ProjectSettings::plaintext(),
        a => ProjectSettings::encrypted(a, KeyChoice::ProjectDefault).allow_legacy_rc4(),
    };
    let loc = location(backend, fx.dir.path(), test)?;
    Some(Project::create(&fx.catalog, &loc, &format!("proj_{alg}"), settings, keys(fx)).unwrap())
}

fn project_names_and_settings(backend: Backend) {
    let fx = Fixture::new();
    let Some(loc) = location(backend, fx.dir.path(), "project_names_and_settings") else {
        return;
    };
    for bad in ["ab", "1abc", "has-dash", "a234567890123456789012345678", "spa ce"] {
        let err = Project::create(
            &fx.catalog,
            format!("{loc}/{bad}"),
            bad,
            ProjectSettings::plaintext(),
            keys(&fx),
        )
        .unwrap_err();
        assert!(err.to_string().contains("starts with a letter"), "{bad}: {err}");
    }
    let p = project(&fx, backend, "project_names_and_settings", Algorithm::Aes256Ctr).unwrap();
    let again = Project::open(p.catalog(), p.name(), keys(&fx)).unwrap();
    assert_eq!(again.settings(), p.settings());
    assert_eq!(again.settings().algorithm, Algorithm::Aes256Ctr);
    let cmk = again.settings().cmk.clone().unwrap();
    // Grants name the project's immutable id, never its name.
    let grants = fx.kms.describe(&cmk).unwrap().grants;
    assert!(grants.contains(&Principal::new(p.project_id()).unwrap()));
    assert!(!grants.contains(&Principal::new("proj_aesctr").unwrap()));

    // Settings cannot be edited: any changed byte is refused.
    let (s, name) = (p.storage(), settings_file(&p));
    let good = s.get(&name).unwrap().unwrap();
    for i in 0..good.len() {
        let mut bad = good.to_vec();
        bad[i] ^= 0x01;
        s.put(&name, bad.into()).unwrap();
        assert!(
            Project::open(p.catalog(), p.name(), keys(&fx)).is_err(),
            "byte {i} of the settings changed unnoticed"
        );
    }
    s.put(&name, good).unwrap();
    Project::open(p.catalog(), p.name(), keys(&fx)).unwrap();
}

fn byok_needs_a_grant(backend: Backend) {
    let fx = Fixture::new();
    let Some(b1) = location(backend, fx.dir.path(), "byok_needs_a_grant") else {
        return;
    };
    let b2 = location(backend, fx.dir.path(), "byok_needs_a_grant").unwrap();
    let key = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    let s = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(key.clone()));
    let id = colvault::project::new_project_id().unwrap();
    let err = Project::create_with_id(&fx.catalog, &b1, "byok_proj", s.clone(), keys(&fx), id.clone()).unwrap_err();
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
        Project::create_with_id(&fx.catalog, &b1, "byok_proj", s.clone(), keys(&fx), id.clone()),
        Err(Error::AccessDenied { .. })
    ));
    fx.kms.grant(&key, &Principal::new(&id).unwrap()).unwrap();
    let p = Project::create_with_id(&fx.catalog, &b2, "byok_proj", s, keys(&fx), id).unwrap();
    let t = p.create_table("t", schema()).unwrap();
    t.append([rows(0, 10)]).unwrap();
    assert_eq!(ids(&t).len(), 10);
}

fn commits_snapshots_and_evolution(backend: Backend) {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let Some(p) = project(&fx, backend, "commits_snapshots_and_evolution", alg) else {
            return;
        };
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

fn compact_expire_vacuum(backend: Backend) {
    let fx = Fixture::new();
    let Some(p) = project(&fx, backend, "compact_expire_vacuum", Algorithm::Aes256Gcm) else {
        return;
    };
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
    let data_files = || inventory(&t.storage().child("data")).len();
    assert_eq!(data_files(), 7);
    // Old snapshots still need the old files.
    assert_eq!(t.vacuum(Duration::ZERO).unwrap(), 0);
    t.expire_snapshots(v).unwrap();
    assert!(t.scan().version(2).build().is_err(), "an expired snapshot is gone");
    assert_eq!(t.vacuum(Duration::ZERO).unwrap(), 6);
    assert_eq!(data_files(), 1);
    assert_eq!(ids(&t), (0..60).collect::<Vec<_>>());
    // A stray uncommitted file is left alone during the grace period, removed after.
    t.storage().put("data/stray.cvlt", b"x".to_vec().into()).unwrap();
    assert_eq!(t.vacuum(Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(t.vacuum(Duration::ZERO).unwrap(), 1);
}

fn concurrent_appends_from_threads(backend: Backend) {
    let fx = Fixture::new();
    let Some(p) = project(&fx, backend, "concurrent_appends_from_threads", Algorithm::Aes256Gcm) else {
        return;
    };
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

fn table_level_tampering_is_detected(backend: Backend) {
    let fx = Fixture::new();
    let Some(p) = project(&fx, backend, "table_level_tampering_is_detected", Algorithm::Aes256Gcm) else {
        return;
    };
    let a = p.create_table("a", schema()).unwrap();
    let b = p.create_table("b", schema()).unwrap();
    a.append([rows(0, 10)]).unwrap();
    a.append([rows(10, 10)]).unwrap();
    b.append([rows(100, 10)]).unwrap();
    let (sa, sb) = (a.storage().clone(), b.storage().clone());
    let data = |s: &colvault::storage::Storage| -> Vec<String> {
        s.list("data").unwrap().into_iter().map(|e| e.name).collect()
    };
    let get = |s: &colvault::storage::Storage, name: &str| s.get(name).unwrap().unwrap();
    // 1. A data file replaced by an authentic file of another table.
    let a_files = data(&sa);
    assert_eq!(a_files.len(), 2, "{a_files:?}");
    let saved = get(&sa, &a_files[0]);
    sa.put(&a_files[0], get(&sb, &data(&sb)[0])).unwrap();
    assert!(a.scan().build().unwrap().read_all().is_err());
    // 2. ... or by another authentic file of the same table.
    sa.put(&a_files[0], get(&sa, &a_files[1])).unwrap();
    assert!(a.scan().build().unwrap().read_all().is_err());
    sa.put(&a_files[0], saved).unwrap();
    assert_eq!(ids(&a).len(), 20);
    // 3. A manifest edited.
    a.head().unwrap();
    b.head().unwrap();
    let m = manifest_object(&a, 3);
    let good = get(&sa, &m);
    let mut bad = good.to_vec();
    let n = bad.len();
    bad[n - 20] ^= 1;
    sa.put(&m, bad.into()).unwrap();
    let fresh = p.table("a").unwrap();
    assert!(matches!(fresh.head(), Err(Error::Integrity { .. })));
    sa.put(&m, good).unwrap();
    // 4. A manifest version removed from the chain.
    let m2 = manifest_object(&a, 2);
    let saved2 = get(&sa, &m2);
    sa.delete(&m2).unwrap();
    assert!(sa.get(&m2).unwrap().is_none());
    assert!(matches!(p.table("a").unwrap().head(), Err(Error::Integrity { .. })));
    sa.put(&m2, saved2.clone()).unwrap();
    // 5. A manifest of another table moved in.
    let mb = manifest_object(&b, 2);
    sa.put(&m2, get(&sb, &mb)).unwrap();
    assert!(p.table("a").unwrap().head().is_err());
    sa.put(&m2, saved2).unwrap();
    assert_eq!(ids(&p.table("a").unwrap()).len(), 20);
}

fn downgraded_manifest_is_refused(backend: Backend) {
    let fx = Fixture::new();
    let Some(p) = project(&fx, backend, "downgraded_manifest_is_refused", Algorithm::Aes256Gcm) else {
        return;
    };
    let t = p.create_table("t", schema()).unwrap();
    t.append([rows(0, 10)]).unwrap();
    let head = t.head().unwrap();
    // An attacker without keys writes the next version as a checksummed (unencrypted) manifest that
    // lists the same files: readers follow the catalog's head, never a file they list, so it is
    // ignored, and vacuum removes it as an orphan.
    let mut forged = head.clone();
    forged.version = head.version + 1;
    let s = t.storage();
    let prev = s.get(&manifest_object(&t, head.version)).unwrap().unwrap();
    forged.prev_digest = *blake3::hash(&prev).as_bytes();
    forged.algorithm = Algorithm::None;
    let bytes = forged.seal(None).unwrap();
    let forged_path = format!("_manifest/v{:020}.cvm", forged.version);
    s.put(&forged_path, bytes.clone().into()).unwrap();
    let fresh = p.table("t").unwrap();
    assert_eq!(fresh.head().unwrap().version, head.version);
    assert_eq!(ids(&fresh).len(), 10);
    assert_eq!(fresh.vacuum(Duration::ZERO).unwrap(), 1);
    assert!(s.get(&forged_path).unwrap().is_none());
    // The same unsealed manifest in place of the head's file is refused.
    s.put(&manifest_object(&t, head.version), bytes.into()).unwrap();
    let err = p.table("t").unwrap().head().unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
}

/// A manifest sealed under a CMK other than the project's is refused with `ManifestKeyMismatch`,
/// even when the project's principal may use that CMK and everything else about the manifest is
/// right (this project, table and version, chained after the head). Before, a manifest's key was
/// never compared with the project's CMK.
fn a_manifest_under_another_cmk_is_refused(backend: Backend) {
    use colvault::table::Manifest;
    let fx = Fixture::new();
    let Some(p) = project(
        &fx,
        backend,
        "a_manifest_under_another_cmk_is_refused",
        Algorithm::Aes256Gcm,
    ) else {
        return;
    };
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
    let prev = t.storage().get(&manifest_object(&t, head.version)).unwrap().unwrap();
    next.prev_digest = *blake3::hash(&prev).as_bytes();
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
        t.storage()
            .put(
                &format!("_manifest/v{:020}-{hex}.cvm", next.version),
                bytes.to_vec().into(),
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

fn scan_options_and_expiry_by_age(backend: Backend) {
    use colvault::{CmpOp, Predicate};
    let fx = Fixture::new();
    let Some(p) = project(&fx, backend, "scan_options_and_expiry_by_age", Algorithm::Aes256Ctr) else {
        return;
    };
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

fn rewrites_after_add_column_and_refused_byok_leaves_nothing(backend: Backend) {
    let fx = Fixture::new();
    let Some(p) = project(
        &fx,
        backend,
        "rewrites_after_add_column_and_refused_byok_leaves_nothing",
        Algorithm::Aes256Gcm,
    ) else {
        return;
    };
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
    let dir = location(backend, fx.dir.path(), "refused").unwrap();
    let s = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(key));
    assert!(Project::create(&fx.catalog, &dir, "refused_proj", s, keys(&fx)).is_err());
    assert!(fx.catalog.project("refused_proj").unwrap().is_none());
    assert!(is_gone(&dir), "{dir}");
}

crate::backend_tests!(
    project_names_and_settings,
    byok_needs_a_grant,
    commits_snapshots_and_evolution,
    compact_expire_vacuum,
    concurrent_appends_from_threads,
    table_level_tampering_is_detected,
    downgraded_manifest_is_refused,
    a_manifest_under_another_cmk_is_refused,
    scan_options_and_expiry_by_age,
    rewrites_after_add_column_and_refused_byok_leaves_nothing,
);
