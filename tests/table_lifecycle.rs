//! Key lifecycle end to end on a table: disable, enable, deletion, rotation, rewrap, version
//! destruction, re-encryption. The KEK cache lifetime runs on an injected clock. Every test runs on
//! every data-plane backend (a local directory, `memory://`, S3 on moto).

mod common;

use std::sync::Arc;
use std::time::Duration;

use colvault::kms::{Argon2Params, CacheOptions, KeyCache, KmsAdmin, LocalKms, LocalKmsOptions, RootSecret};
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::table::Table;
use colvault::{Algorithm, Error};
use common::id_batch as batch;
use common::stores::{location, Backend};
use common::Fixture;

fn count(t: &Table) -> Result<usize, Error> {
    Ok(t.scan().build()?.read_all()?.iter().map(|b| b.num_rows()).sum())
}

/// An encrypted project at a fresh location on `backend` with table `t` of 100 rows, or `None`
/// (skipped).
fn setup(fx: &Fixture, backend: Backend, test: &str) -> Option<(Project, Table)> {
    let keys = Keys {
        kms: fx.kms.clone(),
        cache: fx.cache.clone(),
    };
    let loc = location(backend, fx.dir.path(), test)?;
    let p = Project::create(
        &fx.catalog,
        &loc,
        "lifecycle",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys,
    )
    .unwrap();
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 100)]).unwrap();
    Some((p, t))
}

const LIFETIME: Duration = Duration::from_secs(600);

fn disable_enable_and_cache_lifetime(backend: Backend) {
    let fx = Fixture::new();
    let Some((p, t)) = setup(&fx, backend, "disable_enable_and_cache_lifetime") else {
        return;
    };
    let cmk = p.settings().cmk.clone().unwrap();
    fx.kms.disable(&cmk).unwrap();
    // Within the cache lifetime the cached KEKs still work...
    assert_eq!(count(&t).unwrap(), 100);
    // ...and once it has passed, both directions fail with KeyDisabled.
    fx.clock.advance(LIFETIME + Duration::from_secs(1));
    assert!(matches!(t.append([batch(100, 1)]), Err(Error::KeyDisabled { .. })));
    assert!(matches!(count(&t), Err(Error::KeyDisabled { .. })));
    fx.kms.enable(&cmk).unwrap();
    t.append([batch(100, 10)]).unwrap();
    assert_eq!(count(&t).unwrap(), 110);
    // invalidate() stops use at once, without waiting for the lifetime.
    fx.kms.disable(&cmk).unwrap();
    fx.cache.invalidate();
    assert!(matches!(count(&t), Err(Error::KeyDisabled { .. })));
    fx.kms.enable(&cmk).unwrap();
    assert_eq!(count(&t).unwrap(), 110);
}

fn deletion_and_crypto_shredding(backend: Backend) {
    let fx = Fixture::new();
    let Some((p, t)) = setup(&fx, backend, "deletion_and_crypto_shredding") else {
        return;
    };
    let cmk = p.settings().cmk.clone().unwrap();
    fx.kms.schedule_deletion(&cmk, 7).unwrap();
    fx.cache.invalidate();
    assert!(matches!(count(&t), Err(Error::KeyPendingDeletion { .. })));
    assert!(matches!(t.append([batch(0, 1)]), Err(Error::KeyPendingDeletion { .. })));
    fx.kms.cancel_deletion(&cmk).unwrap();
    assert_eq!(count(&t).unwrap(), 100);
    fx.kms.schedule_deletion(&cmk, 7).unwrap();
    fx.clock.advance(Duration::from_secs(7 * 86_400 + 1));
    fx.kms.delete_key(&cmk).unwrap();
    fx.cache.invalidate();
    assert!(matches!(count(&t), Err(Error::KeyDeleted { .. })));
    // The current keystore and its root secret, reopened from disk, cannot decrypt the data either.
    let kms = Arc::new(
        LocalKms::open(
            fx.dir.path().join("keystore"),
            RootSecret::passphrase("test passphrase"),
            LocalKmsOptions::new().with_argon2(Argon2Params::insecure_for_tests()),
        )
        .unwrap(),
    );
    let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default()).unwrap());
    let err = Project::open(p.catalog(), p.name(), Keys { kms, cache }).unwrap_err();
    assert!(matches!(err, Error::KeyDeleted { .. }), "{err}");
}

fn rotate_rewrap_destroy(backend: Backend) {
    let fx = Fixture::new();
    let Some((p, t)) = setup(&fx, backend, "rotate_rewrap_destroy") else {
        return;
    };
    let cmk = p.settings().cmk.clone().unwrap();
    fx.kms.rotate(&cmk).unwrap();
    fx.cache.invalidate();
    t.append([batch(100, 50)]).unwrap();
    let head = t.head().unwrap();
    let versions: Vec<u32> = head.files.iter().map(|f| f.key_version).collect();
    assert_eq!(
        versions,
        vec![1, 2],
        "new files use the new version; old ones keep theirs"
    );
    assert_eq!(count(&t).unwrap(), 150, "old files still read");

    // Version 1 is still needed: destroying it is refused with what needs it.
    let err = p.destroy_key_version(1).unwrap_err();
    assert!(err.to_string().contains("still needed"), "{err}");

    let data = |name: &str| t.storage().get(&format!("data/{name}")).unwrap().unwrap();
    let old_file = data(&head.files[0].name);
    let progress_calls = std::sync::atomic::AtomicUsize::new(0);
    let report = p
        .rewrap(&|_, _, _| {
            progress_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(report[0].1.files, 2);
    assert!(progress_calls.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    let after = t.head().unwrap();
    assert!(after.files.iter().all(|f| f.key_version == 2));
    assert_eq!(after.files[0].file_id, head.files[0].file_id);
    let new_file = data(&after.files[0].name);
    // Same chunk bytes (column data not re-encrypted), a new footer.
    let chunks_end = |f: &[u8]| {
        let n = f.len();
        let env = u32::from_be_bytes(f[n - 12..n - 8].try_into().unwrap()) as usize;
        let body = u32::from_be_bytes(f[n - 8..n - 4].try_into().unwrap()) as usize;
        n - 12 - body - env
    };
    let (a, b) = (chunks_end(&old_file), chunks_end(&new_file));
    assert_eq!(a, b);
    assert_eq!(old_file[..a], new_file[..b], "chunk bytes are copied unchanged");
    assert_ne!(old_file[a..], new_file[b..], "the footer is re-sealed");
    assert_eq!(count(&t).unwrap(), 150);

    // Older snapshots still reference version 1 until they expire; then it can go.
    assert!(p.destroy_key_version(1).is_err());
    t.expire_snapshots(after.version).unwrap();
    // And once the longest KEK lifetime has passed since the rotation (issue 15, item 1).
    fx.clock.advance(Duration::from_secs(86_400));
    p.destroy_key_version(1).unwrap();
    fx.cache.invalidate();
    assert_eq!(count(&t).unwrap(), 150, "everything reads after version 1 is destroyed");
    t.vacuum(Duration::ZERO).unwrap();
}

fn reencrypt_gives_fresh_keys(backend: Backend) {
    let fx = Fixture::new();
    let Some((_p, t)) = setup(&fx, backend, "reencrypt_gives_fresh_keys") else {
        return;
    };
    t.append([batch(100, 20)]).unwrap();
    let before = t.head().unwrap();
    let r = t.reencrypt(&|_, _, _| {}).unwrap();
    assert_eq!(r.files, 2);
    let after = t.head().unwrap();
    for (a, b) in before.files.iter().zip(&after.files) {
        assert_ne!(a.file_id, b.file_id, "a new file id and DEK");
        assert_eq!(a.rows, b.rows);
    }
    assert_eq!(count(&t).unwrap(), 120);
}

crate::backend_tests!(
    disable_enable_and_cache_lifetime,
    deletion_and_crypto_shredding,
    rotate_rewrap_destroy,
    reencrypt_gives_fresh_keys,
);
