//! The sealed state record: every CMK's state, versions, grants, alias and origin, kept on the token in
//! one private `CKO_DATA` object and sealed under the token-resident metadata key.
//!
//! An update replaces the object (creates the new record, then destroys the old one), because tokens
//! need not let a data object's `CKA_VALUE` change (SoftHSM2 refuses it); a reader that finds two
//! records (an update interrupted in between) takes the newer generation.
//!
//! # Layout (all integers big-endian, [`crate::codec`])
//!
//! ```text
//! value = "CVP1" | u8 format version = 1 | IV (12) | AES-256-GCM(metadata key, IV, AAD, body) || tag (16)
//! AAD   = "CVP1" | u8 format version = 1 | str "colvault v1 pkcs11 state record"
//! body  = u8 body version = 1 | u64 generation | u64 seals under the metadata key
//!       | u32 key count, per key:
//!   str id | u8 has_alias [str alias] | u8 origin (1 project default + str project, 2 BYOK)
//!   | u8 state (1 enabled, 2 disabled, 3 pending deletion + u64 secs + u32 nanos + u8 resume
//!     (1 enabled, 2 disabled), 4 deleted)
//!   | u64 secs + u32 nanos created | u32 primary version
//!   | u32 version count, per version: u64 secs + u32 nanos created | u8 (1 present, 2 destroyed)
//!     | u64 wraps reserved
//!   | u32 grant count, per grant: str principal
//! ```
//!
//! The record holds no key material: the versions' material lives in their own token objects
//! (`super::objects`). It is sealed so that its contents cannot be changed without the metadata key,
//! which never leaves the token: see `SECURITY.md` for what an attacker who holds only the token's
//! storage files can and cannot do with it.

use std::time::{Duration, SystemTime};

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use super::wrap::{gcm_open, gcm_seal, GCM_IV_LEN, GCM_TAG_LEN};
use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};
use crate::kms::types::{
    decode_time, encode_time, unix_secs, KeyId, KeyMetadata, KeyOrigin, KeyState, KeyVersionInfo, KeyVersionState,
    Principal,
};

/// The first bytes of the state record's value.
pub const STATE_MAGIC: [u8; 4] = *b"CVP1";
/// The format version of the state record's value.
pub const STATE_FORMAT_VERSION: u8 = 1;
const BODY_VERSION: u8 = 1;
const AAD_LABEL: &str = "colvault v1 pkcs11 state record";
/// The largest state record accepted.
pub const MAX_STATE_LEN: usize = 16 << 20;
/// The most keys one token holds for colvault.
pub const MAX_KEYS: usize = 100_000;
/// The most versions of one key.
pub const MAX_VERSIONS: usize = 10_000;
/// The most grants of one key.
pub const MAX_GRANTS: usize = 10_000;
/// The longest alias.
pub const MAX_ALIAS_LEN: usize = 256;
/// The most AES-GCM invocations with random IVs under one key (NIST SP 800-38D section 8.3).
pub const MAX_GCM_INVOCATIONS: u64 = 1 << 32;

/// The state a key returns to when its deletion is cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resume {
    Enabled,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    Enabled,
    Disabled,
    PendingDeletion { until: SystemTime, resume: Resume },
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct VersionRec {
    pub(super) created: SystemTime,
    pub(super) destroyed: bool,
    /// AES-GCM invocations reserved under this version (in leases; see `super::wrap`).
    pub(super) wraps_reserved: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeyRec {
    pub(super) id: KeyId,
    pub(super) alias: Option<String>,
    pub(super) origin: KeyOrigin,
    pub(super) state: Stored,
    pub(super) created: SystemTime,
    pub(super) primary: u32,
    /// Version `n` is at index `n - 1`.
    pub(super) versions: Vec<VersionRec>,
    pub(super) grants: Vec<Principal>,
}

impl KeyRec {
    pub(super) fn metadata(&self) -> KeyMetadata {
        KeyMetadata {
            id: self.id.clone(),
            alias: self.alias.clone(),
            origin: self.origin.clone(),
            state: match self.state {
                Stored::Enabled => KeyState::Enabled,
                Stored::Disabled => KeyState::Disabled,
                Stored::PendingDeletion { until, .. } => KeyState::PendingDeletion { until },
                Stored::Deleted => KeyState::Deleted,
            },
            primary_version: self.primary,
            versions: self
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| KeyVersionInfo {
                    version: i as u32 + 1,
                    state: if v.destroyed {
                        KeyVersionState::Destroyed
                    } else {
                        KeyVersionState::Enabled
                    },
                    created: v.created,
                })
                .collect(),
            grants: self.grants.clone(),
            created: self.created,
        }
    }

    /// The data-plane checks, in the order `LocalKms` makes them: grant, then state.
    pub(super) fn check_usable(&self, principal: &Principal) -> Result<()> {
        if !self.grants.contains(principal) {
            return Err(Error::AccessDenied {
                principal: principal.to_string(),
                key: self.id.to_string(),
            });
        }
        let key = self.id.to_string();
        match self.state {
            Stored::Enabled => Ok(()),
            Stored::Disabled => Err(Error::KeyDisabled { key }),
            Stored::PendingDeletion { until, .. } => Err(Error::KeyPendingDeletion {
                key,
                until_unix_secs: unix_secs(until),
            }),
            Stored::Deleted => Err(Error::KeyDeleted { key }),
        }
    }

    /// Version `version`, present: a version that never existed is [`Error::Integrity`] (a wrapped
    /// key naming it was forged or belongs elsewhere), a destroyed one [`Error::VersionDestroyed`].
    pub(super) fn live_version(&self, version: u32) -> Result<&VersionRec> {
        let v = version
            .checked_sub(1)
            .and_then(|i| self.versions.get(i as usize))
            .ok_or_else(|| {
                Error::integrity(format!(
                    "wrapped key (it names version {version} of key {}, which never existed)",
                    self.id
                ))
            })?;
        if v.destroyed {
            return Err(Error::VersionDestroyed {
                key: self.id.to_string(),
                version,
            });
        }
        Ok(v)
    }

    /// Refuses administration of a key pending deletion or deleted.
    pub(super) fn check_administrable(&self, what: &str) -> Result<()> {
        match self.state {
            Stored::Enabled | Stored::Disabled => Ok(()),
            Stored::PendingDeletion { .. } => Err(Error::InvalidKeyState(format!(
                "cannot {what} key {}: it is pending deletion (cancel the deletion first)",
                self.id
            ))),
            Stored::Deleted => Err(Error::InvalidKeyState(format!(
                "cannot {what} key {}: it was deleted",
                self.id
            ))),
        }
    }
}

/// The opened state record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct State {
    pub(super) generation: u64,
    pub(super) seals: u64,
    pub(super) keys: Vec<KeyRec>,
}

impl State {
    pub(super) fn find(&self, id: &KeyId) -> Result<&KeyRec> {
        self.keys
            .iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::UnknownKey { key: id.to_string() })
    }

    pub(super) fn find_mut(&mut self, id: &KeyId) -> Result<&mut KeyRec> {
        self.keys
            .iter_mut()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::UnknownKey { key: id.to_string() })
    }

    /// The body (see the module documentation).
    pub(super) fn encode(&self) -> Result<Vec<u8>> {
        let mut e = Encoder::new();
        e.u8(BODY_VERSION).u64(self.generation).u64(self.seals);
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
                Stored::Enabled => e.u8(1),
                Stored::Disabled => e.u8(2),
                Stored::PendingDeletion { until, resume } => {
                    e.u8(3);
                    encode_time(&mut e, until)?;
                    e.u8(match resume {
                        Resume::Enabled => 1,
                        Resume::Disabled => 2,
                    })
                }
                Stored::Deleted => e.u8(4),
            };
            encode_time(&mut e, k.created)?;
            e.u32(k.primary).u32(k.versions.len() as u32);
            for v in &k.versions {
                encode_time(&mut e, v.created)?;
                e.u8(if v.destroyed { 2 } else { 1 }).u64(v.wraps_reserved);
            }
            e.u32(k.grants.len() as u32);
            for g in &k.grants {
                e.str(g.as_str());
            }
        }
        Ok(e.finish())
    }

    /// Decodes [`State::encode`], checking every bound and invariant ([`Error::Malformed`]).
    pub(super) fn decode(body: &[u8]) -> Result<State> {
        const WHAT: &str = "PKCS#11 state record";
        let mut d = Decoder::new(body, WHAT);
        let v = d.u8()?;
        if v != BODY_VERSION {
            return Err(Error::malformed(WHAT, format!("unknown body version {v}")));
        }
        let generation = d.u64()?;
        let seals = d.u64()?;
        let n = d.count(MAX_KEYS, 40)?;
        let mut keys: Vec<KeyRec> = Vec::with_capacity(n);
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
                1 => Stored::Enabled,
                2 => Stored::Disabled,
                3 => {
                    let until = decode_time(&mut d, WHAT)?;
                    let resume = match d.u8()? {
                        1 => Resume::Enabled,
                        2 => Resume::Disabled,
                        b => return Err(Error::malformed(WHAT, format!("resume state {b}"))),
                    };
                    Stored::PendingDeletion { until, resume }
                }
                4 => Stored::Deleted,
                b => return Err(Error::malformed(WHAT, format!("state {b}"))),
            };
            let created = decode_time(&mut d, WHAT)?;
            let primary = d.u32()?;
            let nv = d.count(MAX_VERSIONS, 21)?;
            let mut versions = Vec::with_capacity(nv);
            for _ in 0..nv {
                let created = decode_time(&mut d, WHAT)?;
                let destroyed = match d.u8()? {
                    1 => false,
                    2 => true,
                    b => return Err(Error::malformed(WHAT, format!("version flag {b}"))),
                };
                let wraps_reserved = d.u64()?;
                versions.push(VersionRec {
                    created,
                    destroyed,
                    wraps_reserved,
                });
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
            let deleted = state == Stored::Deleted;
            let primary_ok = primary >= 1 && (primary as usize) <= versions.len();
            if !primary_ok
                || (!deleted && versions[primary as usize - 1].destroyed)
                || (deleted && versions.iter().any(|v| !v.destroyed))
            {
                return Err(Error::malformed(WHAT, format!("key {id}: inconsistent versions")));
            }
            keys.push(KeyRec {
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
        Ok(State {
            generation,
            seals,
            keys,
        })
    }
}

fn aad() -> Vec<u8> {
    let mut e = Encoder::new();
    e.raw(&STATE_MAGIC).u8(STATE_FORMAT_VERSION).str(AAD_LABEL);
    e.finish()
}

/// Seals `state` under the metadata key: the record's value.
pub(super) fn seal(session: &Session, metadata_key: ObjectHandle, state: &State) -> Result<Vec<u8>> {
    let body = zeroize::Zeroizing::new(state.encode()?);
    let (iv, sealed) = gcm_seal(session, metadata_key, &aad(), &body)?;
    let mut e = Encoder::new();
    e.raw(&STATE_MAGIC).u8(STATE_FORMAT_VERSION).raw(&iv).raw(&sealed);
    let out = e.finish();
    if out.len() > MAX_STATE_LEN {
        return Err(Error::KeyLimit {
            what: format!("the PKCS#11 state record would exceed {MAX_STATE_LEN} bytes"),
        });
    }
    Ok(out)
}

/// Opens a record's value: [`Error::Integrity`] for anything the metadata key did not seal.
pub(super) fn open(session: &Session, metadata_key: ObjectHandle, value: &[u8]) -> Result<State> {
    const WHAT: &str = "PKCS#11 state record (altered, or sealed under another token's metadata key)";
    let header = STATE_MAGIC.len() + 1 + GCM_IV_LEN;
    if value.len() < header + GCM_TAG_LEN || value.len() > MAX_STATE_LEN {
        return Err(Error::integrity(WHAT));
    }
    if value[..4] != STATE_MAGIC || value[4] != STATE_FORMAT_VERSION {
        return Err(Error::integrity(WHAT));
    }
    let mut iv = [0u8; GCM_IV_LEN];
    iv.copy_from_slice(&value[5..header]);
    let body = gcm_open(session, metadata_key, &iv, &aad(), &value[header..], WHAT)?;
    State::decode(&body)
}

/// `now + days` (a deletion window), or [`Error::InvalidArgument`] past the end of time.
pub(super) fn window_end(now: SystemTime, days: u32) -> Result<SystemTime> {
    now.checked_add(Duration::from_secs(u64::from(days) * 86_400))
        .ok_or_else(|| Error::InvalidArgument("the clock is too far in the future".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn sample() -> State {
        State {
            generation: 7,
            seals: 9,
            keys: vec![
                KeyRec {
                    id: KeyId::new("cmk-a").unwrap(),
                    alias: Some("a".into()),
                    origin: KeyOrigin::ProjectDefault {
                        project: Principal::new("p1").unwrap(),
                    },
                    state: Stored::PendingDeletion {
                        until: t(5_000),
                        resume: Resume::Disabled,
                    },
                    created: t(1_000),
                    primary: 2,
                    versions: vec![
                        VersionRec {
                            created: t(1_000),
                            destroyed: true,
                            wraps_reserved: 1024,
                        },
                        VersionRec {
                            created: t(2_000),
                            destroyed: false,
                            wraps_reserved: 0,
                        },
                    ],
                    grants: vec![Principal::new("p1").unwrap(), Principal::new("p2").unwrap()],
                },
                KeyRec {
                    id: KeyId::new("cmk-b").unwrap(),
                    alias: None,
                    origin: KeyOrigin::Byok,
                    state: Stored::Deleted,
                    created: t(3_000),
                    primary: 1,
                    versions: vec![VersionRec {
                        created: t(3_000),
                        destroyed: true,
                        wraps_reserved: 2048,
                    }],
                    grants: vec![],
                },
            ],
        }
    }

    #[test]
    fn body_round_trips_and_refuses_truncation() {
        let s = sample();
        let b = s.encode().unwrap();
        assert_eq!(State::decode(&b).unwrap(), s);
        for n in 0..b.len() {
            assert!(State::decode(&b[..n]).is_err(), "truncated to {n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(State::decode(&long), Err(Error::Malformed { .. })));
    }

    #[test]
    fn inconsistent_versions_are_refused() {
        let mut s = sample();
        s.keys[1].versions[0].destroyed = false; // a deleted key with material
        assert!(State::decode(&s.encode().unwrap()).is_err());
        let mut s = sample();
        s.keys[0].primary = 1; // a destroyed primary
        assert!(State::decode(&s.encode().unwrap()).is_err());
        let mut s = sample();
        s.keys[0].primary = 3; // a primary that does not exist
        assert!(State::decode(&s.encode().unwrap()).is_err());
    }

    #[test]
    fn usable_checks_grant_then_state() {
        let s = sample();
        let k = &s.keys[0];
        assert!(matches!(
            k.check_usable(&Principal::new("p3").unwrap()),
            Err(Error::AccessDenied { .. })
        ));
        assert!(matches!(
            k.check_usable(&Principal::new("p1").unwrap()),
            Err(Error::KeyPendingDeletion {
                until_unix_secs: 5_000,
                ..
            })
        ));
        assert!(matches!(
            k.live_version(1),
            Err(Error::VersionDestroyed { version: 1, .. })
        ));
        assert!(k.live_version(2).is_ok());
        assert!(matches!(k.live_version(3), Err(Error::Integrity { .. })));
        assert!(matches!(k.live_version(0), Err(Error::Integrity { .. })));
    }
}
