//! `AwsKms` against moto's server (feature `aws-kms`): administration transitions, grants,
//! rotation, context binding, key-state refusals, round trips through the KEK cache, use from
//! inside a tokio runtime, and an encrypted project end to end.
//!
//! What is moto's and what is colvault's is said at each check: moto ignores key states and grants
//! in `Decrypt`/`GenerateDataKey` (colvault refuses from what `DescribeKey` and `ListGrants` say),
//! leaves a key `Disabled` when its deletion is cancelled (colvault restores the previous state),
//! and never deletes a key (AWS does at the end of the window).
#![cfg(feature = "aws-kms")]

mod common;

#[path = "common/counting_kms.rs"]
mod counting_kms;

use counting_kms::CountingKms;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use colvault::crypto::SecretKey;
use colvault::kms::{
    AwsKms, CacheOptions, CreateKeyRequest, EncryptionContext, KeyCache, KeyId, KeyOrigin, KeyState, Kms, KmsAdmin,
    Principal, WrappedKey,
};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::{Algorithm, Error};
use common::aws_kms::{self, AwsFixture};

fn p(name: &str) -> Principal {
    Principal::new(name).unwrap()
}

fn ctx(file: &str) -> EncryptionContext {
    EncryptionContext::new()
        .with("project", "p1")
        .with("table", "t1")
        .with("file", file)
}

/// A raw SDK client on the same server, to show what the emulator itself does.
fn raw_client(server: &common::moto::MotoServer) -> (tokio::runtime::Runtime, aws_sdk_kms::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(common::moto::REGION))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            common::moto::ACCESS_KEY_ID,
            common::moto::SECRET_ACCESS_KEY,
            None,
            None,
            "test",
        ))
        .endpoint_url(server.endpoint())
        .build();
    (rt, aws_sdk_kms::Client::from_conf(conf))
}

/// Whether moto itself decrypts a fresh ciphertext of `key` (an `Encrypt` then `Decrypt` with the
/// SDK, no colvault check in between).
fn moto_itself_decrypts(server: &common::moto::MotoServer, key: &KeyId) -> bool {
    let (rt, c) = raw_client(server);
    rt.block_on(async {
        let Ok(out) = c
            .encrypt()
            .key_id(key.as_str())
            .plaintext(aws_sdk_kms::primitives::Blob::new(b"probe".to_vec()))
            .send()
            .await
        else {
            return false;
        };
        c.decrypt()
            .ciphertext_blob(out.ciphertext_blob.unwrap())
            .send()
            .await
            .is_ok_and(|d| d.plaintext.unwrap().as_ref() == b"probe")
    })
}

#[test]
fn admin_transitions_that_moto_supports() {
    let Some(kms) = aws_kms::fresh("admin_transitions_that_moto_supports") else {
        return;
    };
    let alias = format!("cv-test-{}", std::process::id());
    let m = kms.create_key(CreateKeyRequest::byok().with_alias(&alias)).unwrap();
    assert_eq!(m.state, KeyState::Enabled);
    assert_eq!(m.alias.as_deref(), Some(alias.as_str()));
    assert_eq!(m.origin, KeyOrigin::Byok);
    assert_eq!((m.primary_version, m.versions.len()), (1, 1));
    assert!(m.grants.is_empty());
    let id = m.id.clone();
    assert_eq!(kms.describe(&id).unwrap(), m);
    assert!(kms.list().unwrap().iter().any(|k| k.id == id), "ListKeys lists it");
    // The alias is taken now (CreateAlias refuses a second key).
    assert!(matches!(
        kms.create_key(CreateKeyRequest::byok().with_alias(&alias)),
        Err(Error::InvalidArgument(_))
    ));

    assert_eq!(kms.disable(&id).unwrap().state, KeyState::Disabled);
    assert_eq!(kms.enable(&id).unwrap().state, KeyState::Enabled);

    let before = SystemTime::now();
    let pending = kms.schedule_deletion(&id, 7).unwrap();
    let KeyState::PendingDeletion { until } = pending.state else {
        panic!("not pending deletion: {pending:?}");
    };
    let window = until.duration_since(before).unwrap();
    assert!(
        window > Duration::from_secs(7 * 86_400 - 120) && window < Duration::from_secs(7 * 86_400 + 120),
        "{window:?}"
    );
    // colvault's state rules (moto would enable a key pending deletion; AWS refuses it too).
    assert!(matches!(kms.enable(&id), Err(Error::InvalidKeyState(_))));
    assert!(matches!(kms.disable(&id), Err(Error::InvalidKeyState(_))));
    assert!(matches!(kms.rotate(&id), Err(Error::InvalidKeyState(_))));
    assert!(matches!(kms.schedule_deletion(&id, 7), Err(Error::InvalidKeyState(_))));
    // Cancelling restores Enabled: AWS (and moto) leave the key Disabled, colvault enables it again.
    assert_eq!(kms.cancel_deletion(&id).unwrap().state, KeyState::Enabled);
    assert!(matches!(kms.cancel_deletion(&id), Err(Error::InvalidKeyState(_))));
    kms.disable(&id).unwrap();
    kms.schedule_deletion(&id, 30).unwrap();
    assert_eq!(kms.cancel_deletion(&id).unwrap().state, KeyState::Disabled);
    kms.enable(&id).unwrap();

    for days in [0, 6, 31] {
        assert!(matches!(
            kms.schedule_deletion(&id, days),
            Err(Error::InvalidArgument(_))
        ));
    }
    // What the AWS API cannot do is refused with a typed error.
    assert!(matches!(kms.delete_key(&id), Err(Error::KmsUnsupported { .. })));
    assert!(matches!(kms.destroy_version(&id, 1), Err(Error::KmsUnsupported { .. })));
    assert!(matches!(
        kms.create_key(CreateKeyRequest::byok().with_import(SecretKey::generate().unwrap())),
        Err(Error::KmsUnsupported { .. })
    ));
    assert!(matches!(
        kms.create_key(CreateKeyRequest::byok().with_alias("aws/reserved")),
        Err(Error::InvalidArgument(_))
    ));
    let unknown = KeyId::new("00000000-0000-0000-0000-000000000000").unwrap();
    assert!(matches!(kms.describe(&unknown), Err(Error::UnknownKey { .. })));
    assert!(matches!(kms.disable(&unknown), Err(Error::UnknownKey { .. })));
    assert_eq!(kms.name(), "aws-kms");
    assert!(kms.state_generation().unwrap().is_none());
}

#[test]
fn grants_name_colvault_principals() {
    let Some(kms) = aws_kms::fresh("grants_name_colvault_principals") else {
        return;
    };
    let owner = p("project-a");
    let other = p("project b/é");
    let m = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap();
    assert_eq!(m.origin, KeyOrigin::ProjectDefault { project: owner.clone() });
    assert_eq!(m.grants, std::slice::from_ref(&owner));
    let id = m.id;
    let (dek, w) = kms.generate_data_key(&owner, &id, &ctx("f1")).unwrap();
    assert_eq!(kms.decrypt_data_key(&owner, &w, &ctx("f1")).unwrap(), dek);
    // colvault's grant check (moto does not enforce grants: AWS does, for an identity that only
    // has the grants).
    assert!(matches!(
        kms.generate_data_key(&other, &id, &ctx("f1")),
        Err(Error::AccessDenied { .. })
    ));
    assert_eq!(kms.grant(&id, &other).unwrap().grants, [owner.clone(), other.clone()]);
    assert_eq!(
        kms.grant(&id, &other).unwrap().grants.len(),
        2,
        "granting twice adds nothing"
    );
    let (dek2, w2) = kms.generate_data_key(&other, &id, &ctx("f2")).unwrap();
    assert_eq!(kms.decrypt_data_key(&other, &w2, &ctx("f2")).unwrap(), dek2);
    assert_eq!(kms.revoke(&id, &other).unwrap().grants, std::slice::from_ref(&owner));
    assert!(matches!(
        kms.decrypt_data_key(&other, &w2, &ctx("f2")),
        Err(Error::AccessDenied { .. })
    ));
    // The grant is seen by another client too (it lives in the service).
    let second = aws_kms::fresh("grants_name_colvault_principals").unwrap();
    assert_eq!(second.describe(&id).unwrap().grants, std::slice::from_ref(&owner));
    assert_eq!(second.decrypt_data_key(&owner, &w, &ctx("f1")).unwrap(), dek);
}

#[test]
fn rotation_keeps_old_wraps_and_rewrap_moves_them() {
    let Some(kms) = aws_kms::fresh("rotation_keeps_old_wraps_and_rewrap_moves_them") else {
        return;
    };
    let owner = p("prj");
    let id = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap()
        .id;
    let (dek1, w1) = kms.generate_data_key(&owner, &id, &ctx("f")).unwrap();
    assert_eq!(w1.version(), 1);
    let epoch = kms.rotation_epoch();
    let m = kms.rotate(&id).unwrap();
    assert_eq!((m.primary_version, m.versions.len()), (2, 2), "one rotation listed");
    assert!(kms.rotation_epoch() > epoch);
    let (_, w2) = kms.generate_data_key(&owner, &id, &ctx("f")).unwrap();
    assert_eq!(w2.version(), 2);
    assert_eq!(
        kms.decrypt_data_key(&owner, &w1, &ctx("f")).unwrap(),
        dek1,
        "old wrap still opens"
    );
    let moved = kms.rewrap(&owner, &w1, &ctx("f")).unwrap();
    assert_eq!((moved.version(), moved.key_id()), (2, &id));
    assert_ne!(moved.ciphertext(), w1.ciphertext());
    assert_eq!(kms.decrypt_data_key(&owner, &moved, &ctx("f")).unwrap(), dek1);
    assert!(matches!(
        kms.rewrap(&owner, &w1, &ctx("other")),
        Err(Error::Integrity { .. })
    ));
}

#[test]
fn every_field_of_a_wrap_is_bound() {
    let Some(kms) = aws_kms::fresh("every_field_of_a_wrap_is_bound") else {
        return;
    };
    let owner = p("prj");
    let other = p("prj2");
    let id = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap()
        .id;
    kms.grant(&id, &other).unwrap();
    let (_, w) = kms.generate_data_key(&owner, &id, &ctx("f")).unwrap();
    assert!(w.ciphertext().len() <= colvault::kms::types::MAX_WRAPPED_CIPHERTEXT_LEN);
    let integrity = |r: colvault::Result<SecretKey>| matches!(r, Err(Error::Integrity { .. }));
    assert!(integrity(kms.decrypt_data_key(&owner, &w, &ctx("g"))), "other context");
    assert!(integrity(kms.decrypt_data_key(&owner, &w, &EncryptionContext::new())));
    assert!(
        integrity(kms.decrypt_data_key(&other, &w, &ctx("f"))),
        "other principal"
    );
    let with = |version: u32, nonce: [u8; 16], blob: Vec<u8>| {
        WrappedKey::new("aws-kms", id.clone(), version, nonce, blob).unwrap()
    };
    assert!(integrity(kms.decrypt_data_key(
        &owner,
        &with(2, *w.nonce(), w.ciphertext().to_vec()),
        &ctx("f")
    )));
    let mut nonce = *w.nonce();
    nonce[0] ^= 1;
    assert!(integrity(kms.decrypt_data_key(
        &owner,
        &with(1, nonce, w.ciphertext().to_vec()),
        &ctx("f")
    )));
    let mut blob = w.ciphertext().to_vec();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    assert!(integrity(kms.decrypt_data_key(
        &owner,
        &with(1, *w.nonce(), blob),
        &ctx("f")
    )));
    let foreign = WrappedKey::new("local", id.clone(), 1, *w.nonce(), w.ciphertext().to_vec()).unwrap();
    assert!(matches!(
        kms.decrypt_data_key(&owner, &foreign, &ctx("f")),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn another_keys_ciphertext_is_refused() {
    let Some(kms) = aws_kms::fresh("another_keys_ciphertext_is_refused") else {
        return;
    };
    let owner = p("prj");
    let a = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap()
        .id;
    let b = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap()
        .id;
    let (_, w) = kms.generate_data_key(&owner, &a, &ctx("f")).unwrap();
    // The wrap of key A relabelled as key B (which the principal may use): Decrypt is pinned to B
    // and the context names A. moto answers InvalidCiphertextException (the context) before it
    // compares keys; AWS would answer IncorrectKeyException: both are Integrity.
    let relabelled = WrappedKey::new("aws-kms", b, 1, *w.nonce(), w.ciphertext().to_vec()).unwrap();
    let r = kms.decrypt_data_key(&owner, &relabelled, &ctx("f"));
    assert!(matches!(r, Err(Error::Integrity { .. })), "{r:?}");
    assert!(matches!(
        kms.rewrap(&owner, &relabelled, &ctx("f")),
        Err(Error::Integrity { .. })
    ));
}

#[test]
fn disabled_and_pending_deletion_keys_are_refused_by_colvault() {
    let test = "disabled_and_pending_deletion_keys_are_refused_by_colvault";
    let (Some(kms), Some(server)) = (aws_kms::fresh(test), common::moto::server(test)) else {
        return;
    };
    let owner = p("prj");
    let id = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap()
        .id;
    let (dek, w) = kms.generate_data_key(&owner, &id, &ctx("f")).unwrap();

    kms.disable(&id).unwrap();
    assert!(
        moto_itself_decrypts(server, &id),
        "moto decrypts under a disabled key: the refusal below is colvault's"
    );
    assert!(matches!(
        kms.decrypt_data_key(&owner, &w, &ctx("f")),
        Err(Error::KeyDisabled { .. })
    ));
    assert!(matches!(
        kms.generate_data_key(&owner, &id, &ctx("f")),
        Err(Error::KeyDisabled { .. })
    ));
    assert!(matches!(
        kms.rewrap(&owner, &w, &ctx("f")),
        Err(Error::KeyDisabled { .. })
    ));
    // Another client that had cached the key as enabled sees the change once its check lifetime
    // ends; one with a zero lifetime sees it at once.
    let strict = AwsKms::open(aws_kms::options(server).with_check_lifetime(Duration::ZERO)).unwrap();
    assert!(matches!(
        strict.decrypt_data_key(&owner, &w, &ctx("f")),
        Err(Error::KeyDisabled { .. })
    ));
    kms.enable(&id).unwrap();
    assert_eq!(strict.decrypt_data_key(&owner, &w, &ctx("f")).unwrap(), dek);

    kms.schedule_deletion(&id, 7).unwrap();
    assert!(
        moto_itself_decrypts(server, &id),
        "moto decrypts under a key pending deletion"
    );
    assert!(matches!(
        kms.decrypt_data_key(&owner, &w, &ctx("f")),
        Err(Error::KeyPendingDeletion { .. })
    ));
    assert!(matches!(
        kms.generate_data_key(&owner, &id, &ctx("f")),
        Err(Error::KeyPendingDeletion { .. })
    ));
    kms.cancel_deletion(&id).unwrap();
    assert_eq!(kms.decrypt_data_key(&owner, &w, &ctx("f")).unwrap(), dek);
}

#[test]
fn a_thousand_files_cost_two_kms_calls() {
    let Some(kms) = aws_kms::fresh("a_thousand_files_cost_two_kms_calls") else {
        return;
    };
    let owner = p("prj");
    let id = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap()
        .id;
    kms.invalidate();
    let counting = Arc::new(CountingKms::new(kms.clone()));
    let writer = KeyCache::new(counting.clone(), CacheOptions::default()).unwrap();
    let reader = KeyCache::new(counting.clone(), CacheOptions::default()).unwrap();
    let kek_ctx = EncryptionContext::new().with("project", "p1");
    let requests = kms.requests();
    let files: Vec<_> = (0..1000)
        .map(|i| {
            let dek_ctx = ctx(&format!("file-{i}"));
            let (dek, env) = writer.new_data_key(&owner, &id, &kek_ctx, &dek_ctx).unwrap();
            (dek, env, dek_ctx)
        })
        .collect();
    for (dek, env, dek_ctx) in &files {
        assert_eq!(&reader.open_data_key(&owner, env, &kek_ctx, dek_ctx).unwrap(), dek);
    }
    let calls = counting.calls();
    let http = kms.requests() - requests;
    eprintln!("1,000 files written and read: {calls} KMS calls, {http} HTTP requests");
    assert_eq!(calls, 2, "one GenerateDataKey (writer) and one Decrypt (reader)");
    // And on the wire: DescribeKey, ListGrants and ListKeyRotations once (in parallel), then
    // GenerateDataKey and Decrypt.
    assert_eq!(http, 5);
}

#[test]
fn usable_from_inside_tokio_runtimes() {
    let Some(kms) = aws_kms::fresh("usable_from_inside_tokio_runtimes") else {
        return;
    };
    let owner = p("prj");
    let id = kms
        .create_key(CreateKeyRequest::project_default(owner.clone()))
        .unwrap()
        .id;
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for rt in [&current, &multi] {
        let k = kms.clone();
        let (o, i) = (owner.clone(), id.clone());
        let ok = rt.block_on(async move {
            let (dek, w) = k.generate_data_key(&o, &i, &ctx("f")).unwrap();
            k.decrypt_data_key(&o, &w, &ctx("f")).unwrap() == dek
        });
        assert!(ok);
    }
    // Opening and dropping a client inside a runtime does not panic either.
    let server = common::moto::server("usable_from_inside_tokio_runtimes").unwrap();
    current.block_on(async {
        let k = AwsKms::open(aws_kms::options(server)).unwrap();
        assert!(k.describe(&id).is_ok());
        drop(k);
    });
}

#[test]
fn options_from_the_environment_name_what_is_missing() {
    use colvault::kms::AwsKmsOptions;
    let vars = [
        "AWS_ENDPOINT_URL_KMS",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ];
    for v in vars {
        std::env::remove_var(v);
    }
    let missing = |name: &str| match AwsKmsOptions::from_env() {
        Err(Error::Config { setting, .. }) => assert!(setting.contains(name), "{setting} should name {name}"),
        other => panic!("expected a Config error naming {name}, got {other:?}"),
    };
    missing("AWS_REGION");
    std::env::set_var("AWS_DEFAULT_REGION", "eu-west-1");
    missing("AWS_ACCESS_KEY_ID");
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE");
    missing("AWS_SECRET_ACCESS_KEY");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "very-secret-value");
    let opts = AwsKmsOptions::from_env().unwrap();
    let shown = format!("{opts:?}");
    assert!(
        shown.contains("eu-west-1") && !shown.contains("very-secret-value"),
        "{shown}"
    );
    std::env::set_var("AWS_ENDPOINT_URL_KMS", "ftp://nowhere");
    assert!(matches!(
        AwsKms::open(AwsKmsOptions::from_env().unwrap()),
        Err(Error::Config { .. })
    ));
    for v in vars {
        std::env::remove_var(v);
    }
}

#[test]
fn encrypted_project_end_to_end_on_moto() {
    let Some(fx) = AwsFixture::new("encrypted_project_end_to_end_on_moto") else {
        return;
    };
    let project = Project::create(
        &fx.catalog,
        fx.dir.path().join("proj"),
        "sales",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        fx.keys(),
    )
    .unwrap();
    assert_eq!(project.settings().kms, "aws-kms");
    let cmk = project.settings().cmk.clone().unwrap();
    assert!(fx.kms.describe(&cmk).unwrap().grants.contains(project.principal()));
    let t = project.create_table("orders", common::id_batch(0, 1).schema()).unwrap();
    t.append([common::id_batch(0, 500)]).unwrap();
    t.append([common::id_batch(500, 500)]).unwrap();
    let count = |t: &colvault::table::Table| -> usize {
        t.scan()
            .build()
            .unwrap()
            .read_all()
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum()
    };
    assert_eq!(count(&t), 1000);

    fx.kms.rotate(&cmk).unwrap();
    fx.cache.invalidate();
    t.append([common::id_batch(1000, 10)]).unwrap();
    let versions: Vec<u32> = t.head().unwrap().files.iter().map(|f| f.key_version).collect();
    assert_eq!(
        versions,
        [1, 1, 2],
        "old files stay on version 1, the new one is under version 2"
    );
    assert_eq!(count(&t), 1010);

    project.rewrap(&|_, _, _| {}).unwrap();
    let versions: Vec<u32> = t.head().unwrap().files.iter().map(|f| f.key_version).collect();
    assert_eq!(versions, [2, 2, 2]);
    // Nothing needs version 1 once older snapshots are gone, but AWS KMS cannot destroy it.
    t.expire_snapshots(t.head().unwrap().version).unwrap();
    let r = project.destroy_key_version(1);
    assert!(matches!(r, Err(Error::KmsUnsupported { .. })), "{r:?}");

    // A fresh process: a new client and cache, the project opened from the catalog.
    let kms2 = aws_kms::fresh("encrypted_project_end_to_end_on_moto").unwrap();
    let cache2 = Arc::new(KeyCache::new(kms2.clone(), CacheOptions::default()).unwrap());
    let keys2 = colvault::project::Keys {
        kms: kms2.clone(),
        cache: cache2,
    };
    let reopened = Project::open(&fx.catalog, "sales", keys2).unwrap();
    assert_eq!(count(&reopened.table("orders").unwrap()), 1010);

    // Disabled in the service: the project's data cannot be read by a fresh process.
    fx.kms.disable(&cmk).unwrap();
    let keys3 = colvault::project::Keys {
        kms: kms2.clone(),
        cache: Arc::new(KeyCache::new(kms2.clone(), CacheOptions::default()).unwrap()),
    };
    kms2.invalidate();
    assert!(matches!(
        Project::open(&fx.catalog, "sales", keys3),
        Err(Error::KeyDisabled { .. })
    ));
}
