//! What colvault needs to know about an AWS KMS key before using it: its state, the colvault
//! principals granted, its rotations (colvault's version), fetched with `DescribeKey`,
//! `ListGrants` and `ListKeyRotations` at once (three requests in parallel: one round-trip time).
//!
//! AWS KMS itself refuses a disabled or pending-deletion key in `GenerateDataKey`, `Decrypt` and
//! `ReEncrypt`; emulators (moto) do not, so colvault checks the state it was told, as it checks its
//! grants, whatever the service.

use std::time::{Duration, SystemTime};

use aws_sdk_kms::primitives::DateTime;
use aws_sdk_kms::types::KeyState as AwsState;

use super::context::PRINCIPAL;
use super::errors::{map, Call};
use super::Service;
use crate::error::{Error, Result};
use crate::kms::types::{KeyId, KeyState, KeyVersionInfo, KeyVersionState, Principal};

/// One grant of a key to a colvault principal.
#[derive(Clone, Debug)]
pub(super) struct GrantEntry {
    pub principal: Principal,
    pub grant_id: String,
}

/// What the service said about a key.
#[derive(Clone, Debug)]
pub(super) struct KeyView {
    pub arn: String,
    /// The state in colvault's terms (states colvault has no name for count as `Disabled`).
    pub state: KeyState,
    /// The AWS state, for messages.
    pub aws_state: String,
    pub created: SystemTime,
    /// Creation and rotation times, oldest first: version `n` is `versions[n - 1]`.
    pub versions: Vec<SystemTime>,
    pub grants: Vec<GrantEntry>,
}

impl KeyView {
    /// The version new wraps are labelled with: 1 + the rotations listed.
    pub fn primary_version(&self) -> u32 {
        u32::try_from(self.versions.len()).unwrap_or(u32::MAX).max(1)
    }

    pub fn version_infos(&self) -> Vec<KeyVersionInfo> {
        self.versions
            .iter()
            .enumerate()
            .map(|(i, &created)| KeyVersionInfo {
                version: i as u32 + 1,
                state: KeyVersionState::Enabled,
                created,
            })
            .collect()
    }

    pub fn granted(&self, principal: &Principal) -> bool {
        self.grants.iter().any(|g| &g.principal == principal)
    }

    /// The principals granted, each once, in grant order.
    pub fn principals(&self) -> Vec<Principal> {
        let mut out: Vec<Principal> = Vec::new();
        for g in &self.grants {
            if !out.contains(&g.principal) {
                out.push(g.principal.clone());
            }
        }
        out
    }

    /// Refuses a key that cannot be used now, with the typed error of its state.
    pub fn check_usable(&self, key: &KeyId) -> Result<()> {
        let key = key.to_string();
        match self.state {
            KeyState::Enabled => Ok(()),
            KeyState::PendingDeletion { until } => Err(Error::KeyPendingDeletion {
                key,
                until_unix_secs: crate::kms::types::unix_secs(until),
            }),
            KeyState::Deleted => Err(Error::KeyDeleted { key }),
            KeyState::Disabled if self.aws_state == "Disabled" => Err(Error::KeyDisabled { key }),
            KeyState::Disabled => Err(Error::InvalidKeyState(format!(
                "key {key} is in AWS KMS state {} and cannot be used now",
                self.aws_state
            ))),
        }
    }

    /// Refuses a principal without a grant.
    pub fn check_granted(&self, key: &KeyId, principal: &Principal) -> Result<()> {
        if self.granted(principal) {
            Ok(())
        } else {
            Err(Error::AccessDenied {
                principal: principal.to_string(),
                key: key.to_string(),
            })
        }
    }
}

pub(super) fn system_time(t: &DateTime) -> SystemTime {
    let secs = t.secs();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, t.subsec_nanos())
    } else {
        SystemTime::UNIX_EPOCH
    }
}

fn state_of(s: Option<&AwsState>, deletion: Option<&DateTime>) -> (KeyState, String) {
    let name = s.map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into());
    let state = match s {
        Some(AwsState::Enabled) => KeyState::Enabled,
        Some(AwsState::PendingDeletion) | Some(AwsState::PendingReplicaDeletion) => KeyState::PendingDeletion {
            until: deletion.map(system_time).unwrap_or_else(SystemTime::now),
        },
        _ => KeyState::Disabled,
    };
    (state, name)
}

/// Fetches the view of `key` (three requests in parallel).
pub(super) fn fetch(service: &Service, key: &KeyId) -> Result<KeyView> {
    let client = service.client();
    let id = key.to_string();
    let result = service.run(async move {
        let describe = client.describe_key().key_id(&id).send();
        let grants = async {
            let mut all = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let out = client
                    .list_grants()
                    .key_id(&id)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(|e| map(e, Call::admin("ListGrants", &id)))?;
                all.extend(out.grants().iter().cloned());
                match out.next_marker() {
                    Some(m) if out.truncated() => marker = Some(m.to_string()),
                    _ => break,
                }
            }
            Ok::<_, Error>(all)
        };
        let rotations = async {
            let mut all = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let out = client
                    .list_key_rotations()
                    .key_id(&id)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(|e| map(e, Call::admin("ListKeyRotations", &id)))?;
                all.extend(
                    out.rotations()
                        .iter()
                        .filter_map(|r| r.rotation_date().map(system_time)),
                );
                match out.next_marker() {
                    Some(m) if out.truncated() => marker = Some(m.to_string()),
                    _ => break,
                }
            }
            Ok::<_, Error>(all)
        };
        let describe = async { describe.await.map_err(|e| map(e, Call::admin("DescribeKey", &id))) };
        tokio::try_join!(describe, grants, rotations)
    })?;
    let (described, grants, mut rotations) = result?;
    let meta = described.key_metadata().ok_or_else(|| Error::KmsService {
        kms: super::NAME.into(),
        operation: format!("DescribeKey on key {key}"),
        detail: "the answer holds no key metadata".into(),
        retriable: false,
    })?;
    let (state, aws_state) = state_of(meta.key_state(), meta.deletion_date());
    let created = meta.creation_date().map(system_time).unwrap_or(SystemTime::UNIX_EPOCH);
    rotations.sort();
    let mut versions = vec![created];
    versions.extend(rotations);
    let grants = grants
        .iter()
        .filter_map(|g| {
            let p = g.constraints()?.encryption_context_subset()?.get(PRINCIPAL)?;
            Some(GrantEntry {
                principal: Principal::new(p.as_str()).ok()?,
                grant_id: g.grant_id()?.to_string(),
            })
        })
        .collect();
    Ok(KeyView {
        arn: meta.arn().unwrap_or_default().to_string(),
        state,
        aws_state,
        created,
        versions,
        grants,
    })
}
