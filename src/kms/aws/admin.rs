//! [`KmsAdmin`] for [`AwsKms`]: `CreateKey`, `DescribeKey`, `ListKeys`, `EnableKey`, `DisableKey`,
//! `ScheduleKeyDeletion`, `CancelKeyDeletion`, `RotateKeyOnDemand`, `CreateGrant`, `RevokeGrant`,
//! `CreateAlias`, with colvault's state rules checked first (an emulator may not enforce them).

use std::sync::atomic::Ordering;

use aws_sdk_kms::types::{GrantConstraints, GrantOperation, KeySpec, KeyUsageType, Tag};

use super::context::PRINCIPAL;
use super::errors::{map, Call};
use super::view::KeyView;
use super::{AwsKms, NAME};
use crate::codec::hex;
use crate::error::{Error, Result};
use crate::kms::types::{CreateKeyRequest, KeyId, KeyMetadata, KeyOrigin, KeyState, Principal};
use crate::kms::KmsAdmin;

const TAG_ORIGIN: &str = "colvault:origin";
const TAG_PROJECT: &str = "colvault:project";
const TAG_RESUME: &str = "colvault:resume";
const ORIGIN_DEFAULT: &str = "project-default";
const ORIGIN_BYOK: &str = "byok";
const ALIAS_PREFIX: &str = "alias/";

fn tag(key: &str, value: &str) -> Result<Tag> {
    Tag::builder()
        .tag_key(key)
        .tag_value(value)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("tag {key}: {e}")))
}

/// Checks a colvault alias for AWS (`alias/` + 1 to 250 of `A-Za-z0-9/_-`, not `aws/...`).
fn validate_alias(a: &str) -> Result<()> {
    let ok = !a.is_empty()
        && a.len() <= 250
        && !a.starts_with("aws/")
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "an AWS KMS alias is 1 to 250 characters of letters, digits, '/', '_' and '-', not starting with aws/: {a:?}"
        )))
    }
}

/// The name of colvault's grant to `principal` (AWS grant names are `[a-zA-Z0-9:/_-]+`).
fn grant_name(principal: &Principal) -> String {
    format!(
        "colvault-{}",
        hex(&blake3::hash(principal.as_str().as_bytes()).as_bytes()[..16])
    )
}

/// The account root of the account owning `arn` (`arn:PARTITION:kms:REGION:ACCOUNT:key/ID`).
fn account_root(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.split(':').collect();
    (parts.len() >= 6 && parts[0] == "arn" && !parts[4].is_empty())
        .then(|| format!("arn:{}:iam::{}:root", parts[1], parts[4]))
}

impl AwsKms {
    fn admin_call<T: Send + 'static, E>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl std::future::Future<
                Output = std::result::Result<
                    T,
                    aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
                >,
            > + Send
            + 'static,
    ) -> Result<T>
    where
        E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.service.run(fut)?.map_err(|e| map(e, Call::admin(op, key)))
    }

    /// The full metadata of `key`: the view, its alias and its origin tags.
    fn metadata(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.forget(key);
        let view = self.fresh_view(key)?;
        let client = self.service.client();
        let id = key.to_string();
        let (aliases, tags) = self.service.run(async move {
            let aliases = async {
                client
                    .list_aliases()
                    .key_id(&id)
                    .send()
                    .await
                    .map_err(|e| map(e, Call::admin("ListAliases", &id)))
            };
            let tags = async {
                client
                    .list_resource_tags()
                    .key_id(&id)
                    .send()
                    .await
                    .map_err(|e| map(e, Call::admin("ListResourceTags", &id)))
            };
            tokio::try_join!(aliases, tags)
        })??;
        let alias = aliases
            .aliases()
            .iter()
            .filter_map(|a| a.alias_name()?.strip_prefix(ALIAS_PREFIX))
            .find(|a| !a.starts_with("aws/"))
            .map(str::to_string);
        let tag_value = |k: &str| {
            tags.tags()
                .iter()
                .find(|t| t.tag_key() == k)
                .map(|t| t.tag_value().to_string())
        };
        let origin = match (tag_value(TAG_ORIGIN).as_deref(), tag_value(TAG_PROJECT)) {
            (Some(ORIGIN_DEFAULT), Some(p)) => KeyOrigin::ProjectDefault {
                project: Principal::new(p)?,
            },
            _ => KeyOrigin::Byok,
        };
        Ok(to_metadata(key, &view, alias, origin))
    }

    /// Refuses unless the fresh state of `key` passes `ok`.
    fn require(&self, key: &KeyId, what: &str, ok: impl Fn(&KeyState) -> bool) -> Result<std::sync::Arc<KeyView>> {
        self.forget(key);
        let v = self.fresh_view(key)?;
        if ok(&v.state) {
            Ok(v)
        } else {
            Err(Error::InvalidKeyState(format!(
                "cannot {what} key {key}: it is {} (AWS KMS state {})",
                state_name(&v.state),
                v.aws_state
            )))
        }
    }

    fn grantee_for(&self, view: &KeyView) -> Result<String> {
        match &self.grantee {
            Some(g) => Ok(g.clone()),
            None => account_root(&view.arn).ok_or_else(|| Error::Config {
                setting: "COLVAULT_AWS_GRANTEE_ARN".into(),
                detail: format!(
                    "not set, and the key ARN {:?} names no account to grant to; set the IAM ARN colvault runs as",
                    view.arn
                ),
            }),
        }
    }

    fn create_grant(&self, key: &KeyId, view: &KeyView, principal: &Principal) -> Result<()> {
        if view.granted(principal) {
            return Ok(());
        }
        let request = self
            .service
            .client()
            .create_grant()
            .key_id(key.as_str())
            .grantee_principal(self.grantee_for(view)?)
            .name(grant_name(principal))
            .operations(GrantOperation::Decrypt)
            .operations(GrantOperation::GenerateDataKey)
            .operations(GrantOperation::ReEncryptFrom)
            .operations(GrantOperation::ReEncryptTo)
            .constraints(
                GrantConstraints::builder()
                    .encryption_context_subset(PRINCIPAL, principal.as_str())
                    .build(),
            );
        self.admin_call("CreateGrant", key.as_str(), request.send())?;
        Ok(())
    }
}

fn state_name(s: &KeyState) -> &'static str {
    match s {
        KeyState::Enabled => "enabled",
        KeyState::Disabled => "disabled",
        KeyState::PendingDeletion { .. } => "pending deletion",
        KeyState::Deleted => "deleted",
    }
}

fn to_metadata(key: &KeyId, view: &KeyView, alias: Option<String>, origin: KeyOrigin) -> KeyMetadata {
    KeyMetadata {
        id: key.clone(),
        alias,
        origin,
        state: view.state,
        primary_version: view.primary_version(),
        versions: view.version_infos(),
        grants: view.principals(),
        created: view.created,
    }
}

impl KmsAdmin for AwsKms {
    fn create_key(&self, request: CreateKeyRequest) -> Result<KeyMetadata> {
        let CreateKeyRequest {
            origin,
            alias,
            import,
            grants,
        } = request;
        if import.is_some() {
            return Err(Error::KmsUnsupported {
                kms: NAME.into(),
                operation: "importing key material".into(),
                detail: "AWS KMS imports material only through GetParametersForImport and ImportKeyMaterial \
                         (a key of origin EXTERNAL); import it there and use the key's id"
                    .into(),
            });
        }
        if let Some(a) = &alias {
            validate_alias(a)?;
        }
        let (description, mut tags, mut grantees) = match &origin {
            KeyOrigin::ProjectDefault { project } => (
                "colvault CMK: the default key of a project".to_string(),
                vec![tag(TAG_ORIGIN, ORIGIN_DEFAULT)?, tag(TAG_PROJECT, project.as_str())?],
                vec![project.clone()],
            ),
            KeyOrigin::Byok => (
                "colvault CMK: bring your own key".to_string(),
                vec![tag(TAG_ORIGIN, ORIGIN_BYOK)?],
                vec![],
            ),
        };
        grantees.extend(grants);
        let request = self
            .service
            .client()
            .create_key()
            .description(description)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .key_spec(KeySpec::SymmetricDefault)
            .set_tags(Some(std::mem::take(&mut tags)));
        let out = self.admin_call("CreateKey", "", request.send())?;
        let id = out
            .key_metadata()
            .map(|m| m.key_id().to_string())
            .ok_or_else(|| Error::KmsService {
                kms: NAME.into(),
                operation: "CreateKey".into(),
                detail: "the answer holds no key metadata".into(),
                retriable: false,
            })?;
        let key = KeyId::new(&id)?;
        let finish = || -> Result<()> {
            let view = self.fresh_view(&key)?;
            for p in &grantees {
                self.create_grant(&key, &view, p)?;
            }
            if let Some(a) = &alias {
                let r = self
                    .service
                    .client()
                    .create_alias()
                    .alias_name(format!("{ALIAS_PREFIX}{a}"))
                    .target_key_id(key.as_str());
                self.admin_call("CreateAlias", key.as_str(), r.send())?;
            }
            Ok(())
        };
        if let Err(e) = finish() {
            // All or nothing, as far as AWS allows: the half-made key is scheduled for deletion.
            let _ = self.schedule_deletion(&key, 7);
            return Err(e);
        }
        self.metadata(&key)
    }

    fn describe(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.metadata(key)
    }

    fn list(&self) -> Result<Vec<KeyMetadata>> {
        let client = self.service.client();
        let ids = self.service.run(async move {
            let mut ids = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let out = client
                    .list_keys()
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(|e| map(e, Call::admin("ListKeys", "")))?;
                ids.extend(out.keys().iter().filter_map(|k| k.key_id().map(str::to_string)));
                match out.next_marker() {
                    Some(m) if out.truncated() => marker = Some(m.to_string()),
                    _ => break,
                }
            }
            Ok::<_, Error>(ids)
        })??;
        let mut out = Vec::new();
        for id in ids {
            let Ok(key) = KeyId::new(id) else { continue };
            match self.metadata(&key) {
                Ok(m) => out.push(m),
                // Keys this identity may not describe, or that vanished meanwhile, are not listed.
                Err(Error::AccessDenied { .. } | Error::UnknownKey { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|m| m.created);
        Ok(out)
    }

    fn enable(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.require(key, "enable", |s| matches!(s, KeyState::Enabled | KeyState::Disabled))?;
        let r = self.service.client().enable_key().key_id(key.as_str());
        self.admin_call("EnableKey", key.as_str(), r.send())?;
        self.metadata(key)
    }

    fn disable(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.require(key, "disable", |s| matches!(s, KeyState::Enabled | KeyState::Disabled))?;
        let r = self.service.client().disable_key().key_id(key.as_str());
        self.admin_call("DisableKey", key.as_str(), r.send())?;
        self.metadata(key)
    }

    fn schedule_deletion(&self, key: &KeyId, days: u32) -> Result<KeyMetadata> {
        if !(7..=30).contains(&days) {
            return Err(Error::InvalidArgument(format!(
                "a deletion window is 7 to 30 days, got {days}"
            )));
        }
        let view = self.require(key, "schedule the deletion of", |s| {
            matches!(s, KeyState::Enabled | KeyState::Disabled)
        })?;
        // AWS leaves a key Disabled when its deletion is cancelled; colvault restores the state the
        // key had, recorded here in a tag.
        let resume = if view.state == KeyState::Enabled {
            "Enabled"
        } else {
            "Disabled"
        };
        let r = self
            .service
            .client()
            .tag_resource()
            .key_id(key.as_str())
            .tags(tag(TAG_RESUME, resume)?);
        self.admin_call("TagResource", key.as_str(), r.send())?;
        let r = self
            .service
            .client()
            .schedule_key_deletion()
            .key_id(key.as_str())
            .pending_window_in_days(days as i32);
        self.admin_call("ScheduleKeyDeletion", key.as_str(), r.send())?;
        self.metadata(key)
    }

    fn cancel_deletion(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.require(key, "cancel the deletion of", |s| {
            matches!(s, KeyState::PendingDeletion { .. })
        })?;
        let r = self.service.client().list_resource_tags().key_id(key.as_str());
        let tags = self.admin_call("ListResourceTags", key.as_str(), r.send())?;
        let resume_enabled = tags
            .tags()
            .iter()
            .any(|t| t.tag_key() == TAG_RESUME && t.tag_value() == "Enabled");
        let r = self.service.client().cancel_key_deletion().key_id(key.as_str());
        self.admin_call("CancelKeyDeletion", key.as_str(), r.send())?;
        if resume_enabled {
            let r = self.service.client().enable_key().key_id(key.as_str());
            self.admin_call("EnableKey", key.as_str(), r.send())?;
        }
        self.metadata(key)
    }

    fn delete_key(&self, key: &KeyId) -> Result<KeyMetadata> {
        Err(Error::KmsUnsupported {
            kms: NAME.into(),
            operation: format!("deleting key {key} now"),
            detail: "AWS KMS deletes a key (and destroys its material) by itself when the window given to \
                     ScheduleKeyDeletion ends; no call deletes it earlier"
                .into(),
        })
    }

    fn rotate(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.require(key, "rotate", |s| matches!(s, KeyState::Enabled))?;
        let r = self.service.client().rotate_key_on_demand().key_id(key.as_str());
        self.service
            .run(r.send())?
            .map_err(|e| match map(e, Call::admin("RotateKeyOnDemand", key.as_str())) {
                Error::KmsService { detail, .. } if detail.starts_with("LimitExceededException") => Error::KeyLimit {
                    what: format!("on-demand rotations of key {key} ({detail})"),
                },
                other => other,
            })?;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.metadata(key)
    }

    fn destroy_version(&self, key: &KeyId, version: u32) -> Result<KeyMetadata> {
        Err(Error::KmsUnsupported {
            kms: NAME.into(),
            operation: format!("destroying version {version} of key {key}"),
            detail: "AWS KMS keeps the material of every rotation for as long as the key exists and has no call \
                     to destroy one; schedule the deletion of the whole key instead (after re-encrypting what \
                     must survive under another key)"
                .into(),
        })
    }

    fn grant(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata> {
        self.forget(key);
        let view = self.fresh_view(key)?;
        self.create_grant(key, &view, principal)?;
        self.metadata(key)
    }

    fn revoke(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata> {
        self.forget(key);
        let view = self.fresh_view(key)?;
        for g in view.grants.iter().filter(|g| &g.principal == principal) {
            let r = self
                .service
                .client()
                .revoke_grant()
                .key_id(key.as_str())
                .grant_id(&g.grant_id);
            self.admin_call("RevokeGrant", key.as_str(), r.send())?;
        }
        self.metadata(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        assert_eq!(
            account_root("arn:aws:kms:us-east-1:123456789012:key/abc").as_deref(),
            Some("arn:aws:iam::123456789012:root")
        );
        assert_eq!(account_root("not an arn"), None);
        let n = grant_name(&Principal::new("project 7/é").unwrap());
        assert!(
            n.len() == 41 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{n}"
        );
        validate_alias("hr-key/2").unwrap();
        for bad in ["", "aws/x", "a b", "é", &"x".repeat(251)] {
            assert!(validate_alias(bad).is_err(), "{bad:?}");
        }
    }
}
