//! What the catalog records about projects and tables.

use crate::crypto::Algorithm;
use crate::kms::KeyId;

/// What a project's data must be protected with: the catalog's word, not storage's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionPolicy {
    /// The algorithm of every file (`none` when encryption is off).
    pub algorithm: Algorithm,
    /// The project CMK, when encrypted.
    pub cmk: Option<KeyId>,
    /// While a migration is under way: the algorithm and CMK being left, which readers still
    /// accept for data not yet rewritten. Honoured only from here, never from storage.
    pub migrating_from: Option<(Algorithm, Option<KeyId>)>,
}

impl EncryptionPolicy {
    /// Whether the policy requires encryption of everything written or read (no plaintext allowed,
    /// not even from a migration's source).
    pub fn requires_encryption(&self) -> bool {
        self.cmk.is_some() && !matches!(self.migrating_from, Some((_, None)))
    }

    /// A short description for messages, e.g. `aes256 under key k-…`.
    pub fn describe(&self) -> String {
        let mut s = match &self.cmk {
            Some(k) => format!("{} under key {k}", self.algorithm),
            None => "no encryption".to_string(),
        };
        if let Some((alg, k)) = &self.migrating_from {
            match k {
                Some(k) => s.push_str(&format!(" (migrating from {alg} under key {k})")),
                None => s.push_str(" (migrating from no encryption)"),
            }
        }
        s
    }
}

/// One project in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    /// Random, immutable: the principal in the KMS and part of every encryption context.
    pub project_id: String,
    /// The name people use (unique in the catalog).
    pub name: String,
    /// Where its data lives (a directory path or an object-store URL).
    pub location: String,
    /// The name of the KMS holding its keys.
    pub kms: String,
    /// The encryption policy.
    pub policy: EncryptionPolicy,
    /// The settings generation (increases with every migration).
    pub generation: u64,
    /// BLAKE3 of the authenticated settings body on storage.
    pub settings_digest: [u8; 32],
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
}

/// A table's head: the newest committed version and the digest of its manifest file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableHead {
    /// The version.
    pub version: u64,
    /// BLAKE3 of the sealed manifest file of that version.
    pub digest: [u8; 32],
}

/// One table in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRecord {
    /// Random, immutable: bound into every manifest and encryption context.
    pub table_id: String,
    /// The project's id.
    pub project_id: String,
    /// The name people use (unique within the project).
    pub name: String,
    /// Its directory relative to the project's location (`tables/<table id>` for tables created
    /// through the catalog, `tables/<name>` for adopted ones).
    pub location: String,
    /// The head.
    pub head: TableHead,
    /// The top-level columns kept under a CMK of their own, in schema order (empty for most
    /// tables). Fixed when the table is created; readers and writers take it from here, never from
    /// storage.
    pub column_keys: Vec<ColumnKey>,
    /// The partition columns, in partition order (empty for a table that is not partitioned).
    /// Fixed when the table is created; readers take it from here, never from storage.
    pub partition_by: Vec<String>,
}

/// A top-level column of a table kept under a CMK of its own (all of its leaves): its chunks,
/// statistics and dictionaries are sealed under a data key wrapped under `cmk`, never under the
/// file's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ColumnKey {
    /// The top-level field's name.
    pub column: String,
    /// The CMK.
    pub cmk: KeyId,
}
