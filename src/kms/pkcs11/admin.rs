//! The data plane ([`Kms`]) and the administration plane ([`KmsAdmin`]) of [`Pkcs11Kms`], with the
//! semantics of `LocalKms` (`super::super::local::admin`).

use std::sync::atomic::Ordering;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use super::objects::{self, destroy_keys, find_version, version_label, version_object_id};
use super::record::{
    window_end, KeyRec, Resume, State, Stored, VersionRec, MAX_ALIAS_LEN, MAX_GCM_INVOCATIONS, MAX_GRANTS, MAX_KEYS,
    MAX_VERSIONS,
};
use super::session::lock;
use super::wrap::{unwrap, wrap};
use super::{Pkcs11Kms, PKCS11_KMS_NAME, WRAP_LEASE};
use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::kms::types::{
    unix_secs, CreateKeyRequest, EncryptionContext, KeyId, KeyMetadata, KeyOrigin, Principal, WrappedKey,
};
use crate::kms::{Kms, KmsAdmin};

fn validate_alias(alias: &str) -> Result<()> {
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN || alias.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "an alias is 1 to {MAX_ALIAS_LEN} bytes without control characters: {alias:?}"
        )));
    }
    Ok(())
}

/// The object of a version the record says exists. An object missing from the token was destroyed
/// outside colvault (or lost): its data cannot be decrypted any more.
fn version_object(s: &Session, rec: &KeyRec, version: u32) -> Result<ObjectHandle> {
    rec.live_version(version)?;
    find_version(s, &rec.id, version)?.ok_or_else(|| Error::VersionDestroyed {
        key: rec.id.to_string(),
        version,
    })
}

impl Pkcs11Kms {
    fn check_kms(&self, wrapped: &WrappedKey) -> Result<()> {
        if wrapped.kms() != PKCS11_KMS_NAME {
            return Err(Error::InvalidArgument(format!(
                "the wrapped key belongs to KMS {:?}, not to this KMS {PKCS11_KMS_NAME:?}",
                wrapped.kms()
            )));
        }
        Ok(())
    }

    /// Takes one AES-GCM invocation from this value's lease on (`key`, `version`), if any is left.
    fn take_lease(&self, key: &KeyId, version: u32) -> bool {
        let mut leases = lock(&self.leases);
        match leases.get_mut(&(key.clone(), version)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    /// Reserves [`WRAP_LEASE`] more invocations under (`key`, `version`) in the state record; past
    /// 2^32 in all, [`Error::KeyLimit`] (NIST SP 800-38D section 8.3).
    fn reserve(&self, principal: &Principal, key: &KeyId, version: u32) -> Result<()> {
        self.update(|_, st, _| {
            let rec = st.find_mut(key)?;
            rec.check_usable(principal)?;
            rec.live_version(version)?;
            let v = &mut rec.versions[version as usize - 1];
            if v.wraps_reserved + WRAP_LEASE > MAX_GCM_INVOCATIONS {
                return Err(Error::KeyLimit {
                    what: format!(
                        "version {version} of key {key} has wrapped 2^32 times with random IVs (NIST SP 800-38D \
                         section 8.3)"
                    ),
                });
            }
            v.wraps_reserved += WRAP_LEASE;
            Ok(())
        })?;
        *lock(&self.leases).entry((key.clone(), version)).or_insert(0) += WRAP_LEASE;
        Ok(())
    }

    /// Runs `f` with the primary version's object of a usable `key`, after taking one invocation from
    /// a lease on it (reserving a new lease when none is left).
    fn with_primary<T>(
        &self,
        principal: &Principal,
        key: &KeyId,
        f: impl Fn(&Session, &KeyRec, ObjectHandle) -> Result<T>,
    ) -> Result<T> {
        // A rotation between reserving and using moves the primary; three tries are plenty.
        for _ in 0..3 {
            let primary = {
                let s = lock(&self.session);
                let state = self.load(&s)?;
                let rec = state.find(key)?;
                rec.check_usable(principal)?;
                rec.live_version(rec.primary)?;
                if self.take_lease(key, rec.primary) {
                    let object = version_object(&s, rec, rec.primary)?;
                    return f(&s, rec, object);
                }
                rec.primary
            };
            self.reserve(principal, key, primary)?;
        }
        Err(Error::InvalidKeyState(format!(
            "key {key} was rotated repeatedly while a wrap was reserving its invocations; try again"
        )))
    }

    fn read_state(&self) -> Result<State> {
        let s = lock(&self.session);
        self.load(&s)
    }
}

impl Kms for Pkcs11Kms {
    fn name(&self) -> &str {
        PKCS11_KMS_NAME
    }

    fn rotation_epoch(&self) -> u64 {
        self.rotations.load(Ordering::SeqCst)
    }

    fn generate_data_key(
        &self,
        principal: &Principal,
        key: &KeyId,
        ctx: &EncryptionContext,
    ) -> Result<(SecretKey, WrappedKey)> {
        self.with_primary(principal, key, |s, rec, object| {
            let dek = SecretKey::generate()?;
            let wrapped = wrap(s, object, PKCS11_KMS_NAME, &rec.id, rec.primary, ctx, &dek)?;
            Ok((dek, wrapped))
        })
    }

    fn decrypt_data_key(
        &self,
        principal: &Principal,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretKey> {
        self.check_kms(wrapped)?;
        let s = lock(&self.session);
        let state = self.load(&s)?;
        let rec = state.find(wrapped.key_id())?;
        rec.check_usable(principal)?;
        let object = version_object(&s, rec, wrapped.version())?;
        unwrap(&s, object, wrapped, ctx)
    }

    fn rewrap(&self, principal: &Principal, wrapped: &WrappedKey, ctx: &EncryptionContext) -> Result<WrappedKey> {
        self.check_kms(wrapped)?;
        self.with_primary(principal, wrapped.key_id(), |s, rec, primary| {
            let old = version_object(s, rec, wrapped.version())?;
            let dek = unwrap(s, old, wrapped, ctx)?;
            wrap(s, primary, PKCS11_KMS_NAME, &rec.id, rec.primary, ctx, &dek)
        })
    }
}

impl KmsAdmin for Pkcs11Kms {
    fn create_key(&self, request: CreateKeyRequest) -> Result<KeyMetadata> {
        let CreateKeyRequest {
            origin,
            alias,
            import,
            grants,
        } = request;
        self.update(move |s, st, now| {
            if let Some(a) = &alias {
                validate_alias(a)?;
                if st
                    .keys
                    .iter()
                    .any(|k| k.alias.as_deref() == Some(a) && k.state != Stored::Deleted)
                {
                    return Err(Error::InvalidArgument(format!("alias {a:?} is already in use")));
                }
            }
            if import.is_some() && origin != KeyOrigin::Byok {
                return Err(Error::InvalidArgument(
                    "only a BYOK key can import material; a project default key is generated".into(),
                ));
            }
            if st.keys.len() >= MAX_KEYS {
                return Err(Error::KeyLimit {
                    what: format!("a token holds at most {MAX_KEYS} colvault keys"),
                });
            }
            let mut all_grants: Vec<Principal> = Vec::new();
            if let KeyOrigin::ProjectDefault { project } = &origin {
                all_grants.push(project.clone());
            }
            for g in grants {
                if !all_grants.contains(&g) {
                    all_grants.push(g);
                }
            }
            if all_grants.len() > MAX_GRANTS {
                return Err(Error::KeyLimit {
                    what: format!("a key has at most {MAX_GRANTS} grants"),
                });
            }
            let id = loop {
                let id = KeyId::generate()?;
                if st.keys.iter().all(|k| k.id != id) {
                    break id;
                }
            };
            let (label, object_id) = (version_label(&id, 1), version_object_id(&id, 1));
            destroy_keys(s, &label, &object_id)?; // a leftover of a create that never committed
            match &import {
                Some(m) => objects::import_key(s, &label, &object_id, m)?,
                None => objects::generate_key(s, &label, &object_id)?,
            };
            st.keys.push(KeyRec {
                id,
                alias,
                origin,
                state: Stored::Enabled,
                created: now,
                primary: 1,
                versions: vec![VersionRec {
                    created: now,
                    destroyed: false,
                    wraps_reserved: 0,
                }],
                grants: all_grants,
            });
            Ok(st.keys.last().expect("just pushed").metadata())
        })
    }

    fn describe(&self, key: &KeyId) -> Result<KeyMetadata> {
        Ok(self.read_state()?.find(key)?.metadata())
    }

    fn list(&self) -> Result<Vec<KeyMetadata>> {
        Ok(self.read_state()?.keys.iter().map(KeyRec::metadata).collect())
    }

    fn enable(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(|_, st, _| {
            let rec = st.find_mut(key)?;
            rec.check_administrable("enable")?;
            rec.state = Stored::Enabled;
            Ok(rec.metadata())
        })
    }

    fn disable(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(|_, st, _| {
            let rec = st.find_mut(key)?;
            rec.check_administrable("disable")?;
            rec.state = Stored::Disabled;
            Ok(rec.metadata())
        })
    }

    fn schedule_deletion(&self, key: &KeyId, days: u32) -> Result<KeyMetadata> {
        self.update(|_, st, now| {
            if !(7..=30).contains(&days) {
                return Err(Error::InvalidArgument(format!(
                    "a deletion window is 7 to 30 days, got {days}"
                )));
            }
            let rec = st.find_mut(key)?;
            rec.check_administrable("schedule the deletion of")?;
            let resume = if rec.state == Stored::Enabled {
                Resume::Enabled
            } else {
                Resume::Disabled
            };
            rec.state = Stored::PendingDeletion {
                until: window_end(now, days)?,
                resume,
            };
            Ok(rec.metadata())
        })
    }

    fn cancel_deletion(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(|_, st, _| {
            let rec = st.find_mut(key)?;
            match rec.state {
                Stored::PendingDeletion { resume, .. } => {
                    rec.state = match resume {
                        Resume::Enabled => Stored::Enabled,
                        Resume::Disabled => Stored::Disabled,
                    };
                    Ok(rec.metadata())
                }
                _ => Err(Error::InvalidKeyState(format!(
                    "cannot cancel the deletion of key {}: no deletion is scheduled",
                    rec.id
                ))),
            }
        })
    }

    /// Destroys every version's token object (`C_DestroyObject`) before recording the key as deleted,
    /// so that a failure in between leaves a key pending deletion whose objects are already gone
    /// (calling it again finishes), never a "deleted" key whose material survives.
    fn delete_key(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(|s, st, now| {
            let rec = st.find_mut(key)?;
            match rec.state {
                Stored::PendingDeletion { until, .. } if now >= until => {
                    for (i, v) in rec.versions.iter_mut().enumerate() {
                        let n = i as u32 + 1;
                        destroy_keys(s, &version_label(&rec.id, n), &version_object_id(&rec.id, n))?;
                        v.destroyed = true;
                    }
                    rec.state = Stored::Deleted;
                    Ok(rec.metadata())
                }
                Stored::PendingDeletion { until, .. } => Err(Error::InvalidKeyState(format!(
                    "cannot delete key {} before its deletion window ends ({} s since the epoch)",
                    rec.id,
                    unix_secs(until)
                ))),
                _ => Err(Error::InvalidKeyState(format!(
                    "cannot delete key {}: schedule its deletion first",
                    rec.id
                ))),
            }
        })
    }

    fn rotate(&self, key: &KeyId) -> Result<KeyMetadata> {
        let meta = self.update(|s, st, now| {
            let rec = st.find_mut(key)?;
            if rec.state != Stored::Enabled {
                rec.check_administrable("rotate")?;
                return Err(Error::InvalidKeyState(format!(
                    "cannot rotate key {}: it is disabled (enable it first)",
                    rec.id
                )));
            }
            if rec.versions.len() >= MAX_VERSIONS {
                return Err(Error::KeyLimit {
                    what: format!("a key has at most {MAX_VERSIONS} versions"),
                });
            }
            let n = rec.versions.len() as u32 + 1;
            let (label, object_id) = (version_label(&rec.id, n), version_object_id(&rec.id, n));
            destroy_keys(s, &label, &object_id)?; // a leftover of a rotation that never committed
            objects::generate_key(s, &label, &object_id)?;
            rec.versions.push(VersionRec {
                created: now,
                destroyed: false,
                wraps_reserved: 0,
            });
            rec.primary = n;
            Ok(rec.metadata())
        })?;
        // Caches in front of this value drop their writer KEKs (see `Kms::rotation_epoch`).
        self.rotations.fetch_add(1, Ordering::SeqCst);
        Ok(meta)
    }

    fn destroy_version(&self, key: &KeyId, version: u32) -> Result<KeyMetadata> {
        let delay = self.version_destroy_delay;
        self.update(|s, st, now| {
            let rec = st.find_mut(key)?;
            rec.check_administrable("destroy a version of")?;
            if version == 0 || version as usize > rec.versions.len() {
                return Err(Error::InvalidArgument(format!(
                    "key {} has no version {version}",
                    rec.id
                )));
            }
            if version == rec.primary {
                return Err(Error::InvalidKeyState(format!(
                    "cannot destroy version {version} of key {}: it is the primary version (rotate first)",
                    rec.id
                )));
            }
            // Superseded when version + 1 was created; until the delay has passed, a writer anywhere
            // may still hold a KEK generated under it and wrap new data keys with it.
            let superseded =
                rec.versions.get(version as usize).map(|v| v.created).ok_or_else(|| {
                    Error::InvalidKeyState(format!("version {version} of key {} is the newest", rec.id))
                })?;
            let not_before = superseded.checked_add(delay).unwrap_or(superseded);
            if now < not_before {
                return Err(Error::VersionDestroyTooEarly {
                    key: rec.id.to_string(),
                    version,
                    superseded_unix_secs: unix_secs(superseded),
                    not_before_unix_secs: unix_secs(not_before).max(unix_secs(superseded) + 1),
                });
            }
            destroy_keys(
                s,
                &version_label(&rec.id, version),
                &version_object_id(&rec.id, version),
            )?;
            rec.versions[version as usize - 1].destroyed = true;
            Ok(rec.metadata())
        })
    }

    fn grant(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata> {
        self.update(|_, st, _| {
            let rec = st.find_mut(key)?;
            rec.check_administrable("grant use of")?;
            if !rec.grants.contains(principal) {
                if rec.grants.len() >= MAX_GRANTS {
                    return Err(Error::KeyLimit {
                        what: format!("a key has at most {MAX_GRANTS} grants"),
                    });
                }
                rec.grants.push(principal.clone());
            }
            Ok(rec.metadata())
        })
    }

    fn revoke(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata> {
        self.update(|_, st, _| {
            let rec = st.find_mut(key)?;
            rec.check_administrable("revoke use of")?;
            rec.grants.retain(|g| g != principal);
            Ok(rec.metadata())
        })
    }
}
