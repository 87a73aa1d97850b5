//! The AWS encryption context of a colvault wrap.
//!
//! AWS KMS binds the encryption context to the ciphertext as additional authenticated data
//! (AWS KMS Developer Guide, "Encryption context"; `GenerateDataKey`, `Decrypt` and `ReEncrypt` in
//! the API reference): `Decrypt` succeeds only with the same pairs. colvault sends
//!
//! ```text
//! colvault:principal = the principal (a grant's EncryptionContextSubset constraint names it)
//! colvault:kms       = "aws-kms"
//! colvault:key       = the key id
//! colvault:version   = the colvault version of the wrap (decimal)
//! colvault:nonce     = the wrapped key's 16-byte nonce (hex)
//! colvault:ctx:NAME  = VALUE, for every pair of colvault's context whose value is not empty
//! colvault:context   = hex(BLAKE3("colvault v1 aws-kms context" || str kms || str key id
//!                          || u32 version || str principal || canonical context || nonce))
//! ```
//!
//! The readable pairs let CloudTrail and IAM conditions (`kms:EncryptionContext:...`) see what a
//! call is for. The digest binds everything, including empty values and the exact boundaries of
//! names and values, without relying on how a service serialises the map: moto, for one,
//! concatenates names and values without lengths, so `{"ab": "c"}` and `{"a": "bc"}` would be the
//! same associated data there. So every field of a [`WrappedKey`] is authenticated: the KMS name and
//! key id are checked by colvault (the key id is also pinned as `KeyId` of `Decrypt`), the version
//! and nonce through this context, the blob by the service.

use std::collections::HashMap;

use crate::codec::{hex, Encoder};
use crate::kms::types::{EncryptionContext, KeyId, Principal, WRAP_NONCE_LEN};

/// The context name that carries the principal (and that grants constrain).
pub(super) const PRINCIPAL: &str = "colvault:principal";
const KMS: &str = "colvault:kms";
const KEY: &str = "colvault:key";
const VERSION: &str = "colvault:version";
const NONCE: &str = "colvault:nonce";
const DIGEST: &str = "colvault:context";
const PAIR_PREFIX: &str = "colvault:ctx:";
const DIGEST_LABEL: &[u8] = b"colvault v1 aws-kms context";

/// The AWS encryption context of a wrap of `ctx` for `principal` under `version` of `key`.
pub(super) fn aws_context(
    kms: &str,
    key: &KeyId,
    version: u32,
    principal: &Principal,
    ctx: &EncryptionContext,
    nonce: &[u8; WRAP_NONCE_LEN],
) -> HashMap<String, String> {
    let mut e = Encoder::new();
    e.raw(DIGEST_LABEL)
        .str(kms)
        .str(key.as_str())
        .u32(version)
        .str(principal.as_str())
        .bytes(&ctx.canonical_bytes())
        .raw(nonce);
    let digest = blake3::hash(&e.finish());
    let mut m = HashMap::with_capacity(ctx.len() + 6);
    m.insert(PRINCIPAL.into(), principal.as_str().into());
    m.insert(KMS.into(), kms.into());
    m.insert(KEY.into(), key.as_str().into());
    m.insert(VERSION.into(), version.to_string());
    m.insert(NONCE.into(), hex(nonce));
    for (name, value) in ctx.iter().filter(|(_, v)| !v.is_empty()) {
        m.insert(format!("{PAIR_PREFIX}{name}"), value.into());
    }
    m.insert(DIGEST.into(), hex(digest.as_bytes()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_digest_and_boundaries_matter() {
        let k = KeyId::new("k1").unwrap();
        let p = Principal::new("p1").unwrap();
        let c = EncryptionContext::new().with("ab", "c").with("table", "");
        let base = aws_context("aws-kms", &k, 1, &p, &c, &[0; 16]);
        assert_eq!(base[PRINCIPAL], "p1");
        assert_eq!(base["colvault:ctx:ab"], "c");
        assert!(
            !base.contains_key("colvault:ctx:table"),
            "empty values go in the digest only"
        );
        let variants = [
            aws_context("aws-kms2", &k, 1, &p, &c, &[0; 16]),
            aws_context("aws-kms", &KeyId::new("k2").unwrap(), 1, &p, &c, &[0; 16]),
            aws_context("aws-kms", &k, 2, &p, &c, &[0; 16]),
            aws_context("aws-kms", &k, 1, &Principal::new("p2").unwrap(), &c, &[0; 16]),
            aws_context("aws-kms", &k, 1, &p, &c, &[1; 16]),
            aws_context(
                "aws-kms",
                &k,
                1,
                &p,
                &EncryptionContext::new().with("a", "bc").with("table", ""),
                &[0; 16],
            ),
            aws_context(
                "aws-kms",
                &k,
                1,
                &p,
                &EncryptionContext::new().with("ab", "c"),
                &[0; 16],
            ),
        ];
        for v in &variants {
            assert_ne!(v[DIGEST], base[DIGEST]);
        }
    }
}
