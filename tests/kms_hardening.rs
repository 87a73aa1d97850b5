//! Issue 15, KMS side: key versions that cached KEKs may still use cannot be destroyed (item 1),
//! leftover temporary keystores are removed (item 2), the audit log agrees with the keystore after
//! SIGKILLs during administrative commands (item 3), and Argon2id costs and passphrases are bounded
//! (item 4).
//!
//! The SIGKILL test re-runs this test binary as the child process (selected by an environment
//! variable), as `tests/table_processes.rs` does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use colvault::clock::{Clock, ManualClock};
use colvault::kms::{
    Argon2Params, AuditAction, AuditOutcome, AuditRecord, CacheOptions, CreateKeyRequest, EncryptionContext, KeyCache,
    KeyId, KeyState, KmsAdmin, LocalKms, LocalKmsOptions, Principal, RootSecret, MAX_KEK_LIFETIME,
    MIN_PASSPHRASE_CHARS,
};
use colvault::Error;

const HOUR: u64 = 3600;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ))
}

fn opts(clock: &Arc<ManualClock>) -> LocalKmsOptions {
    LocalKmsOptions::new()
        .with_clock(clock.clone())
        .with_argon2(Argon2Params::insecure_for_tests())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

/// A keystore sealed under a root key file (no Argon2id), and the file.
fn keystore(dir: &Path, clock: &Arc<ManualClock>) -> (PathBuf, PathBuf, LocalKms) {
    let key_file = dir.join("root.key");
    let path = dir.join("keystore");
    let root = RootSecret::create_key_file(&key_file).unwrap();
    let kms = LocalKms::create(&path, root, opts(clock)).unwrap();
    (path, key_file, kms)
}

fn file_ctx(n: u32) -> EncryptionContext {
    EncryptionContext::new().with("file", format!("f{n}"))
}

// ---------------------------------------------------------------------------------------------
// Item 1: a superseded version is destroyable only after the longest KEK lifetime.
// ---------------------------------------------------------------------------------------------

/// The data-loss scenario of issue 15 with two handles on one keystore and one injected clock:
/// "process" A (an ETL job: its own `LocalKms` and `KeyCache`) caches a KEK under version 1; an
/// administrator (another handle) rotates and tries to destroy version 1 at once: refused, with the
/// time it becomes possible. Meanwhile A, which has not learned of the rotation, still wraps new data
/// keys under version 1 (which is why the destroy must wait). At the delay A's cached KEK has
/// expired, so A's new wraps use version 2; once what version 1 protects is rewrapped, it is
/// destroyed and every file still opens.
#[test]
fn a_superseded_version_cannot_be_destroyed_while_a_cached_kek_may_still_wrap_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let t0 = c.now();
    let (path, key_file, admin) = keystore(dir.path(), &c);
    let prj = Principal::new("prj-1").unwrap();
    let cmk = admin
        .create_key(CreateKeyRequest::project_default(prj.clone()))
        .unwrap()
        .id;
    let kek_ctx = EncryptionContext::new().with("project", "prj-1");

    // Process A: its own handle and a KEK cache with the longest lifetime allowed.
    let a_kms = Arc::new(LocalKms::open(&path, RootSecret::load_key_file(&key_file).unwrap(), opts(&c)).unwrap());
    let a = KeyCache::new(
        a_kms,
        CacheOptions::default()
            .with_lifetime(MAX_KEK_LIFETIME)
            .with_clock(c.clone()),
    )
    .unwrap();
    let (dek1, env1) = a.new_data_key(&prj, &cmk, &kek_ctx, &file_ctx(1)).unwrap();
    assert_eq!(env1.key_version(), 1);

    // The administrator rotates and tries to destroy version 1 immediately.
    assert_eq!(admin.rotate(&cmk).unwrap().primary_version, 2);
    let e = admin.destroy_version(&cmk, 1).unwrap_err();
    match &e {
        Error::VersionDestroyTooEarly {
            version,
            superseded_unix_secs,
            not_before_unix_secs,
            ..
        } => {
            assert_eq!(*version, 1);
            assert_eq!(*superseded_unix_secs, unix(t0));
            assert_eq!(*not_before_unix_secs, unix(t0) + 24 * HOUR);
        }
        other => panic!("expected VersionDestroyTooEarly, got {other:?}"),
    }
    assert!(e.to_string().contains(&(unix(t0) + 24 * HOUR).to_string()), "{e}");
    // The refusal is audited and version 1 still unwraps.
    let log = admin.audit_log().unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.action, AuditAction::DestroyVersion);
    assert!(matches!(&last.outcome, AuditOutcome::Failure(m) if m.contains("cannot destroy version 1")));

    // Why: A has not learned of the rotation, so its cached KEK keeps wrapping under version 1.
    c.advance(Duration::from_secs(HOUR));
    let (dek2, env2) = a.new_data_key(&prj, &cmk, &kek_ctx, &file_ctx(2)).unwrap();
    assert_eq!(env2.key_version(), 1, "A still uses its cached KEK of version 1");
    c.set(t0 + Duration::from_secs(24 * HOUR - 1));
    assert!(matches!(
        admin.destroy_version(&cmk, 1),
        Err(Error::VersionDestroyTooEarly { .. })
    ));

    // At the delay, A's KEK (obtained at t0, before the rotation) has expired: its new wraps use 2.
    c.set(t0 + Duration::from_secs(24 * HOUR));
    let (dek3, env3) = a.new_data_key(&prj, &cmk, &kek_ctx, &file_ctx(3)).unwrap();
    assert_eq!(
        env3.key_version(),
        2,
        "after the delay no cached KEK of version 1 is left"
    );

    // Rewrap what version 1 protects, then destroy it: nothing is lost.
    let admin = Arc::new(admin);
    let rewrapper = KeyCache::new(admin.clone(), CacheOptions::default().with_clock(c.clone())).unwrap();
    let env1b = rewrapper.rewrap_envelope(&prj, &env1, &kek_ctx).unwrap();
    let env2b = rewrapper.rewrap_envelope(&prj, &env2, &kek_ctx).unwrap();
    assert_eq!((env1b.key_version(), env2b.key_version()), (2, 2));
    admin.destroy_version(&cmk, 1).unwrap();
    let reader = KeyCache::new(admin.clone(), CacheOptions::default().with_clock(c.clone())).unwrap();
    for (n, env, dek) in [(1, &env1b, &dek1), (2, &env2b, &dek2), (3, &env3, &dek3)] {
        assert_eq!(&reader.open_data_key(&prj, env, &kek_ctx, &file_ctx(n)).unwrap(), dek);
    }
    assert!(matches!(
        reader.open_data_key(&prj, &env1, &kek_ctx, &file_ctx(1)),
        Err(Error::VersionDestroyed { version: 1, .. })
    ));
}

/// The delay is configurable (it must cover the longest KEK lifetime of every writer).
#[test]
fn the_version_destroy_delay_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let kms = LocalKms::create(
        dir.path().join("keystore"),
        RootSecret::create_key_file(dir.path().join("root.key")).unwrap(),
        opts(&c).with_version_destroy_delay(Duration::from_secs(600)),
    )
    .unwrap();
    assert_eq!(LocalKmsOptions::new().version_destroy_delay(), MAX_KEK_LIFETIME);
    let cmk = kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    kms.rotate(&cmk).unwrap();
    c.advance(Duration::from_secs(599));
    assert!(matches!(
        kms.destroy_version(&cmk, 1),
        Err(Error::VersionDestroyTooEarly { .. })
    ));
    c.advance(Duration::from_secs(1));
    kms.destroy_version(&cmk, 1).unwrap();
}

/// Rotating through the handle behind a cache drops the cache's writer KEKs at once, and a cache
/// that unwraps a key of a newer version (a file written after a rotation elsewhere) stops wrapping
/// under the older one; in both cases without waiting for the lifetime.
#[test]
fn a_cache_stops_wrapping_under_an_old_version_as_soon_as_it_learns_of_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (path, key_file, admin) = keystore(dir.path(), &c);
    let prj = Principal::new("prj-1").unwrap();
    let cmk = admin
        .create_key(CreateKeyRequest::project_default(prj.clone()))
        .unwrap()
        .id;
    let kc = EncryptionContext::new().with("project", "prj-1");
    let long = || {
        CacheOptions::default()
            .with_lifetime(MAX_KEK_LIFETIME)
            .with_clock(c.clone())
    };

    // Rotation through this process's own handle.
    let mine = Arc::new(LocalKms::open(&path, RootSecret::load_key_file(&key_file).unwrap(), opts(&c)).unwrap());
    let cache = KeyCache::new(mine.clone(), long()).unwrap();
    assert_eq!(
        cache
            .new_data_key(&prj, &cmk, &kc, &file_ctx(1))
            .unwrap()
            .1
            .key_version(),
        1
    );
    mine.rotate(&cmk).unwrap();
    assert_eq!(
        cache
            .new_data_key(&prj, &cmk, &kc, &file_ctx(2))
            .unwrap()
            .1
            .key_version(),
        2
    );

    // Another process rotates (version 3) and writes; this one reads that file and moves on.
    let other = Arc::new(admin);
    other.rotate(&cmk).unwrap();
    let other_cache = KeyCache::new(other, long()).unwrap();
    let (dek, env) = other_cache.new_data_key(&prj, &cmk, &kc, &file_ctx(3)).unwrap();
    assert_eq!(env.key_version(), 3);
    assert_eq!(
        cache
            .new_data_key(&prj, &cmk, &kc, &file_ctx(4))
            .unwrap()
            .1
            .key_version(),
        2,
        "not learned yet: still its cached KEK"
    );
    assert_eq!(cache.open_data_key(&prj, &env, &kc, &file_ctx(3)).unwrap(), dek);
    assert_eq!(
        cache
            .new_data_key(&prj, &cmk, &kc, &file_ctx(5))
            .unwrap()
            .1
            .key_version(),
        3,
        "a file of version 3 was read: version 2 no longer wraps"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 2: leftover temporary keystores.
// ---------------------------------------------------------------------------------------------

fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// A killed keystore write leaves `.keystore.tmp-*`: an older sealed copy that still holds keys
/// deleted since. The next open removes it (and only it), under the lock.
#[test]
fn leftover_temporary_keystores_are_removed_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let (path, key_file, kms) = keystore(dir.path(), &c);
    let doomed = kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    // What a write killed after its fsync and before its rename leaves: a whole older copy.
    let leftover = dir.path().join(".keystore.tmp-0123456789abcdef");
    std::fs::copy(&path, &leftover).unwrap();
    let unrelated = dir.path().join(".other.tmp-0123456789abcdef");
    std::fs::write(&unrelated, b"not ours").unwrap();
    kms.schedule_deletion(&doomed, 7).unwrap();
    c.advance(Duration::from_secs(7 * 86_400));
    kms.delete_key(&doomed).unwrap();
    assert_eq!(temps(dir.path()).len(), 2);

    LocalKms::open(&path, RootSecret::load_key_file(&key_file).unwrap(), opts(&c)).unwrap();
    assert!(!leftover.exists(), "the older sealed copy is gone");
    assert!(unrelated.exists(), "another file's temporary file is left alone");
    assert_eq!(temps(dir.path()), [".other.tmp-0123456789abcdef"]);
}

// ---------------------------------------------------------------------------------------------
// Item 3: the audit log and the keystore agree after SIGKILLs during administrative commands.
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "COLVAULT_KMS_ADMIN_CHILD";

/// The child: administrative commands in a loop (create a key with an alias, disable, enable,
/// disable, a refused attempt, rotate), until it is killed.
fn admin_child(dir: &Path) {
    let kms = LocalKms::open(
        dir.join("keystore"),
        RootSecret::load_key_file(dir.join("root.key")).unwrap(),
        LocalKmsOptions::new(),
    )
    .unwrap();
    let me = std::process::id();
    let missing = KeyId::new("cmk-does-not-exist").unwrap();
    for i in 0.. {
        let Ok(meta) = kms.create_key(CreateKeyRequest::byok().with_alias(format!("alias-{me}-{i}"))) else {
            continue;
        };
        let _ = kms.disable(&meta.id);
        let _ = kms.enable(&meta.id);
        let _ = kms.rotate(&meta.id);
        let _ = kms.disable(&meta.id);
        let _ = kms.disable(&missing);
    }
}

/// Checks that the verified log and the keystore tell the same story: every intent has exactly one
/// outcome; every successful outcome took effect and every change in the keystore has its
/// successful outcome (replaying the outcomes gives the keystore's keys, aliases and states); no
/// administrative success is claimed without an intent. Returns how many outcomes were written by
/// reconciliation at an open.
fn check_agreement(kms: &LocalKms, log: &[AuditRecord]) -> usize {
    let by_seq: HashMap<u64, &AuditRecord> = log.iter().map(|r| (r.seq, r)).collect();
    let mut outcomes: HashMap<u64, usize> = HashMap::new();
    let mut reconciled = 0;
    // key -> (alias in the intent's detail, enabled)
    let mut replay: BTreeMap<KeyId, (String, bool)> = BTreeMap::new();
    for r in log {
        if let Some(i) = r.resolves {
            *outcomes.entry(i).or_default() += 1;
            let intent = by_seq[&i];
            assert!(
                matches!(intent.outcome, AuditOutcome::Intent { .. }),
                "{r:?} resolves {intent:?}"
            );
            assert_eq!((intent.action, &intent.key), (r.action, &r.key));
            if r.detail.contains("at the next open")
                || matches!(&r.outcome, AuditOutcome::Failure(m) if m.contains("at the next open"))
            {
                reconciled += 1;
            }
            if r.outcome == AuditOutcome::Success {
                let k = intent.key.clone().expect("every change names its key");
                match intent.action {
                    AuditAction::CreateKey => {
                        assert!(replay.insert(k, (intent.detail.clone(), true)).is_none());
                    }
                    AuditAction::Disable => replay.get_mut(&k).expect("created first").1 = false,
                    AuditAction::Enable => replay.get_mut(&k).expect("created first").1 = true,
                    AuditAction::Rotate => {}
                    a => panic!("unexpected change {a:?}"),
                }
            }
        } else if r.action.is_administrative() && r.outcome == AuditOutcome::Success {
            assert!(
                matches!(r.action, AuditAction::CreateKeystore | AuditAction::RepairTail),
                "a success without an intent: {r:?}"
            );
        }
    }
    for r in log.iter().filter(|r| matches!(r.outcome, AuditOutcome::Intent { .. })) {
        assert_eq!(outcomes.get(&r.seq), Some(&1), "intent {r:?} has one outcome");
    }
    let keys = kms.list().unwrap();
    assert_eq!(
        keys.len(),
        replay.len(),
        "every created key has its outcome, and no more"
    );
    for k in &keys {
        let (detail, enabled) = &replay[&k.id];
        let alias = k.alias.as_ref().expect("the child names every key");
        assert!(detail.contains(&format!("alias {alias:?}")), "{detail} vs {alias}");
        let expected = if *enabled {
            KeyState::Enabled
        } else {
            KeyState::Disabled
        };
        assert_eq!(k.state, expected, "key {}", k.id);
    }
    reconciled
}

/// SIGKILLs a child doing administrative commands at random points, 24 times; after each, the next
/// open removes leftover temporary keystores and reconciles the log, and the log and the keystore
/// agree (before this change, `disable` logged "ok" before writing the keystore, so a kill in
/// between left a success that never happened).
#[test]
fn sigkilled_administrative_commands_leave_the_log_and_the_keystore_in_agreement() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        admin_child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("keystore");
    let root = RootSecret::create_key_file(dir.join("root.key")).unwrap();
    drop(LocalKms::create(&path, root, LocalKmsOptions::new()).unwrap());
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let kills = 24;
    let mut reconciled = 0;
    let mut leftovers = 0;
    for _ in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkilled_administrative_commands_leave_the_log_and_the_keystore_in_agreement",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rand() % 120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        leftovers += temps(dir).len();
        let kms = LocalKms::open(
            &path,
            RootSecret::load_key_file(dir.join("root.key")).unwrap(),
            LocalKmsOptions::new(),
        )
        .unwrap();
        assert!(temps(dir).is_empty(), "the open removed the leftovers");
        let log = kms.audit_log().unwrap();
        reconciled = check_agreement(&kms, &log);
    }
    let kms = LocalKms::open(
        &path,
        RootSecret::load_key_file(dir.join("root.key")).unwrap(),
        LocalKmsOptions::new(),
    )
    .unwrap();
    let log = kms.audit_log().unwrap();
    let changes = log.iter().filter(|r| r.resolves.is_some()).count();
    eprintln!(
        "{kills} SIGKILLs: {} keys, {changes} administrative outcomes, {reconciled} written at the next open, \
         {leftovers} leftover temporary keystores removed, {} log records",
        kms.list().unwrap().len(),
        log.len()
    );
    assert!(changes > kills, "the children got work done between kills");
}

// ---------------------------------------------------------------------------------------------
// Item 4: Argon2id costs from the header are bounded; new root secrets have a floor.
// ---------------------------------------------------------------------------------------------

const PASSPHRASE: &str = "a passphrase of some length";

/// The keystore header (not authenticated before Argon2id runs) edited to ask for 4 GiB and 64
/// passes: the open is refused with a typed error before anything is allocated for it, at once.
#[test]
fn a_header_asking_for_4_gib_and_64_passes_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keystore");
    let c = clock();
    drop(LocalKms::create(&path, RootSecret::passphrase(PASSPHRASE), opts(&c)).unwrap());
    let good = std::fs::read(&path).unwrap();
    // Header: "CVKS" | u8 version | u8 kind | u32 m KiB | u32 t | u32 p | ...
    for (m, t, p) in [(4u32 << 20, 64u32, 64u32), (4 << 20, 1, 1), (8, 64, 1), (8, 1, 64)] {
        let mut b = good.clone();
        b[6..10].copy_from_slice(&m.to_be_bytes());
        b[10..14].copy_from_slice(&t.to_be_bytes());
        b[14..18].copy_from_slice(&p.to_be_bytes());
        std::fs::write(&path, &b).unwrap();
        let start = Instant::now();
        let e = LocalKms::open(&path, RootSecret::passphrase(PASSPHRASE), opts(&c)).unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, Error::KdfCostTooHigh { .. }), "m={m} t={t} p={p}: {e:?}");
        assert!(took < Duration::from_millis(500), "m={m} t={t} p={p}: took {took:?}");
        eprintln!("header edited to m={m} KiB, t={t}, p={p}: refused in {took:?}");
        assert!(e.to_string().contains("with_max_argon2"), "{e}");
    }
    // An opener may raise its maximum for a genuine keystore; the defaults are 256 MiB, t=8, p=8.
    assert_eq!(LocalKmsOptions::new().max_argon2(), Argon2Params::new(256 * 1024, 8, 8));
    std::fs::write(&path, &good).unwrap();
    LocalKms::open(&path, RootSecret::passphrase(PASSPHRASE), opts(&c)).unwrap();
    let low = opts(&c).with_max_argon2(Argon2Params::new(4, 1, 1));
    assert!(matches!(
        LocalKms::open(&path, RootSecret::passphrase(PASSPHRASE), low),
        Err(Error::KdfCostTooHigh { .. })
    ));
}

/// One minimum passphrase length (15 characters, NIST SP 800-63B-4) wherever a passphrase creates
/// or changes a root secret; characters are Unicode code points.
#[test]
fn passphrases_have_one_minimum_length() {
    assert_eq!(MIN_PASSPHRASE_CHARS, 15);
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let path = dir.path().join("keystore");
    for short in ["x", "fourteen chars"] {
        let e = LocalKms::create(&path, RootSecret::passphrase(short), opts(&c)).unwrap_err();
        assert!(matches!(e, Error::WeakRootSecret(_)), "{e:?}");
        assert!(!path.exists());
    }
    let kms = LocalKms::create(&path, RootSecret::passphrase("fifteen chars!!"), opts(&c)).unwrap();
    let e = kms.change_root_secret(RootSecret::passphrase("too short")).unwrap_err();
    assert!(matches!(e, Error::WeakRootSecret(_)), "{e:?}");
    // Nothing changed: the old passphrase still opens it.
    LocalKms::open(&path, RootSecret::passphrase("fifteen chars!!"), opts(&c)).unwrap();
    // 15 code points of 2 bytes each are 15 characters.
    kms.change_root_secret(RootSecret::passphrase("ééééééééééééééé"))
        .unwrap();
    LocalKms::open(&path, RootSecret::passphrase("ééééééééééééééé"), opts(&c)).unwrap();
}

/// New root secrets use at least RFC 9106's second recommended setting (64 MiB, t=3, p=4), the
/// default; weaker parameters are refused unless they come from `insecure_for_tests`.
#[test]
fn new_passphrase_keystores_use_at_least_rfc9106_second_setting() {
    assert_eq!(Argon2Params::DEFAULT, Argon2Params::new(64 * 1024, 3, 4));
    assert_eq!(Argon2Params::FLOOR, Argon2Params::RFC9106_SECOND);
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let path = dir.path().join("keystore");
    for weak in [Argon2Params::new(19 * 1024, 2, 1), Argon2Params::new(64 * 1024, 2, 4)] {
        let e = LocalKms::create(
            &path,
            RootSecret::passphrase(PASSPHRASE),
            LocalKmsOptions::new().with_clock(c.clone()).with_argon2(weak),
        )
        .unwrap_err();
        assert!(matches!(e, Error::WeakRootSecret(_)), "{weak}: {e:?}");
    }
    // Above the opener's own maximum: refused too (it could not be opened again).
    let e = LocalKms::create(
        &path,
        RootSecret::passphrase(PASSPHRASE),
        LocalKmsOptions::new()
            .with_argon2(Argon2Params::new(64 * 1024, 3, 4))
            .with_max_argon2(Argon2Params::new(32 * 1024, 8, 8)),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    // The default options write 64 MiB, t=3, p=4 into the header.
    drop(
        LocalKms::create(
            &path,
            RootSecret::passphrase(PASSPHRASE),
            LocalKmsOptions::new().with_clock(c.clone()),
        )
        .unwrap(),
    );
    let b = std::fs::read(&path).unwrap();
    let field = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    assert_eq!((field(6), field(10), field(14)), (64 * 1024, 3, 4));
    let start = Instant::now();
    LocalKms::open(&path, RootSecret::passphrase(PASSPHRASE), LocalKmsOptions::new()).unwrap();
    eprintln!(
        "opening a keystore with the default Argon2id (64 MiB, t=3, p=4): {:?}",
        start.elapsed()
    );
}
