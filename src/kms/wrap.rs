//! The key-wrap construction: AES-256-SIV (RFC 5297) with the context as associated data.
//!
//! # Construction
//!
//! A CMK version's 256-bit material `M` gives a 512-bit AES-SIV key (a CMAC key and a CTR key,
//! RFC 5297 section 2.2):
//!
//! ```text
//! K = HKDF-SHA256(M, info = label("colvault v1 kms wrap key") || u8 len(key id) || key id || u32 version)
//! ```
//!
//! A 32-byte data key is sealed as `AES-SIV(K, headers, key)` = 16-byte synthetic IV (the tag) || 32
//! bytes, with the vector of associated-data headers
//!
//! ```text
//! [ "colvault v1 kms wrap", kms name, key id, u32 version, canonical encryption context, 16-byte nonce ]
//! ```
//!
//! where the nonce is fresh from the OS CSPRNG and is the last header, as RFC 5297 section 3 says for
//! nonce-based use. S2V authenticates each header separately, so the vector is unambiguous without
//! extra framing. A KEK wraps DEKs the same way (see [`super::cache`]), under
//! `HKDF(KEK, "colvault v1 kek wrap key")`, with headers `["colvault v1 kek wrap", canonical DEK
//! context, nonce]`.
//!
//! # Why not AES-KW
//!
//! AES Key Wrap (RFC 3394, and RFC 5649 with padding) takes no associated data. It could not bind the
//! encryption context (project, table, file ids), so a wrapped key could be moved to another project,
//! table or file and still unwrap. Binding a context would need a second construction on top; SIV
//! binds it natively, and is itself the deterministic authenticated key wrap of RFC 5297 section 1.3.2.
//!
//! # Why SIV rather than AES-GCM with a random nonce
//!
//! * **No wrap-count limit.** GCM with random 96-bit nonces is limited to 2^32 invocations per key
//!   (NIST SP 800-38D section 8.3), which a KMS key used by many processes over years must count
//!   somewhere shared and durable. AES-SIV has no nonce to collide: a repeated (headers, plaintext)
//!   pair only reveals that the same key was wrapped twice under the same context, and with our
//!   128-bit random nonce as a header even that does not happen in practice.
//! * **Misuse resistance.** A broken RNG or a restored VM snapshot that repeats a nonce does not reveal
//!   the GCM authentication key or XORs of plaintexts; SIV degrades to deterministic encryption.
//! * **Cost.** Wraps happen O(1) times per KEK lifetime, so SIV's two passes over 32 bytes are
//!   irrelevant next to a KMS round trip.

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use zeroize::Zeroizing;

use super::types::{EncryptionContext, KeyId, WrappedKey, WRAP_NONCE_LEN};
use crate::crypto::kdf::derive_key_512;
use crate::crypto::{random_array, Purpose, SecretKey, KEY_LEN};
use crate::error::{Error, Result};

/// The length of an AES-SIV tag (the synthetic IV), prepended to the ciphertext.
pub const SIV_TAG_LEN: usize = 16;

/// The length of a 32-byte key wrapped with AES-SIV: the tag and the key.
pub const WRAPPED_KEY_LEN: usize = SIV_TAG_LEN + KEY_LEN;

/// The first associated-data header of a CMK wrap.
pub const KMS_WRAP_LABEL: &[u8] = b"colvault v1 kms wrap";

/// The first associated-data header of a KEK-to-DEK wrap.
pub const KEK_WRAP_LABEL: &[u8] = b"colvault v1 kek wrap";

fn cipher(key: &[u8; 64]) -> Result<Aes256Siv> {
    Aes256Siv::new_from_slice(key).map_err(|_| Error::Crypto("AES-SIV key of the wrong length"))
}

/// Seals `plaintext` with AES-256-SIV (RFC 5297) under the 512-bit `key`, authenticating the vector of
/// associated-data `headers`; returns the 16-byte tag followed by the ciphertext.
///
/// Put a fresh random nonce as the last header (RFC 5297 section 3).
pub fn siv_wrap(key: &[u8; 64], headers: &[&[u8]], plaintext: &[u8]) -> Result<Vec<u8>> {
    cipher(key)?
        .encrypt(headers, plaintext)
        .map_err(|_| Error::Crypto("AES-SIV refused its input (too many headers)"))
}

/// Opens what [`siv_wrap`] sealed, with the same `key` and `headers`. Any other key, header, or a
/// changed bit fails with [`Error::Integrity`] naming `what`. The plaintext is zeroized on drop.
pub fn siv_unwrap(key: &[u8; 64], headers: &[&[u8]], sealed: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < SIV_TAG_LEN {
        return Err(Error::integrity(what));
    }
    let mut buf = Zeroizing::new(sealed.to_vec());
    cipher(key)?
        .decrypt_in_place(headers, &mut *buf)
        .map_err(|_| Error::integrity(what))?;
    Ok(buf)
}

/// [`siv_unwrap`] of a wrapped 32-byte key.
pub fn siv_unwrap_key(key: &[u8; 64], headers: &[&[u8]], sealed: &[u8], what: &str) -> Result<SecretKey> {
    if sealed.len() != WRAPPED_KEY_LEN {
        return Err(Error::integrity(what));
    }
    let plain = siv_unwrap(key, headers, sealed, what)?;
    SecretKey::from_slice(&plain)
}

/// The AES-SIV key of one CMK version.
fn version_wrap_key(material: &SecretKey, key_id: &KeyId, version: u32) -> Result<Zeroizing<[u8; 64]>> {
    let id = key_id.as_str().as_bytes();
    let id_len = [u8::try_from(id.len()).expect("key ids are at most 64 bytes")];
    derive_key_512(material, Purpose::KmsWrap, &[&id_len, id, &version.to_be_bytes()])
}

/// Wraps `dek` under version `version` of CMK `key_id` (whose material is `material`), binding `ctx`.
pub(crate) fn kms_wrap(
    material: &SecretKey,
    kms: &str,
    key_id: &KeyId,
    version: u32,
    ctx: &EncryptionContext,
    dek: &SecretKey,
) -> Result<WrappedKey> {
    let k = version_wrap_key(material, key_id, version)?;
    let nonce = random_array::<WRAP_NONCE_LEN>()?;
    let c = ctx.canonical_bytes();
    let v = version.to_be_bytes();
    let headers: [&[u8]; 6] = [
        KMS_WRAP_LABEL,
        kms.as_bytes(),
        key_id.as_str().as_bytes(),
        &v,
        &c,
        &nonce,
    ];
    let sealed = siv_wrap(&k, &headers, dek.expose())?;
    WrappedKey::new(kms, key_id.clone(), version, nonce, sealed)
}

/// Unwraps what [`kms_wrap`] wrapped; `material` must be the material of `wrapped.version()`.
pub(crate) fn kms_unwrap(material: &SecretKey, wrapped: &WrappedKey, ctx: &EncryptionContext) -> Result<SecretKey> {
    let k = version_wrap_key(material, wrapped.key_id(), wrapped.version())?;
    let c = ctx.canonical_bytes();
    let v = wrapped.version().to_be_bytes();
    let headers: [&[u8]; 6] = [
        KMS_WRAP_LABEL,
        wrapped.kms().as_bytes(),
        wrapped.key_id().as_str().as_bytes(),
        &v,
        &c,
        wrapped.nonce(),
    ];
    siv_unwrap_key(
        &k,
        &headers,
        wrapped.ciphertext(),
        &format!(
            "wrapped key (key {} version {}: wrong encryption context, or altered)",
            wrapped.key_id(),
            wrapped.version()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_siv::siv::Aes128Siv;
    use hex_literal::hex;

    /// RFC 5297 appendix A.1: deterministic authenticated encryption (AES-CMAC-SIV, 256-bit key).
    #[test]
    fn rfc5297_a1() {
        let key = hex!("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let ad = hex!("101112131415161718191a1b1c1d1e1f2021222324252627");
        let pt = hex!("112233445566778899aabbccddee");
        let out = Aes128Siv::new_from_slice(&key)
            .unwrap()
            .encrypt([&ad[..]], &pt)
            .unwrap();
        assert_eq!(
            out,
            hex!("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c")
        );
        let back = Aes128Siv::new_from_slice(&key)
            .unwrap()
            .decrypt([&ad[..]], &out)
            .unwrap();
        assert_eq!(back, pt);
    }

    /// RFC 5297 appendix A.2: nonce-based authenticated encryption, several headers, nonce last.
    #[test]
    fn rfc5297_a2() {
        let key = hex!("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f");
        let ad1 = hex!("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100");
        let ad2 = hex!("102030405060708090a0");
        let nonce = hex!("09f911029d74e35bd84156c5635688c0");
        let pt = hex!("7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553");
        let headers: [&[u8]; 3] = [&ad1, &ad2, &nonce];
        let out = Aes128Siv::new_from_slice(&key).unwrap().encrypt(headers, &pt).unwrap();
        assert_eq!(
            out,
            hex!("7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d")
        );
    }

    /// The AES-256 variant we use (512-bit key), against the AES-CMAC-SIV-512 vector that the RustCrypto
    /// and Miscreant test suites derive from RFC 5297 A.1's inputs; pins `siv_wrap` itself.
    #[test]
    fn aes256_siv_vector_through_siv_wrap() {
        let key = hex!("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f06f6e6d6c6b6a69686766656463626160f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f");
        let ad = hex!("101112131415161718191a1b1c1d1e1f2021222324252627");
        let pt = hex!("112233445566778899aabbccddee");
        let out = siv_wrap(&key, &[&ad], &pt).unwrap();
        assert_eq!(
            out,
            hex!("f125274c598065cfc26b0e71575029088b035217e380cac8919ee800c126")
        );
        assert_eq!(&*siv_unwrap(&key, &[&ad], &out, "t").unwrap(), &pt);
    }

    #[test]
    fn siv_round_trip_and_tamper() {
        let key = random_array::<64>().unwrap();
        let headers: [&[u8]; 3] = [b"label", b"ctx", &[1; 16]];
        let sealed = siv_wrap(&key, &headers, &[9; 32]).unwrap();
        assert_eq!(sealed.len(), WRAPPED_KEY_LEN);
        let k = siv_unwrap_key(&key, &headers, &sealed, "t").unwrap();
        assert_eq!(k, SecretKey::from_slice(&[9; 32]).unwrap());
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(matches!(
                siv_unwrap(&key, &headers, &bad, "t"),
                Err(Error::Integrity { .. })
            ));
        }
        let other: [&[u8]; 3] = [b"label", b"ctx2", &[1; 16]];
        assert!(matches!(
            siv_unwrap(&key, &other, &sealed, "t"),
            Err(Error::Integrity { .. })
        ));
        // Headers are a vector, not a concatenation: moving a boundary fails.
        let moved: [&[u8]; 3] = [b"labelc", b"tx", &[1; 16]];
        assert!(siv_unwrap(&key, &moved, &sealed, "t").is_err());
        assert!(siv_unwrap(&key, &headers, &sealed[..15], "t").is_err());
        assert!(siv_unwrap_key(&key, &headers, &sealed[..47], "t").is_err());
    }

    #[test]
    fn kms_wrap_binds_context_key_and_version() {
        let m = SecretKey::generate().unwrap();
        let id = KeyId::generate().unwrap();
        let ctx = EncryptionContext::new().with("project", "p1");
        let dek = SecretKey::generate().unwrap();
        let w = kms_wrap(&m, "local", &id, 1, &ctx, &dek).unwrap();
        assert_eq!(w.ciphertext().len(), WRAPPED_KEY_LEN);
        assert_eq!(kms_unwrap(&m, &w, &ctx).unwrap(), dek);
        // Fresh nonce every wrap.
        let w2 = kms_wrap(&m, "local", &id, 1, &ctx, &dek).unwrap();
        assert_ne!(w.nonce(), w2.nonce());
        assert_ne!(w.ciphertext(), w2.ciphertext());
        let other = EncryptionContext::new().with("project", "p2");
        assert!(matches!(kms_unwrap(&m, &w, &other), Err(Error::Integrity { .. })));
        assert!(matches!(
            kms_unwrap(&m, &w, &EncryptionContext::new()),
            Err(Error::Integrity { .. })
        ));
        let wrong_version = WrappedKey::new("local", id.clone(), 2, *w.nonce(), w.ciphertext().to_vec()).unwrap();
        assert!(matches!(
            kms_unwrap(&m, &wrong_version, &ctx),
            Err(Error::Integrity { .. })
        ));
        let wrong_kms = WrappedKey::new("other", id, 1, *w.nonce(), w.ciphertext().to_vec()).unwrap();
        assert!(matches!(kms_unwrap(&m, &wrong_kms, &ctx), Err(Error::Integrity { .. })));
        let other_material = SecretKey::generate().unwrap();
        assert!(matches!(
            kms_unwrap(&other_material, &w, &ctx),
            Err(Error::Integrity { .. })
        ));
    }
}
