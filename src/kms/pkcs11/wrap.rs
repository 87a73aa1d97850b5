//! AES-256-GCM on the token: the wrap of data keys (and KEKs) under a CMK version, bound to the
//! encryption context, and the seal of the state record under the metadata key.
//!
//! # Construction
//!
//! `CKM_AES_GCM` (PKCS#11 v2.40 section 2.12.3, `CK_GCM_PARAMS`; v3.0 section 2.14.3) is AES-GCM
//! (NIST SP 800-38D) with a 96-bit IV, the associated data given in the parameters, and a 128-bit tag
//! appended to the ciphertext. A 32-byte data key wrapped under version `v` of CMK `k` is
//!
//! ```text
//! IV         = 12 fresh bytes from the OS CSPRNG (SP 800-38D section 8.2.2, RBG-based construction)
//! AAD        = str "colvault v1 pkcs11 wrap" | str kms name | str key id | u32 version
//!              | bytes canonical encryption context          (codec: u32 lengths, big-endian)
//! sealed     = AES-256-GCM(CMK version object, IV, AAD, data key) = 32 bytes || 16-byte tag
//! WrappedKey = (kms, key id, version, nonce = IV || 0000, sealed)
//! ```
//!
//! The AAD binds what `LocalKms` binds (`super::super::wrap`): the KMS name, key id, version and
//! context. The principal is not bound: grants decide who may use a key, and a grantee must be able
//! to unwrap what another grantee wrapped under the same context. The `WrappedKey` nonce field has
//! 16 bytes; the IV is its first 12, the last 4 are zero and checked.
//!
//! Key-wrap mechanisms such as `CKM_AES_KEY_WRAP` (RFC 3394) take no associated data, so they could
//! not bind the context; GCM through `C_Encrypt` does.
//!
//! # Nonces
//!
//! A random 96-bit IV never repeats under one key only while the key's invocations stay within
//! SP 800-38D section 8.3: at most 2^32 with the RBG-based construction of section 8.2.2. colvault
//! counts them on the token: each version's wraps are reserved in leases of [`super::WRAP_LEASE`]
//! in the sealed state record (`super::record`), and a version whose reservations would pass 2^32
//! refuses to wrap ([`Error::KeyLimit`]: rotate). The state record's own seals are counted in it
//! the same way.

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::session::{p11, rv};
use crate::codec::Encoder;
use crate::crypto::{random_array, SecretKey, KEY_LEN};
use crate::error::{Error, Result};
use crate::kms::types::{EncryptionContext, KeyId, WrappedKey, WRAP_NONCE_LEN};

/// The length of a GCM IV (96 bits, SP 800-38D section 5.2.1.1).
pub const GCM_IV_LEN: usize = 12;
/// The length of a GCM tag (128 bits).
pub const GCM_TAG_LEN: usize = 16;
/// The first associated-data field of a wrap.
pub const PKCS11_WRAP_LABEL: &str = "colvault v1 pkcs11 wrap";

/// The associated data of a wrap (see the module documentation).
pub fn wrap_aad(kms: &str, key: &KeyId, version: u32, ctx: &EncryptionContext) -> Vec<u8> {
    let mut e = Encoder::new();
    e.str(PKCS11_WRAP_LABEL)
        .str(kms)
        .str(key.as_str())
        .u32(version)
        .bytes(&ctx.canonical_bytes());
    e.finish()
}

/// `C_Encrypt` with `CKM_AES_GCM` under `key`, a fresh random 96-bit IV and `aad`: (IV, ciphertext ||
/// tag).
pub(super) fn gcm_seal(
    session: &Session,
    key: ObjectHandle,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; GCM_IV_LEN], Vec<u8>)> {
    let iv = random_array::<GCM_IV_LEN>()?;
    let mut iv_param = iv;
    let params =
        GcmParams::new(&mut iv_param, aad, (GCM_TAG_LEN as u64 * 8).into()).map_err(|e| p11("CK_GCM_PARAMS", e))?;
    let sealed = session
        .encrypt(&Mechanism::AesGcm(params), key, plaintext)
        .map_err(|e| p11("C_Encrypt (AES-GCM)", e))?;
    if sealed.len() != plaintext.len() + GCM_TAG_LEN {
        return Err(Error::Crypto(
            "the token returned an AES-GCM ciphertext of an unexpected length",
        ));
    }
    Ok((iv, sealed))
}

/// `C_Decrypt` with `CKM_AES_GCM`: the plaintext (zeroized on drop), or [`Error::Integrity`] naming
/// `what` when the tag does not verify (a wrong key, IV, associated data, or an altered ciphertext).
pub(super) fn gcm_open(
    session: &Session,
    key: ObjectHandle,
    iv: &[u8; GCM_IV_LEN],
    aad: &[u8],
    sealed: &[u8],
    what: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < GCM_TAG_LEN {
        return Err(Error::integrity(what));
    }
    let mut iv_param = *iv;
    let params =
        GcmParams::new(&mut iv_param, aad, (GCM_TAG_LEN as u64 * 8).into()).map_err(|e| p11("CK_GCM_PARAMS", e))?;
    match session.decrypt(&Mechanism::AesGcm(params), key, sealed) {
        Ok(plain) => Ok(Zeroizing::new(plain)),
        // A tag that does not verify: CKR_ENCRYPTED_DATA_INVALID (v2.40 section 2.12.3), or
        // CKR_GENERAL_ERROR / CKR_ENCRYPTED_DATA_LEN_RANGE from some tokens (SoftHSM2 among them).
        Err(e)
            if matches!(
                rv(&e),
                Some(
                    cryptoki::error::RvError::EncryptedDataInvalid
                        | cryptoki::error::RvError::EncryptedDataLenRange
                        | cryptoki::error::RvError::GeneralError
                )
            ) =>
        {
            Err(Error::integrity(what))
        }
        Err(e) => Err(p11("C_Decrypt (AES-GCM)", e)),
    }
}

/// Wraps `dek` under the version object `object` (version `version` of `key`), binding `ctx`.
pub(super) fn wrap(
    session: &Session,
    object: ObjectHandle,
    kms: &str,
    key: &KeyId,
    version: u32,
    ctx: &EncryptionContext,
    dek: &SecretKey,
) -> Result<WrappedKey> {
    let aad = wrap_aad(kms, key, version, ctx);
    let (iv, sealed) = gcm_seal(session, object, &aad, dek.expose())?;
    let mut nonce = [0u8; WRAP_NONCE_LEN];
    nonce[..GCM_IV_LEN].copy_from_slice(&iv);
    WrappedKey::new(kms, key.clone(), version, nonce, sealed)
}

/// Unwraps what [`wrap`] wrapped; `object` must be the object of `wrapped.version()`.
pub(super) fn unwrap(
    session: &Session,
    object: ObjectHandle,
    wrapped: &WrappedKey,
    ctx: &EncryptionContext,
) -> Result<SecretKey> {
    let what = format!(
        "wrapped key (key {} version {}: wrong encryption context, or altered)",
        wrapped.key_id(),
        wrapped.version()
    );
    let nonce = wrapped.nonce();
    if nonce[GCM_IV_LEN..].iter().any(|b| *b != 0) || wrapped.ciphertext().len() != KEY_LEN + GCM_TAG_LEN {
        return Err(Error::integrity(what));
    }
    let mut iv = [0u8; GCM_IV_LEN];
    iv.copy_from_slice(&nonce[..GCM_IV_LEN]);
    let aad = wrap_aad(wrapped.kms(), wrapped.key_id(), wrapped.version(), ctx);
    let plain = gcm_open(session, object, &iv, &aad, wrapped.ciphertext(), &what)?;
    if plain.len() != KEY_LEN {
        return Err(Error::integrity(what));
    }
    SecretKey::from_slice(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_is_unambiguous_and_binds_every_field() {
        let k = KeyId::new("cmk-1").unwrap();
        let ctx = EncryptionContext::new().with("project", "p1");
        let base = wrap_aad("pkcs11", &k, 1, &ctx);
        assert!(base.starts_with(&[0, 0, 0, 23]));
        assert_ne!(base, wrap_aad("pkcs11", &k, 2, &ctx));
        assert_ne!(base, wrap_aad("pkcs11x", &k, 1, &ctx));
        assert_ne!(base, wrap_aad("pkcs11", &KeyId::new("cmk-2").unwrap(), 1, &ctx));
        assert_ne!(
            base,
            wrap_aad("pkcs11", &k, 1, &EncryptionContext::new().with("project", "p2"))
        );
        // Moving a boundary between two fields changes the bytes.
        assert_ne!(
            wrap_aad("pkcs11c", &KeyId::new("mk").unwrap(), 1, &ctx),
            wrap_aad("pkcs11", &KeyId::new("cmk").unwrap(), 1, &ctx)
        );
    }
}
