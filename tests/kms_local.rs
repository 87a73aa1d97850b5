//! LocalKms: wrapped-key tampering, keystore tampering and rollback, root secrets, grants, BYOK,
//! rotation, deletion, the audit log, and several instances on one keystore.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use colvault::clock::{Clock, ManualClock};
use colvault::crypto::SecretKey;
use colvault::kms::{
    Argon2Params, AuditAction, AuditOutcome, CreateKeyRequest, EncryptionContext, KeyId, KeyOrigin, KeyState,
    KeyVersionState, Kms, KmsAdmin, LocalKms, LocalKmsOptions, Principal, RootSecret, WrappedKey,
};
use colvault::Error;

const DAY: u64 = 86_400;

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

fn p(name: &str) -> Principal {
    Principal::new(name).unwrap()
}

fn ctx(project: &str) -> EncryptionContext {
    EncryptionContext::new().with("project", project)
}

/// A keystore with a passphrase root secret in a fresh directory.
fn new_kms() -> (tempfile::TempDir, Arc<ManualClock>, LocalKms) {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let kms = LocalKms::create(
        dir.path().join("keys.cvks"),
        RootSecret::passphrase("correct horse battery"),
        opts(&c),
    )
    .unwrap();
    (dir, c, kms)
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::KeyDisabled { .. } => "KeyDisabled",
        Error::KeyPendingDeletion { .. } => "KeyPendingDeletion",
        Error::KeyDeleted { .. } => "KeyDeleted",
        Error::AccessDenied { .. } => "AccessDenied",
        Error::UnknownKey { .. } => "UnknownKey",
        Error::VersionDestroyed { .. } => "VersionDestroyed",
        Error::VersionDestroyTooEarly { .. } => "VersionDestroyTooEarly",
        Error::InvalidKeyState(_) => "InvalidKeyState",
        Error::WrongRootSecret { .. } => "WrongRootSecret",
        Error::Integrity { .. } => "Integrity",
        Error::Malformed { .. } => "Malformed",
        Error::InvalidArgument(_) => "InvalidArgument",
        _ => "other",
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn round_trip_and_wrong_context() {
    let (_d, _c, kms) = new_kms();
    let prj = p("prj-1");
    let key = kms.create_key(CreateKeyRequest::project_default(prj.clone())).unwrap();
    assert_eq!(
        key.grants,
        vec![prj.clone()],
        "a project default key is granted to its project"
    );
    assert_eq!(key.state, KeyState::Enabled);
    let (dek, wrapped) = kms.generate_data_key(&prj, &key.id, &ctx("prj-1")).unwrap();
    assert_eq!(
        (wrapped.kms(), wrapped.key_id(), wrapped.version()),
        ("local", &key.id, 1)
    );
    assert_eq!(kms.decrypt_data_key(&prj, &wrapped, &ctx("prj-1")).unwrap(), dek);
    let back = WrappedKey::from_bytes(&wrapped.to_bytes()).unwrap();
    assert_eq!(kms.decrypt_data_key(&prj, &back, &ctx("prj-1")).unwrap(), dek);
    for wrong in [ctx("prj-2"), EncryptionContext::new(), ctx("prj-1").with("table", "t")] {
        let e = kms.decrypt_data_key(&prj, &wrapped, &wrong).unwrap_err();
        assert_eq!(kind(&e), "Integrity", "{e}");
        assert_eq!(kind(&kms.rewrap(&prj, &wrapped, &wrong).unwrap_err()), "Integrity");
    }
    // A key from another KMS name is refused, as is an unknown key id.
    let foreign = WrappedKey::new(
        "other",
        key.id.clone(),
        1,
        *wrapped.nonce(),
        wrapped.ciphertext().to_vec(),
    )
    .unwrap();
    assert_eq!(
        kind(&kms.decrypt_data_key(&prj, &foreign, &ctx("prj-1")).unwrap_err()),
        "InvalidArgument"
    );
    let unknown = KeyId::generate().unwrap();
    assert_eq!(
        kind(&kms.generate_data_key(&prj, &unknown, &ctx("prj-1")).unwrap_err()),
        "UnknownKey"
    );
    assert_eq!(kind(&kms.describe(&unknown).unwrap_err()), "UnknownKey");
}

#[test]
fn every_bit_flip_of_a_wrapped_key_fails_with_a_typed_error() {
    let (_d, _c, kms) = new_kms();
    let prj = p("prj-1");
    let key = kms.create_key(CreateKeyRequest::project_default(prj.clone())).unwrap();
    let (_dek, wrapped) = kms.generate_data_key(&prj, &key.id, &ctx("prj-1")).unwrap();
    let bytes = wrapped.to_bytes();
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        let e = match WrappedKey::from_bytes(&b) {
            Err(e) => e,
            Ok(w) => kms
                .decrypt_data_key(&prj, &w, &ctx("prj-1"))
                .expect_err(&format!("bit {i} flipped and the key still unwrapped")),
        };
        let k = kind(&e);
        assert!(
            ["Malformed", "Integrity", "UnknownKey", "InvalidArgument"].contains(&k),
            "bit {i}: {e}"
        );
        *seen.entry(k).or_insert(0) += 1;
    }
    // The flips that survive decoding reach the SIV check.
    assert!(seen["Integrity"] > 8 * 48, "{seen:?}");
}

#[test]
fn a_tampered_keystore_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let path = dir.path().join("ks");
    let root_path = dir.path().join("root.key");
    let root = RootSecret::create_key_file(&root_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        RootSecret::create_key_file(&root_path).is_err(),
        "never overwrites a root key"
    );
    let kms = LocalKms::create(&path, root, opts(&c)).unwrap();
    let prj = p("prj-1");
    let key = kms.create_key(CreateKeyRequest::project_default(prj.clone())).unwrap();
    kms.disable(&key.id).unwrap();
    let good = std::fs::read(&path).unwrap();

    // Flip every byte: neither a new instance nor the running one accepts the file, so no edit can
    // re-enable the key or add a grant.
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x01;
        std::fs::write(&path, &b).unwrap();
        let opened = LocalKms::open(&path, RootSecret::load_key_file(&root_path).unwrap(), opts(&c));
        let e = opened.expect_err(&format!("byte {i} flipped and the keystore still opened"));
        assert!(["Integrity", "WrongRootSecret"].contains(&kind(&e)), "byte {i}: {e}");
        let e = kms.generate_data_key(&prj, &key.id, &ctx("prj-1")).unwrap_err();
        assert!(["Integrity", "WrongRootSecret"].contains(&kind(&e)), "byte {i}: {e}");
        assert!(kms.grant(&key.id, &p("attacker")).is_err());
    }
    // Truncated or extended files too.
    for cut in [0, 4, 77, 82, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        assert!(kms.describe(&key.id).is_err(), "cut at {cut}");
    }
    std::fs::write(&path, [&good[..], &[0]].concat()).unwrap();
    assert!(kms.describe(&key.id).is_err());

    std::fs::write(&path, &good).unwrap();
    assert_eq!(kms.describe(&key.id).unwrap().state, KeyState::Disabled);
    let e = kms.generate_data_key(&prj, &key.id, &ctx("prj-1")).unwrap_err();
    assert_eq!(kind(&e), "KeyDisabled");
}

#[test]
fn an_older_keystore_copy_is_refused_as_a_rollback() {
    let (_d, _c, kms) = new_kms();
    let prj = p("prj-1");
    let key = kms.create_key(CreateKeyRequest::project_default(prj.clone())).unwrap();
    let enabled_copy = std::fs::read(kms.path()).unwrap();
    kms.disable(&key.id).unwrap();
    // Swapping in the copy in which the key was still enabled is refused in this process.
    std::fs::write(kms.path(), &enabled_copy).unwrap();
    let e = kms.generate_data_key(&prj, &key.id, &ctx("prj-1")).unwrap_err();
    assert_eq!(kind(&e), "Integrity", "{e}");
    assert!(e.to_string().contains("rolled back"), "{e}");
    let e = LocalKms::open(
        kms.path(),
        RootSecret::passphrase("correct horse battery"),
        LocalKmsOptions::new(),
    )
    .unwrap_err();
    assert_eq!(kind(&e), "Integrity");
    assert!(
        kms.enable(&key.id).is_err(),
        "an update on top of a rolled-back keystore is refused too"
    );
}

#[test]
fn wrong_root_secrets_and_changing_the_root_secret() {
    let (dir, c, kms) = new_kms();
    let path = kms.path().to_path_buf();
    let prj = p("prj-1");
    let key = kms.create_key(CreateKeyRequest::project_default(prj.clone())).unwrap();
    let (dek, wrapped) = kms.generate_data_key(&prj, &key.id, &ctx("prj-1")).unwrap();

    let e = LocalKms::open(&path, RootSecret::passphrase("wrong horse"), opts(&c)).unwrap_err();
    assert_eq!(kind(&e), "WrongRootSecret");
    let e = LocalKms::open(&path, RootSecret::KeyFile(SecretKey::generate().unwrap()), opts(&c)).unwrap_err();
    assert_eq!(kind(&e), "WrongRootSecret");
    assert!(format!("{:?}", RootSecret::passphrase("correct horse battery")).contains("REDACTED"));

    let other = LocalKms::open(&path, RootSecret::passphrase("correct horse battery"), opts(&c)).unwrap();
    let key_file = dir.path().join("new-root");
    kms.change_root_secret(RootSecret::create_key_file(&key_file).unwrap())
        .unwrap();
    // The instance that changed it goes on; the old passphrase opens nothing any more.
    assert_eq!(kms.decrypt_data_key(&prj, &wrapped, &ctx("prj-1")).unwrap(), dek);
    let e = LocalKms::open(&path, RootSecret::passphrase("correct horse battery"), opts(&c)).unwrap_err();
    assert_eq!(kind(&e), "WrongRootSecret");
    let e = other.decrypt_data_key(&prj, &wrapped, &ctx("prj-1")).unwrap_err();
    assert_eq!(kind(&e), "WrongRootSecret");
    let reopened = LocalKms::open(&path, RootSecret::load_key_file(&key_file).unwrap(), opts(&c)).unwrap();
    assert_eq!(reopened.decrypt_data_key(&prj, &wrapped, &ctx("prj-1")).unwrap(), dek);
    // And back to a passphrase.
    reopened
        .change_root_secret(RootSecret::passphrase("battery staple horse"))
        .unwrap();
    let again = LocalKms::open(&path, RootSecret::passphrase("battery staple horse"), opts(&c)).unwrap();
    assert_eq!(again.list().unwrap().len(), 1);
    assert!(again
        .audit_log()
        .unwrap()
        .iter()
        .any(|r| r.action == AuditAction::ChangeRootSecret));
    // A keystore that exists is never overwritten.
    assert!(LocalKms::create(&path, RootSecret::passphrase("x"), opts(&c)).is_err());
}

#[test]
fn grants_and_revocation() {
    let (_d, _c, kms) = new_kms();
    let owner = p("prj-owner");
    let guest = p("prj-guest");
    let key = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap();
    let (dek, wrapped) = kms.generate_data_key(&owner, &key.id, &ctx("x")).unwrap();
    let denied = |r: Result<(), Error>| match r.unwrap_err() {
        Error::AccessDenied { principal, key: k } => {
            assert_eq!(principal, "prj-guest");
            assert_eq!(k, key.id.as_str());
        }
        e => panic!("expected AccessDenied, got {e}"),
    };
    denied(kms.generate_data_key(&guest, &key.id, &ctx("x")).map(drop));
    denied(kms.decrypt_data_key(&guest, &wrapped, &ctx("x")).map(drop));
    denied(kms.rewrap(&guest, &wrapped, &ctx("x")).map(drop));
    assert_eq!(
        kms.grant(&key.id, &guest).unwrap().grants,
        vec![owner.clone(), guest.clone()]
    );
    assert_eq!(kms.decrypt_data_key(&guest, &wrapped, &ctx("x")).unwrap(), dek);
    kms.generate_data_key(&guest, &key.id, &ctx("x")).unwrap();
    assert_eq!(kms.revoke(&key.id, &guest).unwrap().grants, vec![owner.clone()]);
    denied(kms.decrypt_data_key(&guest, &wrapped, &ctx("x")).map(drop));
    // Granting twice is harmless; a BYOK key starts with exactly the grants asked for.
    kms.grant(&key.id, &owner).unwrap();
    assert_eq!(kms.describe(&key.id).unwrap().grants, vec![owner.clone()]);
    let byok = kms
        .create_key(CreateKeyRequest::byok().with_grant(guest.clone()))
        .unwrap();
    assert_eq!(byok.grants, vec![guest.clone()]);
    assert_eq!(byok.origin, KeyOrigin::Byok);
    denied(kms.generate_data_key(&guest, &key.id, &ctx("x")).map(drop));
}

#[test]
fn byok_import_round_trips_and_aliases_are_unique() {
    let (_d, _c, kms) = new_kms();
    let prj = p("prj-1");
    let mut material = [0x42u8; 32];
    let meta = kms
        .create_key(
            CreateKeyRequest::byok()
                .with_import(SecretKey::from_bytes(&mut material))
                .with_alias("finance")
                .with_grant(prj.clone()),
        )
        .unwrap();
    assert_eq!(meta.alias.as_deref(), Some("finance"));
    assert_eq!(meta.origin, KeyOrigin::Byok);
    let (dek, wrapped) = kms.generate_data_key(&prj, &meta.id, &ctx("prj-1")).unwrap();
    assert_eq!(kms.decrypt_data_key(&prj, &wrapped, &ctx("prj-1")).unwrap(), dek);
    // The imported material is never stored in the clear.
    assert!(!contains(&std::fs::read(kms.path()).unwrap(), &[0x42; 32]));
    let e = kms
        .create_key(CreateKeyRequest::byok().with_alias("finance"))
        .unwrap_err();
    assert_eq!(kind(&e), "InvalidArgument");
    assert_eq!(kms.list().unwrap().len(), 1, "a refused create adds nothing");
}

#[test]
fn rotation_rewrap_and_destroyed_versions() {
    let (_d, c, kms) = new_kms();
    let prj = p("prj-1");
    let key = kms.create_key(CreateKeyRequest::project_default(prj.clone())).unwrap();
    let (dek1, w1) = kms.generate_data_key(&prj, &key.id, &ctx("a")).unwrap();
    let meta = kms.rotate(&key.id).unwrap();
    assert_eq!(meta.primary_version, 2);
    assert_eq!(meta.versions.len(), 2);
    let (dek2, w2) = kms.generate_data_key(&prj, &key.id, &ctx("a")).unwrap();
    assert_eq!(w2.version(), 2, "new wraps use the new version");
    assert_eq!(
        kms.decrypt_data_key(&prj, &w1, &ctx("a")).unwrap(),
        dek1,
        "old wraps still open"
    );
    assert_eq!(kms.decrypt_data_key(&prj, &w2, &ctx("a")).unwrap(), dek2);
    let moved = kms.rewrap(&prj, &w1, &ctx("a")).unwrap();
    assert_eq!(moved.version(), 2);
    assert_ne!(moved.ciphertext(), w1.ciphertext());
    assert_eq!(kms.decrypt_data_key(&prj, &moved, &ctx("a")).unwrap(), dek1);

    let e = kms.destroy_version(&key.id, 2).unwrap_err();
    assert_eq!(kind(&e), "InvalidKeyState", "the primary cannot be destroyed: {e}");
    assert_eq!(kind(&kms.destroy_version(&key.id, 3).unwrap_err()), "InvalidArgument");
    // A superseded version is destroyable once the longest KEK lifetime has passed since the rotation.
    assert_eq!(
        kind(&kms.destroy_version(&key.id, 1).unwrap_err()),
        "VersionDestroyTooEarly"
    );
    c.advance(Duration::from_secs(DAY));
    let meta = kms.destroy_version(&key.id, 1).unwrap();
    assert_eq!(meta.versions[0].state, KeyVersionState::Destroyed);
    assert_eq!(meta.versions[1].state, KeyVersionState::Enabled);
    match kms.decrypt_data_key(&prj, &w1, &ctx("a")).unwrap_err() {
        Error::VersionDestroyed { key: k, version } => assert_eq!((k.as_str(), version), (key.id.as_str(), 1)),
        e => panic!("expected VersionDestroyed, got {e}"),
    }
    assert_eq!(kind(&kms.rewrap(&prj, &w1, &ctx("a")).unwrap_err()), "VersionDestroyed");
    assert_eq!(
        kms.decrypt_data_key(&prj, &moved, &ctx("a")).unwrap(),
        dek1,
        "the re-wrapped key survives"
    );
    // Rotating a disabled key is refused.
    kms.disable(&key.id).unwrap();
    assert_eq!(kind(&kms.rotate(&key.id).unwrap_err()), "InvalidKeyState");
}

#[test]
fn deletion_shreds_the_key_for_the_current_keystore() {
    let (_d, c, kms) = new_kms();
    let prj = p("prj-1");
    let key = kms.create_key(CreateKeyRequest::project_default(prj.clone())).unwrap();
    let (_dek, wrapped) = kms.generate_data_key(&prj, &key.id, &ctx("a")).unwrap();
    let meta = kms.schedule_deletion(&key.id, 7).unwrap();
    let until = c.now() + Duration::from_secs(7 * DAY);
    assert_eq!(meta.state, KeyState::PendingDeletion { until });
    match kms.decrypt_data_key(&prj, &wrapped, &ctx("a")).unwrap_err() {
        Error::KeyPendingDeletion { until_unix_secs, .. } => assert_eq!(until_unix_secs, 1_700_000_000 + 7 * DAY),
        e => panic!("{e}"),
    }
    c.advance(Duration::from_secs(7 * DAY - 1));
    assert_eq!(
        kind(&kms.delete_key(&key.id).unwrap_err()),
        "InvalidKeyState",
        "not before the window ends"
    );
    c.advance(Duration::from_secs(1));
    let meta = kms.delete_key(&key.id).unwrap();
    assert_eq!(meta.state, KeyState::Deleted);
    assert!(meta.versions.iter().all(|v| v.state == KeyVersionState::Destroyed));
    for e in [
        kms.decrypt_data_key(&prj, &wrapped, &ctx("a")).unwrap_err(),
        kms.generate_data_key(&prj, &key.id, &ctx("a")).unwrap_err(),
        kms.rewrap(&prj, &wrapped, &ctx("a")).unwrap_err(),
    ] {
        assert_eq!(kind(&e), "KeyDeleted", "{e}");
    }
    // The current keystore, opened again with its root secret, cannot decrypt either.
    let reopened = LocalKms::open(kms.path(), RootSecret::passphrase("correct horse battery"), opts(&c)).unwrap();
    assert_eq!(
        kind(&reopened.decrypt_data_key(&prj, &wrapped, &ctx("a")).unwrap_err()),
        "KeyDeleted"
    );
    assert_eq!(
        reopened.describe(&key.id).unwrap().state,
        KeyState::Deleted,
        "the tombstone stays"
    );
    for e in [
        kms.enable(&key.id).unwrap_err(),
        kms.cancel_deletion(&key.id).unwrap_err(),
        kms.schedule_deletion(&key.id, 7).unwrap_err(),
        kms.grant(&key.id, &prj).unwrap_err(),
    ] {
        assert_eq!(kind(&e), "InvalidKeyState", "{e}");
    }
}

#[test]
fn the_audit_log_records_everything_without_key_material_and_detects_tampering() {
    let (_d, _c, kms) = new_kms();
    let prj = p("prj-1");
    let mut m = [0x37u8; 32];
    let key = kms
        .create_key(
            CreateKeyRequest::byok()
                .with_import(SecretKey::from_bytes(&mut m))
                .with_grant(prj.clone()),
        )
        .unwrap();
    let (dek, wrapped) = kms.generate_data_key(&prj, &key.id, &ctx("a")).unwrap();
    kms.decrypt_data_key(&prj, &wrapped, &ctx("a")).unwrap();
    kms.disable(&key.id).unwrap();
    kms.decrypt_data_key(&prj, &wrapped, &ctx("a")).unwrap_err();
    kms.enable(&key.id).unwrap();
    kms.decrypt_data_key(&p("stranger"), &wrapped, &ctx("a")).unwrap_err();

    let log = kms.audit_log().unwrap();
    let actions: Vec<_> = log.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::CreateKeystore,
            AuditAction::CreateKey,
            AuditAction::CreateKey,
            AuditAction::GenerateDataKey,
            AuditAction::DecryptDataKey,
            AuditAction::Disable,
            AuditAction::Disable,
            AuditAction::DecryptDataKey,
            AuditAction::Enable,
            AuditAction::Enable,
            AuditAction::DecryptDataKey,
        ]
    );
    assert!(log.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
    // Each administrative change is an intent (before the keystore write) and its outcome (after).
    for (intent, outcome) in [(1, 2), (5, 6), (8, 9)] {
        assert!(
            matches!(log[intent].outcome, AuditOutcome::Intent { .. }),
            "{:?}",
            log[intent]
        );
        assert_eq!(log[outcome].outcome, AuditOutcome::Success);
        assert_eq!(log[outcome].resolves, Some(log[intent].seq));
    }
    assert_eq!(log[3].principal.as_ref(), Some(&prj));
    assert_eq!(log[3].version, Some(1));
    assert_eq!(log[3].key.as_ref(), Some(&key.id));
    assert_eq!(log[4].outcome, AuditOutcome::Success);
    match &log[7].outcome {
        AuditOutcome::Failure(m) => assert!(m.contains("disabled"), "{m}"),
        o => panic!("{o:?}"),
    }
    match &log[10].outcome {
        AuditOutcome::Failure(m) => assert!(m.contains("access denied"), "{m}"),
        o => panic!("{o:?}"),
    }
    let raw = std::fs::read(kms.audit_path()).unwrap();
    assert!(!contains(&raw, &[0x37; 32]), "no CMK material");
    assert!(!contains(&raw, wrapped.ciphertext()), "not even wrapped keys");
    assert_eq!(kms.decrypt_data_key(&prj, &wrapped, &ctx("a")).unwrap(), dek);
    assert!(contains(&raw, key.id.as_str().as_bytes()));

    // Editing any byte of the records is detected, except that raising the leading length of the
    // last record (a key use after the last administrative action) makes it look like an append
    // torn by a crash: that record is cut, and the cut is recorded (the limit SECURITY.md states).
    let raw = std::fs::read(kms.audit_path()).unwrap();
    let log = kms.audit_log().unwrap();
    let last_frame = *frame_offsets(&raw).last().unwrap();
    let mut repaired = 0;
    for i in 5..raw.len() {
        let mut b = raw.clone();
        b[i] ^= 0x04;
        std::fs::write(kms.audit_path(), &b).unwrap();
        match kms.audit_log() {
            Err(e) => assert_eq!(kind(&e), "Integrity", "byte {i}: {e}"),
            Ok(after) => {
                assert!(
                    (last_frame..last_frame + 4).contains(&i),
                    "byte {i} edited unnoticed (frames {:?}, {} bytes)",
                    frame_offsets(&raw),
                    raw.len()
                );
                assert_eq!(after.len(), log.len(), "byte {i}");
                assert_eq!(after[..log.len() - 1], log[..log.len() - 1], "byte {i}");
                assert_eq!(after.last().unwrap().action, AuditAction::RepairTail, "byte {i}");
                repaired += 1;
            }
        }
    }
    assert_eq!(
        repaired, 1,
        "only the low byte of the last length, raised by 4, looks torn"
    );
    // Truncating back to before the last administrative action (the Enable's intent, which the
    // keystore anchors) is detected.
    std::fs::write(kms.audit_path(), &raw).unwrap();
    let n = kms.audit_log().unwrap().len();
    let frames = frame_offsets(&raw);
    assert_eq!(frames.len(), n);
    let enable_at = frames[8];
    std::fs::write(kms.audit_path(), &raw[..enable_at]).unwrap();
    assert_eq!(kind(&kms.audit_log().unwrap_err()), "Integrity");
    // Removing a record in the middle, or swapping two, is detected.
    let without = [&raw[..frames[3]], &raw[frames[4]..]].concat();
    std::fs::write(kms.audit_path(), &without).unwrap();
    assert_eq!(kind(&kms.audit_log().unwrap_err()), "Integrity");
    let swapped = [
        &raw[..frames[2]],
        &raw[frames[3]..frames[4]],
        &raw[frames[2]..frames[3]],
        &raw[frames[4]..],
    ]
    .concat();
    std::fs::write(kms.audit_path(), &swapped).unwrap();
    assert_eq!(kind(&kms.audit_log().unwrap_err()), "Integrity");
    // Cutting off key-use records after the last administrative action is not detected (documented).
    std::fs::write(kms.audit_path(), &raw[..frames[10]]).unwrap();
    assert_eq!(kms.audit_log().unwrap().len(), 10);
}

/// Start offsets of the audit log's frames (`u32 n || record || mac(32) || u32 n`, after a 5-byte header).
fn frame_offsets(raw: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 5;
    while at < raw.len() {
        out.push(at);
        let n = u32::from_be_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + n + 32 + 4;
    }
    out
}

#[test]
fn a_disable_through_one_instance_is_seen_by_another() {
    let (_d, c, a) = new_kms();
    let b = LocalKms::open(a.path(), RootSecret::passphrase("correct horse battery"), opts(&c)).unwrap();
    let prj = p("prj-1");
    let key = a.create_key(CreateKeyRequest::project_default(prj.clone())).unwrap();
    let (dek, wrapped) = b.generate_data_key(&prj, &key.id, &ctx("a")).unwrap();
    a.disable(&key.id).unwrap();
    assert_eq!(
        kind(&b.decrypt_data_key(&prj, &wrapped, &ctx("a")).unwrap_err()),
        "KeyDisabled"
    );
    b.enable(&key.id).unwrap();
    assert_eq!(a.decrypt_data_key(&prj, &wrapped, &ctx("a")).unwrap(), dek);
    a.revoke(&key.id, &prj).unwrap();
    assert_eq!(
        kind(&b.generate_data_key(&prj, &key.id, &ctx("a")).unwrap_err()),
        "AccessDenied"
    );
}

#[test]
fn concurrent_creates_through_two_instances_lose_nothing() {
    let (_d, c, a) = new_kms();
    let b = LocalKms::open(a.path(), RootSecret::passphrase("correct horse battery"), opts(&c)).unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let per_thread = 10;
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let kms = if t % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                let prj = p(&format!("prj-{t}"));
                (0..per_thread)
                    .map(|_| {
                        let id = kms
                            .create_key(CreateKeyRequest::project_default(prj.clone()))
                            .unwrap()
                            .id;
                        // Interleave key uses, which append to the audit log concurrently.
                        kms.generate_data_key(&prj, &id, &ctx("x")).unwrap();
                        id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut created: Vec<KeyId> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    created.sort();
    let mut listed: Vec<KeyId> = b.list().unwrap().into_iter().map(|k| k.id).collect();
    listed.sort();
    assert_eq!(listed.len(), 4 * per_thread);
    assert_eq!(listed, created);
    let log = a.audit_log().unwrap();
    assert_eq!(
        log.iter()
            .filter(|r| r.action == AuditAction::CreateKey
                && r.resolves.is_some()
                && r.outcome == AuditOutcome::Success)
            .count(),
        4 * per_thread
    );
    assert_eq!(
        log.iter().filter(|r| r.action == AuditAction::GenerateDataKey).count(),
        4 * per_thread
    );
}
