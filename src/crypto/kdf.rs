//! HKDF-SHA256 subkeys (RFC 5869) with one distinct label per purpose, and the key commitment.
//!
//! The input key is always a uniformly random 256-bit key (a DEK or a KMS key), so the salt is empty
//! (RFC 5869 section 3.1 allows it). The `info` string is `len(label) || label || context`, where
//! `len` is one byte and the context parts have a fixed length for each label, so two different
//! (label, context) pairs never produce the same `info`.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroize;

use super::keys::{ct_eq, SecretKey, KEY_LEN};
use crate::error::{Error, Result};

/// What a derived key is for. Each purpose has its own label, so keys for different purposes are
/// independent even when they come from the same input key and context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// AES-256-GCM key sealing a file's footer body.
    FooterKey,
    /// AES-256-GCM key of one column's chunks (`Aes256Gcm`).
    GcmColumnKey,
    /// AES-256-CTR key of one column's chunks (`Aes256Ctr`).
    CtrColumnKey,
    /// RC4 column root of one column (`Rc4`): the input of that column's chunk keys.
    Rc4ColumnRoot,
    /// RC4 key of one chunk (`Rc4`), derived from the column root.
    Rc4ChunkKey,
    /// Keyed-BLAKE3 MAC key of one column's chunks (`Aes256Ctr`, `Rc4`).
    MacColumnKey,
    /// The key-commitment value of a DEK.
    Commitment,
    /// AES-SIV key (two AES-256 keys) used by a KMS key version to wrap keys.
    KmsWrap,
    /// AES-SIV key (two AES-256 keys) used by a KEK to wrap DEKs.
    KekWrap,
    /// AES-256-GCM key sealing a keystore file, from the root secret.
    KeystoreSeal,
    /// HMAC key chaining a keystore's audit log, from the root secret.
    AuditChain,
    /// Keyed-BLAKE3 key authenticating a project's settings.
    SettingsMac,
    /// AES-256-GCM key sealing one table manifest version.
    ManifestKey,
}

impl Purpose {
    /// The HKDF label of this purpose, as written in `format-spec/`.
    pub const fn label(self) -> &'static [u8] {
        match self {
            Purpose::FooterKey => b"colvault v1 footer key",
            Purpose::GcmColumnKey => b"colvault v1 gcm column key",
            Purpose::CtrColumnKey => b"colvault v1 ctr column key",
            Purpose::Rc4ColumnRoot => b"colvault v1 rc4 column root",
            Purpose::Rc4ChunkKey => b"colvault v1 rc4 chunk key",
            Purpose::MacColumnKey => b"colvault v1 mac column key",
            Purpose::Commitment => b"colvault commit v1",
            Purpose::KmsWrap => b"colvault v1 kms wrap key",
            Purpose::KekWrap => b"colvault v1 kek wrap key",
            Purpose::KeystoreSeal => b"colvault v1 keystore seal key",
            Purpose::AuditChain => b"colvault v1 audit chain key",
            Purpose::SettingsMac => b"colvault v1 settings mac key",
            Purpose::ManifestKey => b"colvault v1 manifest key",
        }
    }
}

/// Fills `out` with HKDF-SHA256(ikm, salt = empty, info = len(label) || label || parts...).
pub fn hkdf_expand(ikm: &[u8], purpose: Purpose, parts: &[&[u8]], out: &mut [u8]) -> Result<()> {
    let label = purpose.label();
    let len = [label.len() as u8];
    let mut info: Vec<&[u8]> = Vec::with_capacity(parts.len() + 2);
    info.push(&len);
    info.push(label);
    info.extend_from_slice(parts);
    Hkdf::<Sha256>::new(None, ikm)
        .expand_multi_info(&info, out)
        .map_err(|_| Error::Crypto("HKDF output too long"))
}

/// A 256-bit subkey of `key` for `purpose` in the context `parts`.
pub fn derive_key(key: &SecretKey, purpose: Purpose, parts: &[&[u8]]) -> Result<SecretKey> {
    let mut out = [0u8; KEY_LEN];
    hkdf_expand(key.expose(), purpose, parts, &mut out)?;
    Ok(SecretKey::from_bytes(&mut out))
}

/// A 512-bit subkey (two AES-256 keys, as AES-SIV needs), zeroized by the caller's wrapper.
pub(crate) fn derive_key_512(
    key: &SecretKey,
    purpose: Purpose,
    parts: &[&[u8]],
) -> Result<zeroize::Zeroizing<[u8; 64]>> {
    let mut out = zeroize::Zeroizing::new([0u8; 64]);
    hkdf_expand(key.expose(), purpose, parts, out.as_mut())?;
    Ok(out)
}

/// Length of a key commitment.
pub const COMMITMENT_LEN: usize = 32;

/// The key commitment of a DEK: HKDF(DEK, "colvault commit v1"), as DESIGN "Key commitment" says.
///
/// It is stored beside the wrapped DEK and checked, in constant time, before the DEK is used, so a
/// file cannot be made to decrypt validly under two different DEKs (AES-GCM alone is not
/// key-committing).
pub fn commitment(dek: &SecretKey) -> Result<[u8; COMMITMENT_LEN]> {
    let mut out = [0u8; COMMITMENT_LEN];
    hkdf_expand(dek.expose(), Purpose::Commitment, &[], &mut out)?;
    Ok(out)
}

/// Checks a stored commitment against `dek` in constant time.
pub fn verify_commitment(dek: &SecretKey, stored: &[u8]) -> Result<()> {
    let mut expected = commitment(dek)?;
    let ok = ct_eq(&expected, stored);
    expected.zeroize();
    if ok {
        Ok(())
    } else {
        Err(Error::integrity(
            "key commitment (the data key does not match this file)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    /// RFC 5869 appendix A.1, test case 1 (HKDF-SHA256).
    #[test]
    fn rfc5869_a1() {
        let ikm = hex!("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let salt = hex!("000102030405060708090a0b0c");
        let info = hex!("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        let (prk, hk) = Hkdf::<Sha256>::extract(Some(&salt), &ikm);
        assert_eq!(
            prk.as_slice(),
            hex!("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        hk.expand(&info, &mut okm).unwrap();
        assert_eq!(
            okm,
            hex!("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
    }

    #[test]
    fn purposes_and_contexts_give_independent_keys() {
        let k = SecretKey::generate().unwrap();
        let a = derive_key(&k, Purpose::GcmColumnKey, &[&[0, 0, 0, 1]]).unwrap();
        let b = derive_key(&k, Purpose::GcmColumnKey, &[&[0, 0, 0, 2]]).unwrap();
        let c = derive_key(&k, Purpose::CtrColumnKey, &[&[0, 0, 0, 1]]).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, derive_key(&k, Purpose::GcmColumnKey, &[&[0, 0, 0, 1]]).unwrap());
        let labels = [
            Purpose::FooterKey,
            Purpose::GcmColumnKey,
            Purpose::CtrColumnKey,
            Purpose::Rc4ColumnRoot,
            Purpose::Rc4ChunkKey,
            Purpose::MacColumnKey,
            Purpose::Commitment,
            Purpose::KmsWrap,
            Purpose::KekWrap,
            Purpose::KeystoreSeal,
            Purpose::AuditChain,
            Purpose::SettingsMac,
            Purpose::ManifestKey,
        ];
        let set: std::collections::HashSet<_> = labels.iter().map(|p| p.label()).collect();
        assert_eq!(set.len(), labels.len(), "labels are distinct");
    }

    /// The RC4 column root (from the DEK) and the per-chunk keys (from the root) have their own
    /// labels, as the one-label-per-purpose rule above says (issue 15, item 15): the same input and
    /// context give different keys for the two purposes.
    #[test]
    fn rc4_column_root_and_chunk_keys_have_distinct_labels() {
        assert_eq!(Purpose::Rc4ColumnRoot.label(), b"colvault v1 rc4 column root");
        assert_eq!(Purpose::Rc4ChunkKey.label(), b"colvault v1 rc4 chunk key");
        let k = SecretKey::generate().unwrap();
        let ctx: [&[u8]; 2] = [&[7; 16], &[0, 0, 0, 1]];
        assert_ne!(
            derive_key(&k, Purpose::Rc4ColumnRoot, &ctx).unwrap(),
            derive_key(&k, Purpose::Rc4ChunkKey, &ctx).unwrap()
        );
    }

    #[test]
    fn commitment_checks() {
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let c = commitment(&k).unwrap();
        verify_commitment(&k, &c).unwrap();
        assert!(matches!(verify_commitment(&other, &c), Err(Error::Integrity { .. })));
        assert!(verify_commitment(&k, &c[..31]).is_err());
    }
}
