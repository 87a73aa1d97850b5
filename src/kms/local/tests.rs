//! Unit tests of the keystore internals.

use super::*;
use crate::clock::ManualClock;

fn opts(clock: Arc<ManualClock>) -> LocalKmsOptions {
    LocalKmsOptions::new()
        .with_clock(clock)
        .with_argon2(Argon2Params::insecure_for_tests())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Deletion removes the material from the plaintext state (the sealed body), not just from the
/// metadata; destroying a version does the same for that version.
#[test]
fn deletion_removes_material_from_the_plaintext_state() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let kms = LocalKms::create(
        dir.path().join("ks"),
        RootSecret::passphrase("a test passphrase"),
        opts(clock.clone()),
    )
    .unwrap();
    let v1 = [0x5a; 32];
    let meta = kms
        .create_key(CreateKeyRequest::byok().with_import(SecretKey::from_slice(&v1).unwrap()))
        .unwrap();
    let other = [0x6b; 32];
    kms.create_key(CreateKeyRequest::byok().with_import(SecretKey::from_slice(&other).unwrap()))
        .unwrap();
    assert!(contains(&kms.plaintext_body(), &v1));
    // The sealed file never holds it in the clear.
    assert!(!contains(&fs::read(kms.path()).unwrap(), &v1));

    kms.schedule_deletion(&meta.id, 7).unwrap();
    clock.advance(Duration::from_secs(7 * SECS_PER_DAY));
    let deleted = kms.delete_key(&meta.id).unwrap();
    assert_eq!(deleted.state, KeyState::Deleted);
    assert!(deleted.versions.iter().all(|v| v.state == KeyVersionState::Destroyed));
    let body = kms.plaintext_body();
    assert!(!contains(&body, &v1), "the deleted key's material is gone");
    assert!(contains(&body, &other), "the other key's material is still there");
}

#[test]
fn data_keys_never_reach_the_audit_log_or_the_keystore() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let kms = LocalKms::create(
        dir.path().join("ks"),
        RootSecret::passphrase("a test passphrase"),
        opts(clock),
    )
    .unwrap();
    let p = Principal::new("p").unwrap();
    let id = kms.create_key(CreateKeyRequest::project_default(p.clone())).unwrap().id;
    let ctx = EncryptionContext::new().with("project", "p");
    let (dek, w) = kms.generate_data_key(&p, &id, &ctx).unwrap();
    let dek2 = kms.decrypt_data_key(&p, &w, &ctx).unwrap();
    let w2 = kms.rewrap(&p, &w, &ctx).unwrap();
    assert_eq!(dek, dek2);
    let audit = fs::read(kms.audit_path()).unwrap();
    let ks = kms.read(Lock::Shared).unwrap();
    let cmk = ks.find(&id).unwrap().material(1).unwrap().expose().to_vec();
    for secret in [&dek.expose()[..], &cmk, ks.audit_key.expose()] {
        assert!(!contains(&audit, secret));
        assert!(!contains(&fs::read(kms.path()).unwrap(), secret));
    }
    assert!(!contains(&audit, w.ciphertext()) && !contains(&audit, w2.ciphertext()));
    assert!(!contains(&kms.plaintext_body(), dek.expose()), "DEKs are never stored");
}

#[test]
fn imported_material_is_version_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let kms = LocalKms::create(
        dir.path().join("ks"),
        RootSecret::passphrase("a test passphrase"),
        opts(clock),
    )
    .unwrap();
    let m = SecretKey::from_slice(&[0x11; 32]).unwrap();
    let meta = kms.create_key(CreateKeyRequest::byok().with_import(m.clone())).unwrap();
    let ks = kms.read(Lock::Shared).unwrap();
    assert_eq!(ks.find(&meta.id).unwrap().material(1).unwrap(), &m);
    // And a project default key refuses imported material.
    let p = Principal::new("p").unwrap();
    assert!(matches!(
        kms.create_key(CreateKeyRequest::project_default(p).with_import(m)),
        Err(Error::InvalidArgument(_))
    ));
}

/// A keystore write that fails after its temporary file was written (injected before the
/// rename) leaves no temporary file, and the log records the intent and a failure, never a
/// success; the keystore is unchanged.
#[test]
fn a_failed_keystore_write_leaves_no_temporary_file_and_claims_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let kms = LocalKms::create(
        dir.path().join("ks"),
        RootSecret::passphrase("a test passphrase"),
        opts(clock),
    )
    .unwrap();
    fail_writes_to(kms.path());
    let e = kms
        .create_key(CreateKeyRequest::byok().with_alias("never"))
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    assert!(kms.list().unwrap().is_empty());
    let log = kms.audit_log().unwrap();
    let (intent, outcome) = (&log[log.len() - 2], &log[log.len() - 1]);
    assert!(matches!(intent.outcome, AuditOutcome::Intent { generation: 2 }));
    assert_eq!(outcome.resolves, Some(intent.seq));
    assert!(matches!(&outcome.outcome, AuditOutcome::Failure(m) if m.contains("not committed")));
    assert!(log
        .iter()
        .all(|r| r.action != AuditAction::CreateKey || r.outcome != AuditOutcome::Success));
}

#[test]
fn body_round_trips_and_header_is_fixed_size() {
    let seal = SealKey::fresh(
        &RootSecret::KeyFile(SecretKey::generate().unwrap()),
        Argon2Params::DEFAULT,
        Argon2Params::DEFAULT_MAX,
    )
    .unwrap();
    assert_eq!(encode_header(&seal.kdf, &seal.check, &[0; 12]).len(), HEADER_LEN);
    assert_eq!(seal.kdf.argon2.m_cost_kib, 0);
    let ks = Keystore {
        generation: 9,
        seals: 3,
        audit_key: SecretKey::generate().unwrap(),
        audit_head: AuditHead { seq: 4, mac: [3; 32] },
        keys: Vec::new(),
    };
    let b = ks.encode_body().unwrap();
    let back = Keystore::decode_body(&b).unwrap();
    assert_eq!((back.generation, back.seals, back.audit_head), (9, 3, ks.audit_head));
    assert_eq!(back.audit_key, ks.audit_key);
    assert!(Keystore::decode_body(&b[..b.len() - 1]).is_err());
}
