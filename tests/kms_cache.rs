//! Double wrapping through KeyCache over LocalKms: O(1) KMS round trips for 1,000 files, the KEK
//! lifetime and revocation, invalidate(), grants per principal, and envelope re-wrapping.

#[path = "common/counting_kms.rs"]
mod counting_kms;

use counting_kms::CountingKms;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use colvault::clock::ManualClock;
use colvault::crypto::SecretKey;
use colvault::kms::{
    CacheOptions, CreateKeyRequest, DataKeyEnvelope, EncryptionContext, KeyCache, KeyId, KmsAdmin, LocalKms,
    LocalKmsOptions, Principal, RootSecret,
};
use colvault::Error;

const LIFETIME: Duration = Duration::from_secs(600);

struct Setup {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    local: Arc<LocalKms>,
    counting: Arc<CountingKms>,
    project: Principal,
    cmk: KeyId,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let local = Arc::new(
        LocalKms::create(
            dir.path().join("ks"),
            RootSecret::KeyFile(SecretKey::generate().unwrap()),
            LocalKmsOptions::new().with_clock(clock.clone()),
        )
        .unwrap(),
    );
    let project = Principal::new("prj-7f3a").unwrap();
    let cmk = local
        .create_key(CreateKeyRequest::project_default(project.clone()))
        .unwrap()
        .id;
    let counting = Arc::new(CountingKms::without_rotation_signal(local.clone()));
    Setup {
        _dir: dir,
        clock,
        local,
        counting,
        project,
        cmk,
    }
}

impl Setup {
    fn cache(&self, lifetime: Duration) -> KeyCache {
        KeyCache::new(
            self.counting.clone(),
            CacheOptions::default()
                .with_lifetime(lifetime)
                .with_clock(self.clock.clone()),
        )
        .unwrap()
    }
}

fn kek_ctx() -> EncryptionContext {
    EncryptionContext::new().with("project", "prj-7f3a")
}

fn dek_ctx(file: usize) -> EncryptionContext {
    EncryptionContext::new()
        .with("project", "prj-7f3a")
        .with("table", "tbl-01")
        .with("file", format!("file-{file:04}"))
}

#[test]
fn a_thousand_files_cost_o1_round_trips_and_a_disable_stops_them_after_the_lifetime() {
    let s = setup();
    let writer = s.cache(LIFETIME);
    let reader = s.cache(LIFETIME); // a separate process, as far as caching goes
    let mut files: Vec<(SecretKey, Vec<u8>)> = Vec::new();
    for i in 0..1000 {
        let (dek, env) = writer
            .new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(i))
            .unwrap();
        files.push((dek, env.to_bytes()));
        s.clock.advance(Duration::from_millis(250)); // 250 s in all: within the lifetime
    }
    let (generated, decrypted, _) = s.counting.counts();
    assert!(generated <= 2, "1,000 data keys cost {generated} KMS round trips");
    assert_eq!(decrypted, 0);
    // Fresh DEKs every time, under one KEK.
    let distinct: std::collections::HashSet<_> = files.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(distinct.len(), 1000);
    assert_ne!(files[0].0, files[1].0);

    for (i, (dek, env)) in files.iter().enumerate() {
        let env = DataKeyEnvelope::from_bytes(env).unwrap();
        assert_eq!(env.kms_name(), "local");
        assert_eq!(env.key_id(), &s.cmk);
        assert_eq!(env.key_version(), 1);
        assert_eq!(
            &reader.open_data_key(&s.project, &env, &kek_ctx(), &dek_ctx(i)).unwrap(),
            dek
        );
    }
    let (generated, decrypted, _) = s.counting.counts();
    assert!(decrypted <= 2, "1,000 unwraps cost {decrypted} KMS round trips");
    assert!(generated <= 2);

    // A file's DEK does not open under another file's context.
    let env0 = DataKeyEnvelope::from_bytes(&files[0].1).unwrap();
    let e = reader
        .open_data_key(&s.project, &env0, &kek_ctx(), &dek_ctx(1))
        .unwrap_err();
    assert!(matches!(e, Error::Integrity { .. }), "{e}");

    // Disable the CMK. Within the lifetime the cached KEKs still work (the documented delay) ...
    s.local.disable(&s.cmk).unwrap();
    writer
        .new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(5000))
        .unwrap();
    reader
        .open_data_key(&s.project, &env0, &kek_ctx(), &dek_ctx(0))
        .unwrap();
    // ... and once the lifetime has passed, both fail with KeyDisabled.
    s.clock.advance(LIFETIME + Duration::from_secs(1));
    let e = writer
        .new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(5001))
        .unwrap_err();
    assert!(matches!(e, Error::KeyDisabled { .. }), "{e}");
    let e = reader
        .open_data_key(&s.project, &env0, &kek_ctx(), &dek_ctx(0))
        .unwrap_err();
    assert!(matches!(e, Error::KeyDisabled { .. }), "{e}");
    // Failures are not cached: once enabled again, it works at once.
    s.local.enable(&s.cmk).unwrap();
    reader
        .open_data_key(&s.project, &env0, &kek_ctx(), &dek_ctx(0))
        .unwrap();
}

#[test]
fn invalidate_makes_the_next_call_hit_the_kms_at_once() {
    let s = setup();
    let cache = s.cache(LIFETIME);
    let (_, env) = cache.new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(0)).unwrap();
    cache.new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(1)).unwrap();
    cache.open_data_key(&s.project, &env, &kek_ctx(), &dek_ctx(0)).unwrap();
    assert_eq!(
        s.counting.counts(),
        (1, 0, 0),
        "the writer's KEK also serves this process's reads"
    );
    s.local.disable(&s.cmk).unwrap();
    cache.invalidate();
    let e = cache
        .new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(2))
        .unwrap_err();
    assert!(matches!(e, Error::KeyDisabled { .. }), "{e}");
    let e = cache
        .open_data_key(&s.project, &env, &kek_ctx(), &dek_ctx(0))
        .unwrap_err();
    assert!(matches!(e, Error::KeyDisabled { .. }), "{e}");
    assert_eq!(s.counting.counts(), (2, 1, 0));
}

#[test]
fn the_cache_never_skips_a_grant_check() {
    let s = setup();
    let cache = s.cache(LIFETIME);
    let stranger = Principal::new("prj-other").unwrap();
    let (_, env) = cache.new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(0)).unwrap();
    // The project's KEK is cached, yet another principal goes to the KMS and is refused.
    let e = cache
        .new_data_key(&stranger, &s.cmk, &kek_ctx(), &dek_ctx(0))
        .unwrap_err();
    assert!(matches!(e, Error::AccessDenied { .. }), "{e}");
    let e = cache
        .open_data_key(&stranger, &env, &kek_ctx(), &dek_ctx(0))
        .unwrap_err();
    assert!(matches!(e, Error::AccessDenied { .. }), "{e}");
    // Another KEK context is another slot, and the wrapped KEK is bound to its context.
    let other = EncryptionContext::new().with("project", "prj-elsewhere");
    let e = cache.open_data_key(&s.project, &env, &other, &dek_ctx(0)).unwrap_err();
    assert!(matches!(e, Error::Integrity { .. }), "{e}");
    // Revocation reaches cached KEKs after the lifetime.
    s.local.revoke(&s.cmk, &s.project).unwrap();
    cache.new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(1)).unwrap();
    s.clock.advance(LIFETIME);
    let e = cache
        .new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(2))
        .unwrap_err();
    assert!(matches!(e, Error::AccessDenied { .. }), "{e}");
}

#[test]
fn rotation_reaches_new_files_when_the_kek_expires_and_envelopes_rewrap() {
    let s = setup();
    let cache = s.cache(LIFETIME);
    let (dek, env) = cache.new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(0)).unwrap();
    s.local.rotate(&s.cmk).unwrap();
    let (_, still_v1) = cache.new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(1)).unwrap();
    assert_eq!(still_v1.key_version(), 1, "the cached KEK is used until it expires");
    s.clock.advance(LIFETIME);
    let (_, v2) = cache.new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(2)).unwrap();
    assert_eq!(v2.key_version(), 2);

    let moved = cache.rewrap_envelope(&s.project, &env, &kek_ctx()).unwrap();
    assert_eq!(moved.key_version(), 2);
    assert_eq!(s.counting.counts().2, 1);
    assert_ne!(moved.wrapped_kek(), env.wrapped_kek());
    // The DEK is unchanged, so the data need not be re-encrypted.
    assert_eq!(
        cache
            .open_data_key(&s.project, &moved, &kek_ctx(), &dek_ctx(0))
            .unwrap(),
        dek
    );
    // Version 1 can be destroyed only once no cached KEK can still wrap under it: the longest KEK
    // lifetime after the rotation (issue 15, item 1). Then only the re-wrapped envelope opens.
    assert!(matches!(
        s.local.destroy_version(&s.cmk, 1),
        Err(Error::VersionDestroyTooEarly { .. })
    ));
    s.clock.advance(colvault::kms::MAX_KEK_LIFETIME - LIFETIME);
    s.local.destroy_version(&s.cmk, 1).unwrap();
    cache.invalidate();
    let e = cache
        .open_data_key(&s.project, &env, &kek_ctx(), &dek_ctx(0))
        .unwrap_err();
    assert!(matches!(e, Error::VersionDestroyed { version: 1, .. }), "{e}");
    assert_eq!(
        cache
            .open_data_key(&s.project, &moved, &kek_ctx(), &dek_ctx(0))
            .unwrap(),
        dek
    );
}

#[test]
fn deleting_the_cmk_shreds_every_file_once_the_lifetime_has_passed() {
    let s = setup();
    let cache = s.cache(LIFETIME);
    let (_, env) = cache.new_data_key(&s.project, &s.cmk, &kek_ctx(), &dek_ctx(0)).unwrap();
    s.local.schedule_deletion(&s.cmk, 7).unwrap();
    s.clock.advance(Duration::from_secs(7 * 86_400));
    s.local.delete_key(&s.cmk).unwrap();
    let e = cache
        .open_data_key(&s.project, &env, &kek_ctx(), &dek_ctx(0))
        .unwrap_err();
    assert!(matches!(e, Error::KeyDeleted { .. }), "{e}");
    // Even a fresh KMS instance on the current keystore cannot help.
    let fresh = KeyCache::new(s.local.clone(), CacheOptions::default()).unwrap();
    let e = fresh
        .open_data_key(&s.project, &env, &kek_ctx(), &dek_ctx(0))
        .unwrap_err();
    assert!(matches!(e, Error::KeyDeleted { .. }), "{e}");
}
