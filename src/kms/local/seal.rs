//! The keystore file's header and the seal key derived from the root secret: derive, encode, parse.

use super::*;

/// How the seal key is derived: the KDF part of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KdfHeader {
    pub(super) kind: u8,
    pub(super) argon2: Argon2Params,
    pub(super) salt: [u8; SALT_LEN],
}

/// The derived seal key and its check value.
pub(super) struct SealKey {
    pub(super) kdf: KdfHeader,
    pub(super) check: [u8; CHECK_LEN],
    pub(super) key: SecretKey,
}

impl SealKey {
    pub(super) fn derive(root: &RootSecret, kdf: KdfHeader) -> Result<SealKey> {
        let mut ikm = Zeroizing::new([0u8; KEY_LEN]);
        match root {
            RootSecret::Passphrase(p) => {
                if kdf.kind != ROOT_PASSPHRASE {
                    return Err(Error::InvalidArgument("root secret kind mismatch".into()));
                }
                if p.is_empty() {
                    return Err(Error::InvalidArgument("an empty passphrase".into()));
                }
                let params = kdf.argon2.params()?;
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(p.as_bytes(), &kdf.salt, ikm.as_mut())
                    .map_err(|_| Error::Crypto("Argon2id failed"))?;
            }
            RootSecret::KeyFile(k) => {
                if kdf.kind != ROOT_KEY_FILE {
                    return Err(Error::InvalidArgument("root secret kind mismatch".into()));
                }
                ikm.copy_from_slice(k.expose());
            }
        }
        let mut key = [0u8; KEY_LEN];
        hkdf_expand(ikm.as_ref(), Purpose::KeystoreSeal, &[&kdf.salt, &[1]], &mut key)?;
        let mut check = [0u8; CHECK_LEN];
        hkdf_expand(ikm.as_ref(), Purpose::KeystoreSeal, &[&kdf.salt, &[2]], &mut check)?;
        Ok(SealKey {
            kdf,
            check,
            key: SecretKey::from_bytes(&mut key),
        })
    }

    /// A seal key for a new root secret: a passphrase must have [`MIN_PASSPHRASE_CHARS`] characters
    /// and `argon2` must pass [`Argon2Params::check_new`] against `max`.
    pub(super) fn fresh(root: &RootSecret, argon2: Argon2Params, max: Argon2Params) -> Result<SealKey> {
        let argon2 = match root {
            RootSecret::Passphrase(p) => {
                let n = p.chars().count();
                if n < MIN_PASSPHRASE_CHARS {
                    return Err(Error::WeakRootSecret(format!(
                        "a passphrase has at least {MIN_PASSPHRASE_CHARS} characters (NIST SP 800-63B-4), this one \
                         has {n}"
                    )));
                }
                argon2.check_new(max)?;
                argon2.recorded()
            }
            RootSecret::KeyFile(_) => NO_ARGON2,
        };
        Self::derive(
            root,
            KdfHeader {
                kind: root.kind(),
                argon2,
                salt: random_array()?,
            },
        )
    }

    pub(super) fn gcm(&self) -> Result<LessSafeKey> {
        Ok(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.key.expose()).map_err(|_| Error::Crypto("AES-256-GCM key"))?,
        ))
    }
}

impl Drop for SealKey {
    fn drop(&mut self) {
        self.check.zeroize();
    }
}

pub(super) fn encode_header(kdf: &KdfHeader, check: &[u8; CHECK_LEN], nonce: &[u8; GCM_NONCE_LEN]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.raw(&KEYSTORE_MAGIC)
        .u8(KEYSTORE_FORMAT_VERSION)
        .u8(kdf.kind)
        .u32(kdf.argon2.m_cost_kib)
        .u32(kdf.argon2.t_cost)
        .u32(kdf.argon2.p_cost)
        .raw(&kdf.salt)
        .raw(check)
        .raw(nonce);
    let out = e.finish();
    debug_assert_eq!(out.len(), HEADER_LEN);
    out
}

/// A parsed (not yet opened) keystore file.
pub(super) struct RawKeystore<'a> {
    pub(super) header: &'a [u8],
    pub(super) kdf: KdfHeader,
    pub(super) check: [u8; CHECK_LEN],
    pub(super) nonce: [u8; GCM_NONCE_LEN],
    pub(super) sealed: &'a [u8],
}

/// Parses a keystore file; Argon2id parameters above `max` are [`Error::KdfCostTooHigh`], found
/// before anything is derived or allocated for them.
pub(super) fn parse_file<'a>(bytes: &'a [u8], path: &Path, max: Argon2Params) -> Result<RawKeystore<'a>> {
    let bad = |detail: String| Error::integrity(format!("keystore {}: {detail}", path.display()));
    let mut d = Decoder::new(bytes, "keystore");
    let magic = d.array::<4>().map_err(|e| bad(e.to_string()))?;
    if magic != KEYSTORE_MAGIC {
        return Err(bad("not a colvault keystore (bad magic)".into()));
    }
    let mut fields = || -> Result<_> {
        let version = d.u8()?;
        let kind = d.u8()?;
        let m = d.u32()?;
        let t = d.u32()?;
        let p = d.u32()?;
        let salt = d.array::<SALT_LEN>()?;
        let check = d.array::<CHECK_LEN>()?;
        let nonce = d.array::<GCM_NONCE_LEN>()?;
        let sealed = d.bytes(MAX_KEYSTORE_BODY_LEN + GCM_TAG_LEN)?;
        Ok((version, kind, Argon2Params::new(m, t, p), salt, check, nonce, sealed))
    };
    let (version, kind, argon2, salt, check, nonce, sealed) = fields().map_err(|e| bad(e.to_string()))?;
    d.finish().map_err(|e| bad(e.to_string()))?;
    if version != KEYSTORE_FORMAT_VERSION {
        return Err(bad(format!("unknown format version {version}")));
    }
    if kind != ROOT_PASSPHRASE && kind != ROOT_KEY_FILE {
        return Err(bad(format!("unknown root secret kind {kind}")));
    }
    if kind == ROOT_PASSPHRASE && !argon2.within(max) {
        return Err(Error::KdfCostTooHigh {
            path: path.to_path_buf(),
            found: argon2.to_string(),
            max: max.to_string(),
        });
    }
    let params_ok = match kind {
        ROOT_PASSPHRASE => argon2.params().is_ok(),
        _ => argon2 == NO_ARGON2,
    };
    if !params_ok {
        return Err(bad(format!("Argon2id parameters out of range: {argon2}")));
    }
    if sealed.len() < GCM_TAG_LEN {
        return Err(bad("sealed body shorter than its tag".into()));
    }
    Ok(RawKeystore {
        header: &bytes[..HEADER_LEN],
        kdf: KdfHeader { kind, argon2, salt },
        check,
        nonce,
        sealed,
    })
}
