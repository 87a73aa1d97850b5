//! The data plane ([`Kms`]) and the administration plane ([`KmsAdmin`]) of [`LocalKms`].

use super::*;

pub(super) fn validate_alias(alias: &str) -> Result<()> {
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN || alias.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "an alias is 1 to {MAX_ALIAS_LEN} bytes without control characters: {alias:?}"
        )));
    }
    Ok(())
}

impl Kms for LocalKms {
    fn name(&self) -> &str {
        &self.name
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
        let entry = AuditEntry::new(AuditAction::GenerateDataKey, Some(key), Some(principal));
        self.use_key(entry, |ks, entry| {
            let rec = ks.find(key)?;
            rec.check_usable(principal)?;
            entry.version = Some(rec.primary);
            let material = rec.material(rec.primary)?;
            let dek = SecretKey::generate()?;
            let wrapped = kms_wrap(material, &self.name, key, rec.primary, ctx, &dek)?;
            Ok((dek, wrapped))
        })
    }

    fn decrypt_data_key(
        &self,
        principal: &Principal,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretKey> {
        let mut entry = AuditEntry::new(AuditAction::DecryptDataKey, Some(wrapped.key_id()), Some(principal));
        entry.version = Some(wrapped.version());
        self.use_key(entry, |ks, _| {
            self.check_kms(wrapped)?;
            let rec = ks.find(wrapped.key_id())?;
            rec.check_usable(principal)?;
            kms_unwrap(rec.material(wrapped.version())?, wrapped, ctx)
        })
    }

    fn rewrap(&self, principal: &Principal, wrapped: &WrappedKey, ctx: &EncryptionContext) -> Result<WrappedKey> {
        let mut entry = AuditEntry::new(AuditAction::Rewrap, Some(wrapped.key_id()), Some(principal));
        entry.detail = format!("from version {}", wrapped.version());
        self.use_key(entry, |ks, entry| {
            self.check_kms(wrapped)?;
            let rec = ks.find(wrapped.key_id())?;
            rec.check_usable(principal)?;
            entry.version = Some(rec.primary);
            let dek = kms_unwrap(rec.material(wrapped.version())?, wrapped, ctx)?;
            kms_wrap(rec.material(rec.primary)?, &self.name, &rec.id, rec.primary, ctx, &dek)
        })
    }
}

impl KmsAdmin for LocalKms {
    /// The keystore's generation, named by its canonical path: the catalog keeps the highest one it
    /// has seen, so an older copy restored at that path is refused in every process.
    fn state_generation(&self) -> Result<Option<(String, u64)>> {
        let ks = self.read(Lock::Shared)?;
        Ok(Some((format!("local:{}", self.canonical.display()), ks.generation)))
    }

    fn create_key(&self, request: CreateKeyRequest) -> Result<KeyMetadata> {
        let CreateKeyRequest {
            origin,
            alias,
            import,
            grants,
        } = request;
        let mut entry = AuditEntry::new(AuditAction::CreateKey, None, None);
        entry.detail = format!(
            "origin {}, {} material{}",
            match &origin {
                KeyOrigin::ProjectDefault { project } => format!("project default of {project}"),
                KeyOrigin::Byok => "BYOK".into(),
            },
            if import.is_some() { "imported" } else { "generated" },
            alias.as_deref().map(|a| format!(", alias {a:?}")).unwrap_or_default()
        );
        self.update(entry, |ks, now, entry| {
            if let Some(a) = &alias {
                validate_alias(a)?;
                if ks
                    .keys
                    .iter()
                    .any(|k| k.alias.as_deref() == Some(a) && k.state != StoredState::Deleted)
                {
                    return Err(Error::InvalidArgument(format!("alias {a:?} is already in use")));
                }
            }
            if import.is_some() && origin != KeyOrigin::Byok {
                return Err(Error::InvalidArgument(
                    "only a BYOK key can import material; a project default key is generated".into(),
                ));
            }
            if ks.keys.len() >= MAX_KEYS {
                return Err(Error::KeyLimit {
                    what: format!("a keystore holds at most {MAX_KEYS} keys"),
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
                if ks.keys.iter().all(|k| k.id != id) {
                    break id;
                }
            };
            entry.key = Some(id.clone());
            entry.version = Some(1);
            let material = match import {
                Some(m) => Box::new(m),
                None => Box::new(SecretKey::generate()?),
            };
            ks.keys.push(KeyRecord {
                id,
                alias,
                origin,
                state: StoredState::Enabled,
                created: now,
                primary: 1,
                versions: vec![VersionRecord {
                    created: now,
                    material: Some(material),
                }],
                grants: all_grants,
            });
            Ok(ks.keys.last().expect("just pushed").metadata())
        })
    }

    fn describe(&self, key: &KeyId) -> Result<KeyMetadata> {
        Ok(self.read(Lock::Shared)?.find(key)?.metadata())
    }

    fn list(&self) -> Result<Vec<KeyMetadata>> {
        Ok(self.read(Lock::Shared)?.keys.iter().map(KeyRecord::metadata).collect())
    }

    fn enable(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(AuditEntry::new(AuditAction::Enable, Some(key), None), |ks, _, _| {
            let rec = ks.find_mut(key)?;
            rec.check_administrable("enable")?;
            rec.state = StoredState::Enabled;
            Ok(rec.metadata())
        })
    }

    fn disable(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(AuditEntry::new(AuditAction::Disable, Some(key), None), |ks, _, _| {
            let rec = ks.find_mut(key)?;
            rec.check_administrable("disable")?;
            rec.state = StoredState::Disabled;
            Ok(rec.metadata())
        })
    }

    fn schedule_deletion(&self, key: &KeyId, days: u32) -> Result<KeyMetadata> {
        let mut entry = AuditEntry::new(AuditAction::ScheduleDeletion, Some(key), None);
        entry.detail = format!("{days} days");
        self.update(entry, |ks, now, entry| {
            if !(7..=30).contains(&days) {
                return Err(Error::InvalidArgument(format!(
                    "a deletion window is 7 to 30 days, got {days}"
                )));
            }
            let rec = ks.find_mut(key)?;
            rec.check_administrable("schedule the deletion of")?;
            let resume = if rec.state == StoredState::Enabled {
                Resume::Enabled
            } else {
                Resume::Disabled
            };
            let until = now
                .checked_add(Duration::from_secs(u64::from(days) * SECS_PER_DAY))
                .ok_or_else(|| Error::InvalidArgument("the clock is too far in the future".into()))?;
            entry.detail = format!("{days} days, until {} s since the epoch", unix_secs(until));
            rec.state = StoredState::PendingDeletion { until, resume };
            Ok(rec.metadata())
        })
    }

    fn cancel_deletion(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(
            AuditEntry::new(AuditAction::CancelDeletion, Some(key), None),
            |ks, _, _| {
                let rec = ks.find_mut(key)?;
                match rec.state {
                    StoredState::PendingDeletion { resume, .. } => {
                        rec.state = match resume {
                            Resume::Enabled => StoredState::Enabled,
                            Resume::Disabled => StoredState::Disabled,
                        };
                        Ok(rec.metadata())
                    }
                    _ => Err(Error::InvalidKeyState(format!(
                        "cannot cancel the deletion of key {}: no deletion is scheduled",
                        rec.id
                    ))),
                }
            },
        )
    }

    fn delete_key(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(
            AuditEntry::new(AuditAction::DeleteKey, Some(key), None),
            |ks, now, _| {
                let rec = ks.find_mut(key)?;
                match rec.state {
                    StoredState::PendingDeletion { until, .. } if now >= until => {
                        for v in &mut rec.versions {
                            v.material = None; // dropping the key zeroizes it
                        }
                        rec.state = StoredState::Deleted;
                        Ok(rec.metadata())
                    }
                    StoredState::PendingDeletion { until, .. } => Err(Error::InvalidKeyState(format!(
                        "cannot delete key {} before its deletion window ends ({} s since the epoch)",
                        rec.id,
                        unix_secs(until)
                    ))),
                    _ => Err(Error::InvalidKeyState(format!(
                        "cannot delete key {}: schedule its deletion first",
                        rec.id
                    ))),
                }
            },
        )
    }

    fn rotate(&self, key: &KeyId) -> Result<KeyMetadata> {
        let meta = self.update(
            AuditEntry::new(AuditAction::Rotate, Some(key), None),
            |ks, now, entry| {
                let rec = ks.find_mut(key)?;
                if rec.state != StoredState::Enabled {
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
                rec.versions.push(VersionRecord {
                    created: now,
                    material: Some(Box::new(SecretKey::generate()?)),
                });
                rec.primary = rec.versions.len() as u32;
                entry.version = Some(rec.primary);
                Ok(rec.metadata())
            },
        )?;
        // Caches in front of this value drop their writer KEKs (see `Kms::rotation_epoch`).
        self.rotations.fetch_add(1, Ordering::SeqCst);
        Ok(meta)
    }

    fn destroy_version(&self, key: &KeyId, version: u32) -> Result<KeyMetadata> {
        let mut entry = AuditEntry::new(AuditAction::DestroyVersion, Some(key), None);
        entry.version = Some(version).filter(|v| *v != 0);
        let delay = self.version_destroy_delay;
        self.update(entry, |ks, now, _| {
            let rec = ks.find_mut(key)?;
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
            // Version v was superseded when version v + 1 was created (a rotation makes its new version
            // primary). Until the delay has passed since then, a writer anywhere may still hold a KEK
            // generated under v in its cache and wrap new data keys with it.
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
            rec.versions[version as usize - 1].material = None;
            Ok(rec.metadata())
        })
    }

    fn grant(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata> {
        self.update(
            AuditEntry::new(AuditAction::Grant, Some(key), Some(principal)),
            |ks, _, _| {
                let rec = ks.find_mut(key)?;
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
            },
        )
    }

    fn revoke(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata> {
        self.update(
            AuditEntry::new(AuditAction::Revoke, Some(key), Some(principal)),
            |ks, _, _| {
                let rec = ks.find_mut(key)?;
                rec.check_administrable("revoke use of")?;
                rec.grants.retain(|g| g != principal);
                Ok(rec.metadata())
            },
        )
    }
}
