//! How writers and readers reach a project's keys: the KEK cache, the principal, and the immutable
//! ids that make up each wrap's encryption context.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::crypto::{FileId, SecretKey};
use crate::error::{Error, Result};
use crate::kms::{DataKeyEnvelope, EncryptionContext, KeyCache, KeyId, Principal};

/// A principal's access to keys, bound to one project and table.
///
/// A file's DEK is wrapped with the context (project id, table id, file id) and its KEK with the
/// context (project id), so a wrapped key cannot be moved to another project, table or file.
#[derive(Clone)]
pub struct KeyAccess {
    cache: Arc<KeyCache>,
    principal: Principal,
    project_id: String,
    table_id: String,
    /// For a table with column keys: which CMK each key of a file must be wrapped under.
    rule: Option<Arc<ColumnKeyRule>>,
}

/// What a table's column-key policy (the catalog's record) says about each key of its files: the
/// file key is wrapped under one of `file_cmks`, the key of top-level field `index` under the CMK
/// its entry names, and no other field has a key of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnKeyRule {
    /// The table's name, for messages.
    pub table: String,
    /// The CMKs the file key may be under (the project's, and during a migration the one it leaves).
    pub file_cmks: Vec<KeyId>,
    /// (field index, column name, CMK), in schema order.
    pub columns: Vec<(u32, String, KeyId)>,
}

impl ColumnKeyRule {
    fn column(&self, index: u32) -> Option<&(u32, String, KeyId)> {
        self.columns.iter().find(|(i, _, _)| *i == index)
    }
}

impl fmt::Debug for KeyAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAccess")
            .field("principal", &self.principal)
            .field("project_id", &self.project_id)
            .field("table_id", &self.table_id)
            .finish_non_exhaustive()
    }
}

impl KeyAccess {
    /// Access through `cache` as `principal`, for data of table `table_id` in project `project_id`
    /// (immutable random ids, not names).
    pub fn new(
        cache: Arc<KeyCache>,
        principal: Principal,
        project_id: impl Into<String>,
        table_id: impl Into<String>,
    ) -> Self {
        KeyAccess {
            cache,
            principal,
            project_id: project_id.into(),
            table_id: table_id.into(),
            rule: None,
        }
    }

    /// The same access for another table of the project.
    pub fn for_table(&self, table_id: impl Into<String>) -> Self {
        KeyAccess {
            table_id: table_id.into(),
            rule: None,
            ..self.clone()
        }
    }

    /// The same access, holding every key it unwraps to a table's column-key policy.
    pub(crate) fn with_column_rule(mut self, rule: Arc<ColumnKeyRule>) -> Self {
        self.rule = Some(rule);
        self
    }

    /// Names the column in an error about its own key.
    fn column_error(&self, column: Option<u32>, e: Error) -> Error {
        let Some((_, name, _)) = column.and_then(|c| self.rule.as_ref()?.column(c)) else {
            return e;
        };
        match e {
            Error::KeyDisabled { .. }
            | Error::KeyPendingDeletion { .. }
            | Error::KeyDeleted { .. }
            | Error::UnknownKey { .. }
            | Error::VersionDestroyed { .. }
            | Error::InvalidKeyState(_) => Error::ColumnKeyUnavailable {
                column: name.clone(),
                source: Box::new(e),
            },
            other => other,
        }
    }

    /// Refuses a key of a file that the table's column-key policy does not allow where it is: the
    /// file key under a column's CMK, a column's key under any CMK but its own, a key of its own for
    /// a column that has none.
    fn check_rule(&self, key: &KeyId, column: Option<u32>) -> Result<()> {
        let Some(rule) = &self.rule else { return Ok(()) };
        let ok = match column {
            None => rule.file_cmks.contains(key),
            Some(c) => rule.column(c).is_some_and(|(_, _, cmk)| cmk == key),
        };
        if ok {
            return Ok(());
        }
        let what = match column {
            None => "the file key".to_string(),
            Some(c) => match rule.column(c) {
                Some((_, name, _)) => format!("the key of column {name:?}"),
                None => format!("a key of its own for field {c}"),
            },
        };
        let expected = if rule.columns.is_empty() {
            "none".to_string()
        } else {
            rule.columns
                .iter()
                .map(|(_, name, cmk)| format!("{name}={cmk}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::ColumnKeyMismatch {
            table: rule.table.clone(),
            detail: format!("a data file holds {what} under key {key}"),
            expected,
        })
    }

    /// The principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The KEK cache.
    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.cache
    }

    fn kek_context(&self) -> EncryptionContext {
        EncryptionContext::new().with("project", self.project_id.clone())
    }

    fn dek_context(&self, file_id: &FileId, column: Option<u32>) -> EncryptionContext {
        let ctx = EncryptionContext::new()
            .with("project", self.project_id.clone())
            .with("table", self.table_id.clone())
            .with("file", file_id.to_hex());
        match column {
            Some(c) => ctx.with("column", c.to_string()),
            None => ctx,
        }
    }

    /// A fresh DEK for a file (or one column of it) under `cmk`, and its wrapped form.
    pub(crate) fn new_data_key(
        &self,
        cmk: &KeyId,
        file_id: &FileId,
        column: Option<u32>,
    ) -> Result<(SecretKey, Vec<u8>)> {
        let (dek, env) = self
            .cache
            .new_data_key(
                &self.principal,
                cmk,
                &self.kek_context(),
                &self.dek_context(file_id, column),
            )
            .map_err(|e| match e {
                Error::AccessDenied { principal, key } if column.is_some() && self.rule.is_some() => {
                    let name = column.and_then(|c| self.rule.as_ref()?.column(c)).map(|(_, n, _)| n);
                    Error::AccessDenied {
                        principal: format!("{principal} (writing column {:?})", name.map_or("?", |n| n.as_str())),
                        key,
                    }
                }
                e => self.column_error(column, e),
            })?;
        Ok((dek, env.to_bytes()))
    }

    /// The project id of this access.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The table id of this access.
    pub fn table_id(&self) -> &str {
        &self.table_id
    }

    /// A fresh key for project-level data (`what` names it, e.g. "settings" or "manifest 7"), wrapped
    /// under `cmk` with the context (project, table, what).
    pub(crate) fn new_aux_key(&self, cmk: &KeyId, what: &str) -> Result<(SecretKey, DataKeyEnvelope)> {
        let ctx = EncryptionContext::new()
            .with("project", self.project_id.clone())
            .with("table", self.table_id.clone())
            .with("aux", what.to_string());
        self.cache.new_data_key(&self.principal, cmk, &self.kek_context(), &ctx)
    }

    /// Unwraps a key made by [`new_aux_key`](Self::new_aux_key) with the same `what`.
    pub(crate) fn open_aux_key(&self, env: &DataKeyEnvelope, what: &str) -> Result<SecretKey> {
        let ctx = EncryptionContext::new()
            .with("project", self.project_id.clone())
            .with("table", self.table_id.clone())
            .with("aux", what.to_string());
        self.cache
            .open_data_key(&self.principal, env, &self.kek_context(), &ctx)
    }

    /// Re-wraps a file's wrapped key under the current version of its CMK, without touching the
    /// DEK. `memo` maps wrapped KEKs already re-wrapped in this run to their new form, so a batch
    /// of files under one KEK costs one KMS round trip.
    pub(crate) fn rewrap_data_key(
        &self,
        wrapped: &[u8],
        memo: &mut HashMap<Vec<u8>, DataKeyEnvelope>,
    ) -> Result<Vec<u8>> {
        let env = DataKeyEnvelope::from_bytes(wrapped)?;
        let kek = env.wrapped_kek().to_bytes();
        let rewrapped = match memo.get(&kek) {
            Some(done) => done.with_dek_of(&env),
            None => {
                let new = self.cache.rewrap_envelope(&self.principal, &env, &self.kek_context())?;
                memo.insert(kek, new.clone());
                new
            }
        };
        Ok(rewrapped.to_bytes())
    }

    /// Test vectors only (cargo feature `insecure-test-vectors`, absent from default builds): a
    /// fresh file DEK and its wrapped form, with the DEK handed out so the deterministic writer can
    /// reuse it.
    #[cfg(feature = "insecure-test-vectors")]
    #[doc(hidden)]
    pub fn insecure_new_data_key_for_test_vectors(
        &self,
        cmk: &KeyId,
        file_id: &FileId,
    ) -> Result<(SecretKey, Vec<u8>)> {
        self.new_data_key(cmk, file_id, None)
    }

    /// Unwraps a file's (or column's) DEK. `allowed` lists the CMKs this data may be under; a file
    /// naming any other key is refused before the KMS is asked.
    pub(crate) fn open_data_key(
        &self,
        wrapped: &[u8],
        file_id: &FileId,
        column: Option<u32>,
        allowed: Option<&[KeyId]>,
    ) -> Result<SecretKey> {
        let env = DataKeyEnvelope::from_bytes(wrapped)?;
        let key = env.key_id();
        let ours = self.cache.kms().name();
        if env.kms_name() != ours {
            return Err(Error::UnknownKey {
                key: format!("{key} (held by KMS {:?}, not by this KMS {ours:?})", env.kms_name()),
            });
        }
        if let Some(allowed) = allowed {
            if !allowed.iter().any(|k| k == key) {
                return Err(Error::KeyNotAllowed { key: key.to_string() });
            }
        }
        self.check_rule(key, column)?;
        self.cache
            .open_data_key(
                &self.principal,
                &env,
                &self.kek_context(),
                &self.dek_context(file_id, column),
            )
            .map_err(|e| self.column_error(column, e))
    }
}
