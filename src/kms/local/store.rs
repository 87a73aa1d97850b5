//! The opened keystore: keys, versions, states and grants, and the encoding of the sealed body.

use super::*;

/// The state a key returns to when its deletion is cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resume {
    Enabled,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StoredState {
    Enabled,
    Disabled,
    PendingDeletion { until: SystemTime, resume: Resume },
    Deleted,
}

impl StoredState {
    pub(super) fn public(self) -> KeyState {
        match self {
            StoredState::Enabled => KeyState::Enabled,
            StoredState::Disabled => KeyState::Disabled,
            StoredState::PendingDeletion { until, .. } => KeyState::PendingDeletion { until },
            StoredState::Deleted => KeyState::Deleted,
        }
    }
}

pub(super) struct VersionRecord {
    pub(super) created: SystemTime,
    /// `None` once destroyed. Boxed so that growing the vector of versions moves pointers, not
    /// material.
    pub(super) material: Option<Box<SecretKey>>,
}

pub(super) struct KeyRecord {
    pub(super) id: KeyId,
    pub(super) alias: Option<String>,
    pub(super) origin: KeyOrigin,
    pub(super) state: StoredState,
    pub(super) created: SystemTime,
    pub(super) primary: u32,
    /// Version `n` is at index `n - 1`.
    pub(super) versions: Vec<VersionRecord>,
    pub(super) grants: Vec<Principal>,
}

impl KeyRecord {
    pub(super) fn metadata(&self) -> KeyMetadata {
        KeyMetadata {
            id: self.id.clone(),
            alias: self.alias.clone(),
            origin: self.origin.clone(),
            state: self.state.public(),
            primary_version: self.primary,
            versions: self
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| KeyVersionInfo {
                    version: i as u32 + 1,
                    state: if v.material.is_some() {
                        KeyVersionState::Enabled
                    } else {
                        KeyVersionState::Destroyed
                    },
                    created: v.created,
                })
                .collect(),
            grants: self.grants.clone(),
            created: self.created,
        }
    }

    /// The data-plane checks, in order: grant, then state.
    pub(super) fn check_usable(&self, principal: &Principal) -> Result<()> {
        if !self.grants.contains(principal) {
            return Err(Error::AccessDenied {
                principal: principal.to_string(),
                key: self.id.to_string(),
            });
        }
        let key = self.id.to_string();
        match self.state {
            StoredState::Enabled => Ok(()),
            StoredState::Disabled => Err(Error::KeyDisabled { key }),
            StoredState::PendingDeletion { until, .. } => Err(Error::KeyPendingDeletion {
                key,
                until_unix_secs: unix_secs(until),
            }),
            StoredState::Deleted => Err(Error::KeyDeleted { key }),
        }
    }

    pub(super) fn material(&self, version: u32) -> Result<&SecretKey> {
        let v = version
            .checked_sub(1)
            .and_then(|i| self.versions.get(i as usize))
            .ok_or_else(|| {
                Error::integrity(format!(
                    "wrapped key (it names version {version} of key {}, which never existed)",
                    self.id
                ))
            })?;
        v.material.as_deref().ok_or_else(|| Error::VersionDestroyed {
            key: self.id.to_string(),
            version,
        })
    }

    /// Refuses administration of a key pending deletion or deleted.
    pub(super) fn check_administrable(&self, what: &str) -> Result<()> {
        match self.state {
            StoredState::Enabled | StoredState::Disabled => Ok(()),
            StoredState::PendingDeletion { .. } => Err(Error::InvalidKeyState(format!(
                "cannot {what} key {}: it is pending deletion (cancel the deletion first)",
                self.id
            ))),
            StoredState::Deleted => Err(Error::InvalidKeyState(format!(
                "cannot {what} key {}: it was deleted",
                self.id
            ))),
        }
    }
}

/// The opened keystore.
pub(super) struct Keystore {
    pub(super) generation: u64,
    pub(super) seals: u64,
    pub(super) audit_key: SecretKey,
    pub(super) audit_head: AuditHead,
    pub(super) keys: Vec<KeyRecord>,
}

impl Keystore {
    pub(super) fn find(&self, id: &KeyId) -> Result<&KeyRecord> {
        self.keys
            .iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::UnknownKey { key: id.to_string() })
    }

    pub(super) fn find_mut(&mut self, id: &KeyId) -> Result<&mut KeyRecord> {
        self.keys
            .iter_mut()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::UnknownKey { key: id.to_string() })
    }

    /// The plaintext body:
    ///
    /// ```text
    /// u8 body version = 1 | u64 generation | u64 seals under this root | audit key (32)
    /// | u64 audit head seq | audit head mac (32) | u32 key count, then per key:
    ///   str id | u8 has_alias [str alias] | u8 origin (1 project default + str project, 2 BYOK)
    ///   | u8 state (1 enabled, 2 disabled, 3 pending deletion + u64 secs + u32 nanos + u8 resume
    ///     state (1 enabled, 2 disabled), 4 deleted)
    ///   | u64 secs + u32 nanos created | u32 primary version
    ///   | u32 version count, per version: u64 secs + u32 nanos created
    ///     | u8 (1 material follows (32 bytes), 2 destroyed)
    ///   | u32 grant count, per grant: str principal
    /// ```
    ///
    /// Encoded in two passes so that key material is only ever written into one zeroizing buffer
    /// allocated to its final size (plus room for the GCM tag): no reallocation leaves copies behind.
    pub(super) fn encode_body(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut e = Encoder::new();
        let mut secrets: Vec<(usize, &SecretKey)> = Vec::new();
        e.u8(BODY_FORMAT_VERSION).u64(self.generation).u64(self.seals);
        secrets.push((e.as_slice().len(), &self.audit_key));
        e.raw(&[0; KEY_LEN]);
        e.u64(self.audit_head.seq).raw(&self.audit_head.mac);
        e.u32(self.keys.len() as u32);
        for k in &self.keys {
            e.str(k.id.as_str());
            match &k.alias {
                Some(a) => e.u8(1).str(a),
                None => e.u8(0),
            };
            match &k.origin {
                KeyOrigin::ProjectDefault { project } => e.u8(1).str(project.as_str()),
                KeyOrigin::Byok => e.u8(2),
            };
            match k.state {
                StoredState::Enabled => {
                    e.u8(1);
                }
                StoredState::Disabled => {
                    e.u8(2);
                }
                StoredState::PendingDeletion { until, resume } => {
                    e.u8(3);
                    encode_time(&mut e, until)?;
                    e.u8(match resume {
                        Resume::Enabled => 1,
                        Resume::Disabled => 2,
                    });
                }
                StoredState::Deleted => {
                    e.u8(4);
                }
            }
            encode_time(&mut e, k.created)?;
            e.u32(k.primary);
            e.u32(k.versions.len() as u32);
            for v in &k.versions {
                encode_time(&mut e, v.created)?;
                match &v.material {
                    Some(m) => {
                        e.u8(1);
                        secrets.push((e.as_slice().len(), m));
                        e.raw(&[0; KEY_LEN]);
                    }
                    None => {
                        e.u8(2);
                    }
                }
            }
            e.u32(k.grants.len() as u32);
            for g in &k.grants {
                e.str(g.as_str());
            }
        }
        let skeleton = e.finish();
        let mut out = Zeroizing::new(Vec::with_capacity(skeleton.len() + GCM_TAG_LEN));
        out.extend_from_slice(&skeleton);
        for (at, key) in secrets {
            out[at..at + KEY_LEN].copy_from_slice(key.expose());
        }
        Ok(out)
    }

    pub(super) fn decode_body(body: &[u8]) -> Result<Keystore> {
        const WHAT: &str = "keystore body";
        let mut d = Decoder::new(body, WHAT);
        let v = d.u8()?;
        if v != BODY_FORMAT_VERSION {
            return Err(Error::malformed(WHAT, format!("unknown body version {v}")));
        }
        let generation = d.u64()?;
        let seals = d.u64()?;
        let audit_key = SecretKey::from_slice(d.raw(KEY_LEN)?)?;
        let audit_head = AuditHead {
            seq: d.u64()?,
            mac: d.array()?,
        };
        let n = d.count(MAX_KEYS, 40)?;
        let mut keys: Vec<KeyRecord> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = KeyId::decode(&mut d)?;
            if keys.iter().any(|k| k.id == id) {
                return Err(Error::malformed(WHAT, format!("key {id} appears twice")));
            }
            let alias = match d.u8()? {
                0 => None,
                1 => Some(d.str(MAX_ALIAS_LEN)?.to_owned()),
                b => return Err(Error::malformed(WHAT, format!("alias flag {b}"))),
            };
            let origin = match d.u8()? {
                1 => KeyOrigin::ProjectDefault {
                    project: Principal::decode(&mut d)?,
                },
                2 => KeyOrigin::Byok,
                b => return Err(Error::malformed(WHAT, format!("origin {b}"))),
            };
            let state = match d.u8()? {
                1 => StoredState::Enabled,
                2 => StoredState::Disabled,
                3 => {
                    let until = decode_time(&mut d, WHAT)?;
                    let resume = match d.u8()? {
                        1 => Resume::Enabled,
                        2 => Resume::Disabled,
                        b => return Err(Error::malformed(WHAT, format!("resume state {b}"))),
                    };
                    StoredState::PendingDeletion { until, resume }
                }
                4 => StoredState::Deleted,
                b => return Err(Error::malformed(WHAT, format!("state {b}"))),
            };
            let created = decode_time(&mut d, WHAT)?;
            let primary = d.u32()?;
            let nv = d.count(MAX_VERSIONS, 13)?;
            let mut versions = Vec::with_capacity(nv);
            for _ in 0..nv {
                let created = decode_time(&mut d, WHAT)?;
                let material = match d.u8()? {
                    1 => Some(Box::new(SecretKey::from_slice(d.raw(KEY_LEN)?)?)),
                    2 => None,
                    b => return Err(Error::malformed(WHAT, format!("version flag {b}"))),
                };
                versions.push(VersionRecord { created, material });
            }
            let ng = d.count(MAX_GRANTS, 5)?;
            let mut grants: Vec<Principal> = Vec::with_capacity(ng);
            for _ in 0..ng {
                let p = Principal::decode(&mut d)?;
                if grants.contains(&p) {
                    return Err(Error::malformed(WHAT, format!("grant {p} appears twice")));
                }
                grants.push(p);
            }
            // Invariants: the primary exists; its material exists unless the key was deleted; a deleted
            // key has no material left.
            let primary_ok = primary >= 1 && (primary as usize) <= versions.len();
            let deleted = state == StoredState::Deleted;
            if !primary_ok
                || (!deleted && versions[primary as usize - 1].material.is_none())
                || (deleted && versions.iter().any(|v| v.material.is_some()))
            {
                return Err(Error::malformed(WHAT, format!("key {id}: inconsistent versions")));
            }
            keys.push(KeyRecord {
                id,
                alias,
                origin,
                state,
                created,
                primary,
                versions,
                grants,
            });
        }
        d.finish()?;
        Ok(Keystore {
            generation,
            seals,
            audit_key,
            audit_head,
            keys,
        })
    }
}
