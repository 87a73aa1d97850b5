//! `Pkcs11Kms` against a real SoftHSM2 token (a fresh token per test): every state transition,
//! grants, rotation, version destruction, context binding, tampering, the PIN, what the token objects
//! allow, the sealed state record, and the KMS round trips of 1,000 files through the KEK cache.
#![cfg(feature = "pkcs11")]

mod common;

#[path = "common/counting_kms.rs"]
mod counting_kms;

use counting_kms::CountingKms;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use colvault::clock::{Clock, ManualClock};
use colvault::crypto::SecretKey;
use colvault::kms::pkcs11::{version_label, version_object_id};
use colvault::kms::{
    CacheOptions, CreateKeyRequest, DataKeyEnvelope, EncryptionContext, KeyCache, KeyId, KeyState, KeyVersionState,
    Kms, KmsAdmin, Pkcs11Kms, Pkcs11Options, Principal, WrappedKey,
};
use colvault::Error;
use common::softhsm::{self, Token};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};

const DAY: Duration = Duration::from_secs(86_400);

struct Hsm {
    token: Token,
    clock: Arc<ManualClock>,
    kms: Arc<Pkcs11Kms>,
    project: Principal,
}

fn hsm(test: &str) -> Option<Hsm> {
    let token = softhsm::token(test)?;
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let kms = Arc::new(Pkcs11Kms::open(token.options().with_clock(clock.clone())).unwrap());
    Some(Hsm {
        token,
        clock,
        kms,
        project: Principal::new("prj_hsm").unwrap(),
    })
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("project", "prj_hsm_id")
}

impl Hsm {
    fn new_key(&self) -> KeyId {
        self.kms
            .create_key(CreateKeyRequest::project_default(self.project.clone()))
            .unwrap()
            .id
    }

    fn generate(&self, key: &KeyId) -> colvault::Result<(SecretKey, WrappedKey)> {
        self.kms.generate_data_key(&self.project, key, &ctx())
    }

    fn decrypt(&self, w: &WrappedKey) -> colvault::Result<SecretKey> {
        self.kms.decrypt_data_key(&self.project, w, &ctx())
    }

    /// How many token objects (of any kind) carry the label and id of `key`'s version `version`.
    fn version_objects(&self, key: &KeyId, version: u32) -> usize {
        let s = softhsm::raw_session(&self.token);
        s.find_objects(&[
            Attribute::Label(version_label(key, version).into_bytes()),
            Attribute::Id(version_object_id(key, version)),
        ])
        .unwrap()
        .len()
    }
}

#[test]
fn name_and_no_state_generation() {
    let Some(h) = hsm("name") else { return };
    assert_eq!(h.kms.name(), "pkcs11");
    assert_eq!(h.kms.state_generation().unwrap(), None);
    assert!(h.kms.list().unwrap().is_empty());
}

#[test]
fn every_state_transition() {
    let Some(h) = hsm("states") else { return };
    let k = h.new_key();
    let m = h.kms.describe(&k).unwrap();
    assert_eq!(m.state, KeyState::Enabled);
    assert_eq!(m.primary_version, 1);
    assert_eq!(m.grants, vec![h.project.clone()]);
    let (dek, w) = h.generate(&k).unwrap();
    assert_eq!((w.kms(), w.version()), ("pkcs11", 1));
    assert_eq!(h.decrypt(&w).unwrap(), dek);

    // Enabled -> Disabled -> Enabled.
    assert_eq!(h.kms.disable(&k).unwrap().state, KeyState::Disabled);
    assert!(matches!(h.generate(&k), Err(Error::KeyDisabled { .. })));
    assert!(matches!(h.decrypt(&w), Err(Error::KeyDisabled { .. })));
    assert!(matches!(h.kms.rotate(&k), Err(Error::InvalidKeyState(_))));
    assert_eq!(h.kms.enable(&k).unwrap().state, KeyState::Enabled);
    assert_eq!(h.decrypt(&w).unwrap(), dek);

    // Deletion windows are 7 to 30 days.
    for bad in [0, 6, 31] {
        assert!(matches!(
            h.kms.schedule_deletion(&k, bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    // Enabled -> PendingDeletion -> (cancel) Enabled.
    let until = h.clock.now() + 7 * DAY;
    assert_eq!(
        h.kms.schedule_deletion(&k, 7).unwrap().state,
        KeyState::PendingDeletion { until }
    );
    assert!(matches!(h.decrypt(&w), Err(Error::KeyPendingDeletion { .. })));
    for r in [
        h.kms.enable(&k),
        h.kms.disable(&k),
        h.kms.rotate(&k),
        h.kms.schedule_deletion(&k, 7),
    ] {
        assert!(matches!(r, Err(Error::InvalidKeyState(_))), "{r:?}");
    }
    assert_eq!(h.kms.cancel_deletion(&k).unwrap().state, KeyState::Enabled);
    assert!(matches!(h.kms.cancel_deletion(&k), Err(Error::InvalidKeyState(_))));
    // Disabled -> PendingDeletion -> (cancel) Disabled.
    h.kms.disable(&k).unwrap();
    h.kms.schedule_deletion(&k, 30).unwrap();
    assert_eq!(h.kms.cancel_deletion(&k).unwrap().state, KeyState::Disabled);

    // PendingDeletion -> Deleted, only once the window has passed.
    assert!(matches!(h.kms.delete_key(&k), Err(Error::InvalidKeyState(_))));
    h.kms.schedule_deletion(&k, 7).unwrap();
    h.clock.advance(7 * DAY - Duration::from_secs(1));
    assert!(matches!(h.kms.delete_key(&k), Err(Error::InvalidKeyState(_))));
    assert_eq!(h.version_objects(&k, 1), 1);
    h.clock.advance(Duration::from_secs(1));
    let m = h.kms.delete_key(&k).unwrap();
    assert_eq!(m.state, KeyState::Deleted);
    assert!(m.versions.iter().all(|v| v.state == KeyVersionState::Destroyed));
    assert_eq!(h.version_objects(&k, 1), 0, "the version's token object is destroyed");
    assert!(matches!(h.decrypt(&w), Err(Error::KeyDeleted { .. })));
    assert!(matches!(h.generate(&k), Err(Error::KeyDeleted { .. })));
    for r in [h.kms.enable(&k), h.kms.cancel_deletion(&k), h.kms.delete_key(&k)] {
        assert!(matches!(r, Err(Error::InvalidKeyState(_))), "{r:?}");
    }
    // The tombstone stays.
    assert_eq!(h.kms.describe(&k).unwrap().state, KeyState::Deleted);
    let unknown = KeyId::new("cmk-unknown").unwrap();
    assert!(matches!(h.kms.describe(&unknown), Err(Error::UnknownKey { .. })));
    assert!(matches!(h.generate(&unknown), Err(Error::UnknownKey { .. })));
}

#[test]
fn aliases_list_and_byok_import() {
    let Some(h) = hsm("aliases") else { return };
    let a = h
        .kms
        .create_key(
            CreateKeyRequest::byok()
                .with_alias("finance")
                .with_grant(h.project.clone()),
        )
        .unwrap();
    assert!(matches!(
        h.kms.create_key(CreateKeyRequest::byok().with_alias("finance")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        h.kms.create_key(CreateKeyRequest::byok().with_alias("")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        h.kms.create_key(
            CreateKeyRequest::project_default(h.project.clone()).with_import(SecretKey::generate().unwrap())
        ),
        Err(Error::InvalidArgument(_))
    ));
    let b = h
        .kms
        .create_key(
            CreateKeyRequest::byok()
                .with_import(SecretKey::from_slice(&[7; 32]).unwrap())
                .with_grant(h.project.clone()),
        )
        .unwrap();
    let ids: Vec<KeyId> = h.kms.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![a.id.clone(), b.id.clone()], "creation order");
    let (dek, w) = h.generate(&b.id).unwrap();
    assert_eq!(h.decrypt(&w).unwrap(), dek);
    // A second value on the same token sees the same keys.
    let other = Pkcs11Kms::open(h.token.options()).unwrap();
    assert_eq!(other.describe(&a.id).unwrap().alias.as_deref(), Some("finance"));
    assert_eq!(other.decrypt_data_key(&h.project, &w, &ctx()).unwrap(), dek);
}

#[test]
fn grants_decide_who_may_use_a_key() {
    let Some(h) = hsm("grants") else { return };
    let k = h.new_key();
    let other = Principal::new("prj_other").unwrap();
    let (dek, w) = h.generate(&k).unwrap();
    assert!(matches!(
        h.kms.generate_data_key(&other, &k, &ctx()),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        h.kms.decrypt_data_key(&other, &w, &ctx()),
        Err(Error::AccessDenied { .. })
    ));
    assert!(h.kms.grant(&k, &other).unwrap().grants.contains(&other));
    assert_eq!(h.kms.decrypt_data_key(&other, &w, &ctx()).unwrap(), dek);
    assert!(!h.kms.revoke(&k, &other).unwrap().grants.contains(&other));
    assert!(matches!(
        h.kms.rewrap(&other, &w, &ctx()),
        Err(Error::AccessDenied { .. })
    ));
    // Revoking the project's own grant stops it too; a disabled key checks the grant first.
    h.kms.revoke(&k, &h.project).unwrap();
    h.kms.disable(&k).unwrap();
    assert!(matches!(h.decrypt(&w), Err(Error::AccessDenied { .. })));
}

#[test]
fn rotation_old_versions_rewrap_and_version_destruction() {
    let Some(h) = hsm("rotation") else { return };
    let k = h.new_key();
    let (dek1, w1) = h.generate(&k).unwrap();
    assert_eq!(h.kms.rotation_epoch(), 0);
    let m = h.kms.rotate(&k).unwrap();
    assert_eq!((m.primary_version, m.versions.len()), (2, 2));
    assert_eq!(h.kms.rotation_epoch(), 1);
    let (dek2, w2) = h.generate(&k).unwrap();
    assert_eq!(w2.version(), 2);
    assert_eq!(h.decrypt(&w1).unwrap(), dek1, "the old version still unwraps");
    assert_eq!(h.decrypt(&w2).unwrap(), dek2);
    let r = h.kms.rewrap(&h.project, &w1, &ctx()).unwrap();
    assert_eq!(r.version(), 2);
    assert_eq!(h.decrypt(&r).unwrap(), dek1);
    assert!(matches!(
        h.kms.rewrap(&h.project, &w1, &EncryptionContext::new()),
        Err(Error::Integrity { .. })
    ));

    // Version destruction: not the primary, not before the delay, not a version that never was.
    assert!(matches!(h.kms.destroy_version(&k, 2), Err(Error::InvalidKeyState(_))));
    assert!(matches!(h.kms.destroy_version(&k, 3), Err(Error::InvalidArgument(_))));
    assert!(matches!(h.kms.destroy_version(&k, 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        h.kms.destroy_version(&k, 1),
        Err(Error::VersionDestroyTooEarly { version: 1, .. })
    ));
    h.clock.advance(DAY);
    assert_eq!(h.version_objects(&k, 1), 1);
    let m = h.kms.destroy_version(&k, 1).unwrap();
    assert_eq!(m.versions[0].state, KeyVersionState::Destroyed);
    assert_eq!(m.versions[1].state, KeyVersionState::Enabled);
    assert_eq!(
        h.version_objects(&k, 1),
        0,
        "the destroyed version's token object is gone"
    );
    assert_eq!(h.version_objects(&k, 2), 1);
    assert!(matches!(
        h.decrypt(&w1),
        Err(Error::VersionDestroyed { version: 1, .. })
    ));
    assert!(matches!(
        h.kms.rewrap(&h.project, &w1, &ctx()),
        Err(Error::VersionDestroyed { version: 1, .. })
    ));
    assert_eq!(h.decrypt(&r).unwrap(), dek1, "what was rewrapped survives");
}

#[test]
fn wrong_context_and_tampered_wrapped_keys_are_integrity_errors() {
    let Some(h) = hsm("tamper") else { return };
    let k = h.new_key();
    let (dek, w) = h.generate(&k).unwrap();
    assert_eq!(w.ciphertext().len(), 48);
    assert_eq!(&w.nonce()[12..], &[0; 4]);
    let (_, w_again) = h.generate(&k).unwrap();
    assert_ne!(w.nonce(), w_again.nonce(), "a fresh IV per wrap");
    for wrong in [
        EncryptionContext::new(),
        EncryptionContext::new().with("project", "prj_other_id"),
        ctx().with("table", "t"),
    ] {
        assert!(matches!(
            h.kms.decrypt_data_key(&h.project, &w, &wrong),
            Err(Error::Integrity { .. })
        ));
    }
    let rebuild =
        |nonce: [u8; 16], ct: Vec<u8>, version: u32| WrappedKey::new("pkcs11", k.clone(), version, nonce, ct).unwrap();
    for i in 0..w.ciphertext().len() {
        let mut ct = w.ciphertext().to_vec();
        ct[i] ^= 0x80;
        assert!(
            matches!(h.decrypt(&rebuild(*w.nonce(), ct, 1)), Err(Error::Integrity { .. })),
            "byte {i}"
        );
    }
    for i in 0..16 {
        let mut n = *w.nonce();
        n[i] ^= 0x01;
        assert!(
            matches!(
                h.decrypt(&rebuild(n, w.ciphertext().to_vec(), 1)),
                Err(Error::Integrity { .. })
            ),
            "nonce byte {i}"
        );
    }
    assert!(matches!(
        h.decrypt(&rebuild(*w.nonce(), w.ciphertext()[..47].to_vec(), 1)),
        Err(Error::Integrity { .. })
    ));
    // Moved to another version of the same key, or to a version that never existed.
    h.kms.rotate(&k).unwrap();
    assert!(matches!(
        h.decrypt(&rebuild(*w.nonce(), w.ciphertext().to_vec(), 2)),
        Err(Error::Integrity { .. })
    ));
    assert!(matches!(
        h.decrypt(&rebuild(*w.nonce(), w.ciphertext().to_vec(), 9)),
        Err(Error::Integrity { .. })
    ));
    // Moved to another key.
    let k2 = h.new_key();
    let moved = WrappedKey::new("pkcs11", k2, 1, *w.nonce(), w.ciphertext().to_vec()).unwrap();
    assert!(matches!(h.decrypt(&moved), Err(Error::Integrity { .. })));
    // Another KMS's wrapped key.
    let foreign = WrappedKey::new("local", k.clone(), 1, *w.nonce(), w.ciphertext().to_vec()).unwrap();
    assert!(matches!(h.decrypt(&foreign), Err(Error::InvalidArgument(_))));
    assert_eq!(h.decrypt(&w).unwrap(), dek, "control: the original still unwraps");
}

#[test]
fn a_wrong_pin_is_a_typed_error() {
    let Some(token) = softhsm::token("pin") else { return };
    let wrong = |pin: &str| {
        Pkcs11Kms::open(Pkcs11Options::new(&token.module, &token.label).with_pin(zeroize::Zeroizing::new(pin.into())))
    };
    // Nobody logged in yet: the token itself refuses the PIN.
    let e = wrong("not-the-pin").unwrap_err();
    assert!(matches!(e, Error::KmsAuthentication { .. }), "{e}");
    assert!(
        !e.to_string().contains("not-the-pin"),
        "the PIN is never in a message: {e}"
    );
    assert!(matches!(wrong(""), Err(Error::KmsAuthentication { .. })));
    // Logged in by this process: a second opener must still present the right PIN.
    let kms = Pkcs11Kms::open(token.options()).unwrap();
    assert!(matches!(wrong("not-the-pin"), Err(Error::KmsAuthentication { .. })));
    Pkcs11Kms::open(token.options()).unwrap();
    drop(kms);
    // An unknown token and a missing module are typed too.
    assert!(matches!(
        Pkcs11Kms::open(Pkcs11Options::new(&token.module, "no-such-token").with_pin(softhsm_pin())),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Pkcs11Kms::open(Pkcs11Options::new("/nonexistent/libpkcs11.so", "t").with_pin(softhsm_pin())),
        Err(Error::Io { .. })
    ));
}

fn softhsm_pin() -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(softhsm::USER_PIN.to_owned())
}

#[test]
fn cmk_objects_are_sensitive_and_never_extractable() {
    let Some(h) = hsm("extract") else { return };
    let k = h.new_key();
    h.kms.rotate(&k).unwrap();
    let s = softhsm::raw_session(&h.token);
    let keys = s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)]).unwrap();
    assert_eq!(keys.len(), 3, "the metadata key and two versions");
    for obj in keys {
        // C_GetAttributeValue of CKA_VALUE fails with CKR_ATTRIBUTE_SENSITIVE.
        let info = s.get_attribute_info(obj, &[AttributeType::Value]).unwrap();
        assert!(matches!(info[0], AttributeInfo::Sensitive), "{info:?}");
        let got = s.get_attributes(obj, &[AttributeType::Value]).unwrap();
        assert!(got.is_empty(), "no value came back");
        let flags = s
            .get_attributes(
                obj,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Wrap,
                    AttributeType::Derive,
                ],
            )
            .unwrap();
        assert_eq!(
            flags,
            vec![
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::NeverExtractable(true),
                Attribute::AlwaysSensitive(true),
                Attribute::Wrap(false),
                Attribute::Derive(false),
            ]
        );
        // Nor can it be made extractable.
        assert!(s.update_attributes(obj, &[Attribute::Extractable(true)]).is_err());
        assert!(s.update_attributes(obj, &[Attribute::Sensitive(false)]).is_err());
    }
}

#[test]
fn the_state_record_cannot_be_altered_or_rolled_back_unnoticed() {
    let Some(h) = hsm("record") else { return };
    let k = h.new_key();
    let s = softhsm::raw_session(&h.token);
    // The record is private and sealed: the key's id is in it, but not in clear.
    let before = softhsm::record_value(&s, softhsm::state_record(&s));
    assert!(!before.windows(k.as_str().len()).any(|w| w == k.as_str().as_bytes()));
    // Roll back: revoke, then put the old record (which still has the grant) back.
    h.kms.revoke(&k, &h.project).unwrap();
    softhsm::put_state_record(&s, before.clone());
    assert!(matches!(h.kms.describe(&k), Err(Error::Integrity { .. })));
    assert!(matches!(h.generate(&k), Err(Error::Integrity { .. })));
    // Alter one byte: nothing opens it, in this value or a new one.
    softhsm::flip_state_record_byte(&h.token);
    assert!(matches!(h.kms.list(), Err(Error::Integrity { .. })));
    assert!(matches!(
        Pkcs11Kms::open(h.token.options()),
        Err(Error::Integrity { .. })
    ));
    // Remove it: refused, not silently re-created empty.
    s.destroy_object(softhsm::state_record(&s)).unwrap();
    assert!(matches!(
        Pkcs11Kms::open(h.token.options()),
        Err(Error::Integrity { .. })
    ));
}

#[test]
fn a_thousand_files_under_one_cmk_cost_at_most_two_round_trips() {
    let Some(h) = hsm("roundtrips") else { return };
    let k = h.new_key();
    let counting = |kms: Arc<Pkcs11Kms>| Arc::new(CountingKms::new(kms));
    let (w, r) = (counting(h.kms.clone()), counting(h.kms.clone()));
    let cache =
        |c: &Arc<CountingKms>| KeyCache::new(c.clone(), CacheOptions::default().with_clock(h.clock.clone())).unwrap();
    let (writer, reader) = (cache(&w), cache(&r));
    let dek_ctx = |i: usize| ctx().with("table", "tbl").with("file", format!("f{i:04}"));
    let mut files = Vec::new();
    for i in 0..1000 {
        let (dek, env) = writer.new_data_key(&h.project, &k, &ctx(), &dek_ctx(i)).unwrap();
        files.push((dek, env.to_bytes()));
        h.clock.advance(Duration::from_millis(250));
    }
    let written = w.calls();
    assert!(
        (1..=2).contains(&written),
        "1,000 files written cost {written} KMS round trips"
    );
    for (i, (dek, env)) in files.iter().enumerate() {
        let env = DataKeyEnvelope::from_bytes(env).unwrap();
        assert_eq!(env.kms_name(), "pkcs11");
        assert_eq!(
            &reader.open_data_key(&h.project, &env, &ctx(), &dek_ctx(i)).unwrap(),
            dek
        );
    }
    let read = r.calls();
    assert!((1..=2).contains(&read), "1,000 files read cost {read} KMS round trips");
}
