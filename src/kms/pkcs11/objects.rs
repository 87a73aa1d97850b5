//! The token objects colvault keeps: one AES-256 secret key per CMK version, the metadata key, and the
//! state record (a data object). Templates, lookup by label and `CKA_ID`, creation and destruction.
//!
//! # Key objects (PKCS#11 v2.40 sections 4.7 to 4.10, and 2.8 for `CKK_AES`)
//!
//! Every key colvault creates is a `CKO_SECRET_KEY` of type `CKK_AES`, 32 bytes (`CKA_VALUE_LEN`),
//! with `CKA_TOKEN = true` (it persists on the token), `CKA_PRIVATE = true` (visible only after
//! login), `CKA_SENSITIVE = true` and `CKA_EXTRACTABLE = false` (section 4.10: its value can never be
//! read, nor wrapped out of the token; the token then also sets `CKA_ALWAYS_SENSITIVE` and
//! `CKA_NEVER_EXTRACTABLE`), `CKA_MODIFIABLE = false`, and only `CKA_ENCRYPT` and `CKA_DECRYPT`
//! (no wrap, unwrap, derive, sign or verify: it can be used for AES-GCM and nothing else). Keys are
//! generated on the token (`CKM_AES_KEY_GEN`); only bring-your-own material is imported
//! (`C_CreateObject` with `CKA_VALUE`).
//!
//! Version `n` of CMK `k` is labelled `colvault-cmk:k:vn` with `CKA_ID` `k:n`; both are matched when
//! it is looked up, and two matches are refused as [`Error::Integrity`].

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroize;

use super::session::p11;
use crate::crypto::{SecretKey, KEY_LEN};
use crate::error::{Error, Result};
use crate::kms::types::KeyId;

/// `CKA_LABEL` and `CKA_ID` of the metadata key (the key that seals the state record).
pub const METADATA_KEY_LABEL: &str = "colvault-metadata-key";
/// `CKA_LABEL` and `CKA_ID` of the state record (a `CKO_DATA` object).
pub const STATE_LABEL: &str = "colvault-state";
/// `CKA_APPLICATION` of the state record.
pub const APPLICATION: &str = "colvault";

/// The `CKA_LABEL` of version `version` of CMK `key`.
pub fn version_label(key: &KeyId, version: u32) -> String {
    format!("colvault-cmk:{key}:v{version}")
}

/// The `CKA_ID` of version `version` of CMK `key`.
pub fn version_object_id(key: &KeyId, version: u32) -> Vec<u8> {
    format!("{key}:{version}").into_bytes()
}

fn aes_key_template(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

fn key_search(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// Generates a non-extractable AES-256 key on the token (`CKM_AES_KEY_GEN`).
pub(super) fn generate_key(session: &Session, label: &str, id: &[u8]) -> Result<ObjectHandle> {
    let mut t = aes_key_template(label, id);
    t.push(Attribute::ValueLen((KEY_LEN as u64).into()));
    session
        .generate_key(&Mechanism::AesKeyGen, &t)
        .map_err(|e| p11("C_GenerateKey (AES-256)", e))
}

/// Imports 32 bytes of material as a non-extractable AES-256 key (`C_CreateObject`). The template's
/// copy of the material is zeroized before returning.
pub(super) fn import_key(session: &Session, label: &str, id: &[u8], material: &SecretKey) -> Result<ObjectHandle> {
    let mut t = aes_key_template(label, id);
    t.push(Attribute::Value(material.expose().to_vec()));
    let r = session.create_object(&t);
    for a in &mut t {
        if let Attribute::Value(v) = a {
            v.zeroize();
        }
    }
    r.map_err(|e| p11("C_CreateObject (imported AES-256 key)", e))
}

/// The one key object with this label and id, if any; several are [`Error::Integrity`].
pub(super) fn find_key(session: &Session, label: &str, id: &[u8]) -> Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(&key_search(label, id))
        .map_err(|e| p11("C_FindObjects", e))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(Error::integrity(format!(
            "PKCS#11 token: {} key objects are labelled {label:?}; only colvault should create them",
            found.len()
        ))),
    }
}

/// Destroys every key object with this label and id (`C_DestroyObject`); returns how many.
pub(super) fn destroy_keys(session: &Session, label: &str, id: &[u8]) -> Result<usize> {
    let found = session
        .find_objects(&key_search(label, id))
        .map_err(|e| p11("C_FindObjects", e))?;
    for h in &found {
        session.destroy_object(*h).map_err(|e| p11("C_DestroyObject", e))?;
    }
    Ok(found.len())
}

/// The handle of version `version` of `key`, if the object exists.
pub(super) fn find_version(session: &Session, key: &KeyId, version: u32) -> Result<Option<ObjectHandle>> {
    find_key(session, &version_label(key, version), &version_object_id(key, version))
}

fn state_search() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Application(APPLICATION.as_bytes().to_vec()),
        Attribute::Label(STATE_LABEL.as_bytes().to_vec()),
    ]
}

/// Every state record object on the token: normally one; two after an update that was interrupted
/// between creating the new record and destroying the old one (see [`replace_state`]).
pub(super) fn find_states(session: &Session) -> Result<Vec<ObjectHandle>> {
    session
        .find_objects(&state_search())
        .map_err(|e| p11("C_FindObjects", e))
}

/// Creates the state record: a private, modifiable token data object (PKCS#11 v2.40 section 4.5)
/// holding `value`.
pub(super) fn create_state(session: &Session, value: Vec<u8>) -> Result<ObjectHandle> {
    let mut t = state_search();
    t.extend([
        Attribute::Private(true),
        Attribute::Modifiable(true),
        Attribute::Value(value),
    ]);
    session
        .create_object(&t)
        .map_err(|e| p11("C_CreateObject (state record)", e))
}

/// The value of the state record.
pub(super) fn read_state(session: &Session, object: ObjectHandle) -> Result<Vec<u8>> {
    let attrs = session
        .get_attributes(object, &[cryptoki::object::AttributeType::Value])
        .map_err(|e| p11("C_GetAttributeValue (state record)", e))?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| Error::integrity("PKCS#11 token: the colvault state record has no value"))
}

/// Replaces the state record: creates a new object holding `value`, then destroys the `old` ones.
/// Tokens need not let `CKA_VALUE` of a data object change (SoftHSM2 refuses `C_SetAttributeValue`
/// on it), so the record is replaced, never modified; an interruption in between leaves two records,
/// and the reader takes the newer generation.
pub(super) fn replace_state(session: &Session, old: &[ObjectHandle], value: Vec<u8>) -> Result<()> {
    create_state(session, value)?;
    for h in old {
        session
            .destroy_object(*h)
            .map_err(|e| p11("C_DestroyObject (old state record)", e))?;
    }
    Ok(())
}
