//! Column keys on tables: a top-level column kept under a CMK of its own (an HR key for `salary`
//! while the rest of the table uses the project's key).
//!
//! Where the expectation comes from: the catalog's record of the table ([`TableRecord::column_keys`],
//! fixed at creation) is the trust anchor. Every manifest records the same list (format 2, sealed
//! under the project's CMK) and is refused if it differs; every file a manifest lists must record
//! its column keys' CMKs in `key_ids` in the policy's order; and every file opened through the table
//! must have exactly those keys in its (authenticated) envelope: the file key under the project's
//! CMK, each policy column under its own CMK, and no other column under a key of its own. So a
//! writer who holds the project's key but not the column's cannot move the column back under the
//! project key, nor under a key of their choosing, without readers refusing it
//! ([`Error::ColumnKeyMismatch`]).
//!
//! [`TableRecord::column_keys`]: crate::catalog::TableRecord::column_keys

use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;

use super::{FileRef, Manifest, Table};
use crate::access::ColumnKeyRule;
use crate::catalog::ColumnKey;
use crate::error::{ColumnKeyProblem, Error, Result};
use crate::format::envelope::KeyRole;
use crate::kms::{DataKeyEnvelope, KeyId};
use crate::project::Project;
use crate::read::FileReader;

/// Options of a new table: which top-level columns are kept under a CMK of their own, and which
/// columns partition it ([`partition_by`](Self::partition_by)).
///
/// ```
/// use colvault::kms::KeyId;
/// use colvault::table::TableOptions;
/// let hr = KeyId::new("k-hr")?;
/// let opts = TableOptions::new().column_key("salary", hr.clone());
/// assert_eq!(opts.column_keys(), &[("salary".to_string(), hr)]);
/// # Ok::<(), colvault::Error>(())
/// ```
///
/// Checked when the table is created ([`Project::create_table_with`]): each column must be a
/// top-level field of the schema (a key on a struct or list covers all of its leaves; a dotted
/// path into one is refused, naming the field to use), named once, under a key other than the
/// project's, in an encrypted project, and the project must be allowed to use the key (a
/// bring-your-own key's owner grants it to the project's id first, as for a project key). Each
/// refusal is [`Error::InvalidColumnKey`] (or the KMS's own error, e.g. [`Error::AccessDenied`]),
/// and nothing is created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    column_keys: Vec<(String, KeyId)>,
    partition_by: Vec<String>,
}

impl TableOptions {
    /// No column keys: every column under the project's key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps top-level column `column` (all of its leaves) under CMK `cmk`: every file's chunks,
    /// statistics and dictionaries of that column are sealed under a data key of their own wrapped
    /// under `cmk`.
    pub fn column_key(mut self, column: impl Into<String>, cmk: KeyId) -> Self {
        self.column_keys.push((column.into(), cmk));
        self
    }

    /// The column keys asked for, in the order given.
    pub fn column_keys(&self) -> &[(String, KeyId)] {
        &self.column_keys
    }

    /// Partitions the table by these top-level columns, in this order (MaxCompute's
    /// `PARTITIONED BY`): each data file holds rows of one partition, and scans skip partitions
    /// their filters rule out before opening any file (see [`super::partition`]). Partition
    /// columns are strings, integers, dates or booleans, at most
    /// [`MAX_PARTITION_COLUMNS`](super::MAX_PARTITION_COLUMNS), and none has a key of its own.
    pub fn partition_by<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.partition_by = columns.into_iter().map(Into::into).collect();
        self
    }

    /// The partition columns asked for.
    pub fn partition_columns(&self) -> &[String] {
        &self.partition_by
    }

    /// The column keys for `schema` in project `project`, checked, in schema order.
    pub(super) fn resolve(&self, project: &Project, schema: &Schema) -> Result<Vec<ColumnKey>> {
        let refuse = |column: &str, problem| Error::InvalidColumnKey {
            column: column.to_string(),
            problem,
        };
        let mut resolved: Vec<(usize, ColumnKey)> = Vec::new();
        for (column, cmk) in &self.column_keys {
            let Some(project_cmk) = &project.settings().cmk else {
                return Err(refuse(column, ColumnKeyProblem::ProjectNotEncrypted));
            };
            let index = match schema.index_of(column) {
                Ok(i) => i,
                Err(_) => {
                    // A dotted path into a nested field names its top-level field instead.
                    let top = column
                        .split('.')
                        .next()
                        .filter(|t| t.len() < column.len() && schema.index_of(t).is_ok());
                    return Err(refuse(
                        column,
                        match top {
                            Some(t) => ColumnKeyProblem::NestedField {
                                top_level: t.to_string(),
                            },
                            None => ColumnKeyProblem::UnknownColumn,
                        },
                    ));
                }
            };
            if resolved.iter().any(|(i, _)| *i == index) {
                return Err(refuse(column, ColumnKeyProblem::Duplicate));
            }
            if cmk == project_cmk {
                return Err(refuse(column, ColumnKeyProblem::ProjectKey));
            }
            resolved.push((
                index,
                ColumnKey {
                    column: column.clone(),
                    cmk: cmk.clone(),
                },
            ));
        }
        resolved.sort_by_key(|(i, _)| *i);
        Ok(resolved.into_iter().map(|(_, k)| k).collect())
    }
}

/// `column=key, ...` (or `none`), for messages.
pub(crate) fn describe(keys: &[ColumnKey]) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    keys.iter()
        .map(|k| format!("{}={}", k.column, k.cmk))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table's column-key policy as the catalog records it, with the columns' field indices once a
/// checked manifest has given the schema.
#[derive(Debug)]
pub(super) struct ColumnPolicy {
    /// `None` only while a table is adopted (trust on first use): its manifest's list is taken.
    keys: Option<Vec<ColumnKey>>,
    indices: OnceLock<Vec<u32>>,
    /// The partition columns (`None` only while a table is adopted).
    pub(super) partition_by: Option<Vec<String>>,
}

impl ColumnPolicy {
    pub(super) fn new(keys: Vec<ColumnKey>, partition_by: Vec<String>) -> Arc<Self> {
        Arc::new(ColumnPolicy {
            keys: Some(keys),
            indices: OnceLock::new(),
            partition_by: Some(partition_by),
        })
    }

    /// The policy of a table being adopted: whatever its verified head manifest records.
    pub(super) fn adopting() -> Arc<Self> {
        Arc::new(ColumnPolicy {
            keys: None,
            indices: OnceLock::new(),
            partition_by: None,
        })
    }
}

impl Table {
    /// The columns this table keeps under a CMK of their own, in schema order, as the catalog
    /// records them (empty for most tables).
    pub fn column_keys(&self) -> &[ColumnKey] {
        self.columns.keys.as_deref().unwrap_or(&[])
    }

    fn mismatch(&self, detail: String) -> Error {
        Error::ColumnKeyMismatch {
            table: self.name.clone(),
            detail,
            expected: describe(self.column_keys()),
        }
    }

    /// Checks a manifest read from storage against the catalog's column keys: the same list, each
    /// a top-level field of its schema, and every file recording exactly the policy's column CMKs
    /// after its file key.
    pub(super) fn check_manifest_column_keys(&self, m: &Manifest) -> Result<()> {
        let Some(policy) = &self.columns.keys else {
            return Ok(());
        };
        if &m.column_keys != policy {
            return Err(self.mismatch(format!(
                "manifest version {} records the column keys {}",
                m.version,
                describe(&m.column_keys)
            )));
        }
        let indices = policy
            .iter()
            .map(|k| {
                m.schema
                    .index_of(&k.column)
                    .map(|i| i as u32)
                    .map_err(|_| self.mismatch(format!("manifest version {} has no column {:?}", m.version, k.column)))
            })
            .collect::<Result<Vec<_>>>()?;
        if self.columns.indices.get_or_init(|| indices.clone()) != &indices {
            return Err(self.mismatch(format!(
                "manifest version {} moved the columns with keys of their own",
                m.version
            )));
        }
        for f in &m.files {
            let column_cmks = f.key_ids.get(1..).unwrap_or(&[]);
            let as_policy = policy.iter().map(|k| &k.cmk).eq(column_cmks.iter());
            if !as_policy || (f.key_ids.is_empty() && !policy.is_empty()) {
                return Err(self.mismatch(format!(
                    "manifest version {} lists file {} with column keys [{}]",
                    m.version,
                    f.name,
                    column_cmks.iter().map(KeyId::as_str).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(())
    }

    /// What every key of this table's files must be wrapped under, for [`crate::KeyAccess`] (a
    /// table without column keys, or one not yet checked against a manifest, allows no column any
    /// key of its own).
    pub(super) fn column_rule(&self) -> ColumnKeyRule {
        let indices = self.columns.indices.get().map(Vec::as_slice).unwrap_or(&[]);
        ColumnKeyRule {
            table: self.name.clone(),
            file_cmks: self.manifest_cmks(),
            columns: indices
                .iter()
                .zip(self.column_keys())
                .map(|(i, k)| (*i, k.column.clone(), k.cmk.clone()))
                .collect(),
        }
    }

    /// Sets the columns' field indices from a new table's schema (already checked by
    /// [`TableOptions::resolve`]).
    pub(super) fn set_column_indices(&self, schema: &Schema) {
        let indices = self
            .column_keys()
            .iter()
            .filter_map(|k| schema.index_of(&k.column).ok().map(|i| i as u32))
            .collect();
        let _ = self.columns.indices.set(indices);
    }

    /// Checks an opened file's (authenticated) envelope against the table's column keys: the file
    /// key under the project's CMK, each column with a key of its own under exactly that CMK, and
    /// no other column with a key of its own. A file of an encrypted table that holds a policy
    /// column under the file key, under another CMK, or any other column under a key of its own is
    /// [`Error::ColumnKeyMismatch`].
    pub(crate) fn check_file_keys(&self, f: &FileRef, r: &FileReader) -> Result<()> {
        if self.columns.keys.is_none() || self.access().is_none() {
            return Ok(());
        }
        let rule = self.column_rule();
        let env = r.envelope();
        if !env.algorithm.is_encrypted() {
            if rule.columns.is_empty() {
                return Ok(());
            }
            return Err(self.mismatch(format!("data file {} is not encrypted", f.name)));
        }
        let mut own = Vec::new();
        for k in &env.keys {
            let key = DataKeyEnvelope::from_bytes(&k.wrapped)?.key_id().clone();
            match k.role {
                KeyRole::File if rule.file_cmks.contains(&key) => {}
                KeyRole::File => {
                    return Err(self.mismatch(format!("data file {} has its file key under key {key}", f.name)))
                }
                KeyRole::Column(c) => match rule.columns.iter().find(|(i, _, _)| *i == c) {
                    Some((_, _, cmk)) if *cmk == key => own.push(c),
                    Some((_, name, _)) => {
                        return Err(self.mismatch(format!("data file {} keeps column {name:?} under key {key}", f.name)))
                    }
                    None => {
                        return Err(self.mismatch(format!(
                            "data file {} keeps field {c} under a key of its own ({key})",
                            f.name
                        )))
                    }
                },
            }
        }
        if let Some((_, name, _)) = rule.columns.iter().find(|(i, _, _)| !own.contains(i)) {
            return Err(self.mismatch(format!(
                "data file {} keeps column {name:?} under its file key, not under a key of its own",
                f.name
            )));
        }
        Ok(())
    }

    /// Opens committed file `f` of snapshot `m` with the reader's checks, and checks its keys
    /// against the column keys ([`check_file_keys`](Self::check_file_keys)).
    pub(crate) fn check_file_and_keys(&self, f: &FileRef, m: &Manifest) -> Result<()> {
        if self.columns.keys.is_none() || self.access().is_none() {
            return self.check_file(f, m);
        }
        let r = self.open_file(f, m)?;
        self.check_file_keys(f, &r)
    }

    /// All rows of committed file `f` of snapshot `m` in the manifest's schema, for rewriting it:
    /// the file's keys are checked against the column keys first, so a file that moved a column
    /// out from under its key is refused, never rewritten into a well-keyed one. (Both opens check
    /// the footer digest the manifest records, so they see the same envelope.)
    pub(super) fn read_checked_file(&self, f: &FileRef, m: &Manifest) -> Result<Vec<RecordBatch>> {
        self.check_file_and_keys(f, m)?;
        self.read_file(f, m)
    }
}

/// Checks that the project may use each column key before a table is created with them: a key it
/// has no grant on (a bring-your-own key its owner has not granted to the project's id), a disabled
/// or unknown key, fails here, and nothing is created.
pub(super) fn check_usable(project: &Project, table_id: &str, keys: &[ColumnKey]) -> Result<()> {
    let access = project.access(table_id);
    for k in keys {
        access
            .new_aux_key(&k.cmk, &format!("column key check {}", k.column))
            .map_err(|e| match e {
                Error::AccessDenied { key, .. } => Error::AccessDenied {
                    principal: format!(
                        "project {} ({}) for column {:?}",
                        project.project_id(),
                        project.name(),
                        k.column
                    ),
                    key,
                },
                Error::KeyDisabled { .. }
                | Error::KeyPendingDeletion { .. }
                | Error::KeyDeleted { .. }
                | Error::UnknownKey { .. } => Error::ColumnKeyUnavailable {
                    column: k.column.clone(),
                    source: Box::new(e),
                },
                other => other,
            })?;
    }
    Ok(())
}
