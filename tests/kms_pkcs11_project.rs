//! Projects whose CMK lives in a PKCS#11 token (SoftHSM2, a fresh token per test): the library-level
//! equivalent of the quickstart, and crypto-shredding: once the key is deleted, nothing the test can
//! try decrypts an old copy of the project, the catalog or any colvault file.
#![cfg(feature = "pkcs11")]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use colvault::clock::ManualClock;
use colvault::kms::pkcs11::{version_label, version_object_id};
use colvault::kms::{CacheOptions, KeyCache, KeyState, Kms, KmsAdmin, Pkcs11Kms};
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::table::Table;
use colvault::{Algorithm, Error, FileReader, KeyAccess, ReaderOptions};
use common::id_batch as batch;
use common::softhsm::{self, Token};
use cryptoki::object::{Attribute, ObjectClass};

const DAY: Duration = Duration::from_secs(86_400);

struct World {
    dir: tempfile::TempDir,
    token: Token,
    clock: Arc<ManualClock>,
    kms: Arc<Pkcs11Kms>,
    catalog: Arc<dyn colvault::catalog::Catalog>,
}

fn world(test: &str) -> Option<World> {
    let token = softhsm::token(test)?;
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let kms = Arc::new(Pkcs11Kms::open(token.options().with_clock(clock.clone())).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let catalog = common::catalog_in(dir.path());
    Some(World {
        dir,
        token,
        clock,
        kms,
        catalog,
    })
}

impl World {
    /// Key services over `kms` with a cache of their own on the world's clock.
    fn keys_over(&self, kms: Arc<Pkcs11Kms>) -> Keys {
        let cache =
            Arc::new(KeyCache::new(kms.clone(), CacheOptions::default().with_clock(self.clock.clone())).unwrap());
        Keys { kms, cache }
    }
}

fn rows(t: &Table) -> colvault::Result<usize> {
    Ok(t.scan().build()?.read_all()?.iter().map(|b| b.num_rows()).sum())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn quickstart_equivalent_on_the_hsm() {
    let Some(w) = world("quickstart") else { return };
    let keys = w.keys_over(w.kms.clone());
    let p = Project::create(
        &w.catalog,
        w.dir.path().join("demo"),
        "demo",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys.clone(),
    )
    .unwrap();
    let cmk = p.settings().cmk.clone().unwrap();
    assert_eq!(w.kms.describe(&cmk).unwrap().grants, vec![p.principal().clone()]);
    let t = p.create_table("events", batch(0, 1).schema()).unwrap();
    for i in 0..3 {
        t.append([batch(i * 1000, 1000)]).unwrap();
    }
    assert_eq!(rows(&t).unwrap(), 3000);

    // Disable: reads fail (once the cache is dropped); enable: they work again.
    w.kms.disable(&cmk).unwrap();
    keys.cache.invalidate();
    assert!(matches!(rows(&t), Err(Error::KeyDisabled { .. })));
    w.kms.enable(&cmk).unwrap();
    assert_eq!(rows(&t).unwrap(), 3000);

    // Rotate: new files under version 2, old ones still read; rewrap moves everything to version 2.
    w.kms.rotate(&cmk).unwrap();
    t.append([batch(10_000, 10)]).unwrap();
    let versions: Vec<u32> = t.head().unwrap().files.iter().map(|f| f.key_version).collect();
    assert_eq!(versions, [1, 1, 1, 2]);
    assert_eq!(rows(&t).unwrap(), 3010);
    p.rewrap(&|_, _, _| {}).unwrap();
    assert!(t.head().unwrap().files.iter().all(|f| f.key_version == 2));

    // A new process (a new KMS value, a new cache) opens the project by name and reads it.
    let again = Project::open(
        &w.catalog,
        "demo",
        w.keys_over(Arc::new(Pkcs11Kms::open(w.token.options()).unwrap())),
    )
    .unwrap();
    assert_eq!(rows(&again.table("events").unwrap()).unwrap(), 3010);
}

#[test]
fn deleting_the_cmk_shreds_every_copy() {
    let Some(w) = world("shred") else { return };
    let keys = w.keys_over(w.kms.clone());
    let p = Project::create(
        &w.catalog,
        w.dir.path().join("proj"),
        "secret",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys.clone(),
    )
    .unwrap();
    let cmk = p.settings().cmk.clone().unwrap();
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    for i in 0..3 {
        t.append([batch(i * 100, 100)]).unwrap();
    }
    w.kms.rotate(&cmk).unwrap(); // two versions, two token objects, both to be shredded
    t.append([batch(1000, 100)]).unwrap();
    assert_eq!(rows(&t).unwrap(), 400);
    let (project_id, table_id) = (p.settings().project_id.clone(), t.table_id().to_owned());
    let head = t.head().unwrap();
    let (_, wrapped) = w
        .kms
        .generate_data_key(p.principal(), &cmk, &colvault::kms::EncryptionContext::new())
        .unwrap();

    // Copies taken before the deletion: the project, the catalog, and the token's files.
    let backup = tempfile::tempdir().unwrap();
    copy_dir(p.dir(), &backup.path().join("proj"));
    for e in std::fs::read_dir(w.dir.path()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("catalog.db") {
            std::fs::copy(e.path(), backup.path().join(e.file_name())).unwrap();
        }
    }
    copy_dir(&w.token.dir, &backup.path().join("token"));
    let token_files_before = files_under(&w.token.dir).len();

    // Schedule the deletion, let the window pass, delete.
    w.kms.schedule_deletion(&cmk, 7).unwrap();
    w.clock.advance(7 * DAY);
    assert_eq!(w.kms.delete_key(&cmk).unwrap().state, KeyState::Deleted);

    // 1. The key's token objects are gone: only the metadata key is left, and no object of any
    //    class carries a version's label and id.
    let s = softhsm::raw_session(&w.token);
    for v in 1..=2 {
        let found = s
            .find_objects(&[
                Attribute::Label(version_label(&cmk, v).into_bytes()),
                Attribute::Id(version_object_id(&cmk, v)),
            ])
            .unwrap();
        assert!(found.is_empty(), "version {v} still has {} objects", found.len());
    }
    assert_eq!(
        s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
            .unwrap()
            .len(),
        1
    );
    assert!(
        files_under(&w.token.dir).len() < token_files_before,
        "SoftHSM2 removed the destroyed objects' files"
    );

    // 2. The same project, through a fresh KMS value on the same token: the KMS refuses.
    let fresh = || {
        w.keys_over(Arc::new(
            Pkcs11Kms::open(w.token.options().with_clock(w.clock.clone())).unwrap(),
        ))
    };
    // (Opening the project already needs the key: its settings are sealed under it.)
    let r = Project::open(&w.catalog, "secret", fresh()).and_then(|p2| rows(&p2.table("t")?));
    assert!(matches!(r, Err(Error::KeyDeleted { .. })), "{r:?}");
    assert!(matches!(
        w.kms
            .decrypt_data_key(p.principal(), &wrapped, &colvault::kms::EncryptionContext::new()),
        Err(Error::KeyDeleted { .. })
    ));

    // 3. The old copies put back: the project directory and the catalog as they were before.
    std::fs::remove_dir_all(p.dir()).unwrap();
    copy_dir(&backup.path().join("proj"), p.dir());
    let old_catalog_dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(backup.path()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("catalog.db") {
            std::fs::copy(e.path(), old_catalog_dir.path().join(e.file_name())).unwrap();
        }
    }
    let old_catalog = common::catalog_in(old_catalog_dir.path());
    let r = Project::open(&old_catalog, "secret", fresh()).and_then(|p3| rows(&p3.table("t")?));
    assert!(matches!(r, Err(Error::KeyDeleted { .. })), "{r:?}");

    // 4. Every colvault file of the old copy, opened directly with the right context.
    let mut tried = 0;
    for f in &head.files {
        let bytes = std::fs::read(
            backup
                .path()
                .join("proj")
                .join(t.dir().strip_prefix(p.dir()).unwrap())
                .join("data")
                .join(&f.name),
        )
        .unwrap();
        let keys = fresh();
        let access = KeyAccess::new(
            keys.cache.clone(),
            p.principal().clone(),
            project_id.clone(),
            table_id.clone(),
        );
        let r = FileReader::open(
            bytes,
            ReaderOptions::encrypted(Algorithm::Aes256Gcm, access, [cmk.clone()]),
        )
        .and_then(|r| r.scan().build()?.read_all());
        assert!(
            matches!(r, Err(Error::KeyDeleted { .. })),
            "{}: {:?}",
            f.name,
            r.map(|b| b.len())
        );
        tried += 1;
    }
    assert_eq!(tried, 4);

    // 5. Around the state record: a copy of the record from before the deletion put back on the
    //    token is refused as a rollback by this process; a process that never saw the newer record
    //    would accept it, and then find no object for either version (VersionDestroyed): the
    //    material is gone from the token whatever the record says. Restoring the token's *files*
    //    from the copy in `backup/token` would bring the key back: that is the token backup's
    //    problem (SECURITY.md), not something colvault can undo.
    assert!(files_under(&backup.path().join("token")).len() >= token_files_before);
    assert!(matches!(w.kms.list(), Ok(ref l) if l.iter().any(|m| m.id == cmk && m.state == KeyState::Deleted)));
}
