//! The one error type of the public API.

use std::path::PathBuf;

/// Everything that can go wrong in colvault.
///
/// Every variant says what went wrong and, where there is one, what to do next. No variant ever carries
/// key material: key ids, versions and principals are names, never secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An algorithm name that colvault does not know.
    #[error("unknown algorithm {name:?}: expected one of none, aes256, aesctr, rc4")]
    UnknownAlgorithm {
        /// The name that was given.
        name: String,
    },
    /// An algorithm id read from a file or manifest that colvault does not know.
    #[error("unknown algorithm id {id}: the data was written by a newer colvault or is corrupt")]
    UnknownAlgorithmId {
        /// The id that was read.
        id: u8,
    },
    /// RC4 was asked for without the explicit legacy opt-in.
    #[error("RC4 is a legacy cipher (RFC 7465) and is written only with an explicit opt-in (allow_legacy_rc4)")]
    LegacyAlgorithmRefused,
    /// Authenticated data failed its check: it was altered, truncated, moved, or opened with the wrong key.
    #[error("integrity check failed for {what}: the data was altered, truncated, moved or opened with the wrong key")]
    Integrity {
        /// What failed to authenticate (a chunk, a footer, a keystore, a wrapped key ...).
        what: String,
    },
    /// A sealer failed earlier and refuses further use, so no (key, nonce) pair can be reused.
    #[error("this sealer failed earlier and is poisoned; start again with a fresh data key")]
    Poisoned,
    /// The same chunk position was sealed twice under one key: that would reuse a nonce.
    #[error("chunk position {what} was already sealed under this data key; refusing to reuse a nonce")]
    NonceReuse {
        /// The position that was sealed twice.
        what: String,
    },
    /// A usage limit of a key was reached (for instance the wrap count of a key-encryption key).
    #[error("key usage limit reached: {what}; rotate the key")]
    KeyLimit {
        /// Which limit.
        what: String,
    },
    /// The key is disabled in the KMS.
    #[error("key {key} is disabled; enable it (colvault kms enable {key}) to read or write the data it protects")]
    KeyDisabled {
        /// The key id.
        key: String,
    },
    /// The key is scheduled for deletion.
    #[error("key {key} is pending deletion (until {until_unix_secs} s since the epoch); cancel the deletion to use it again")]
    KeyPendingDeletion {
        /// The key id.
        key: String,
        /// When the key material will be destroyed, in seconds since the Unix epoch.
        until_unix_secs: u64,
    },
    /// The key was deleted and its material destroyed; the data it protected cannot be decrypted.
    #[error("key {key} was deleted; its material is destroyed and the data it protected cannot be decrypted")]
    KeyDeleted {
        /// The key id.
        key: String,
    },
    /// The principal may not use the key.
    #[error("access denied: principal {principal} may not use key {key}; the key's owner can grant it (colvault kms grant {key} <project>)")]
    AccessDenied {
        /// Who asked (a project id, or a column name for a column key).
        principal: String,
        /// The key id.
        key: String,
    },
    /// No key with this id exists in the KMS.
    #[error("unknown key {key}: no such key in this KMS")]
    UnknownKey {
        /// The key id.
        key: String,
    },
    /// The key version needed was destroyed.
    #[error("version {version} of key {key} was destroyed; data wrapped under it can no longer be decrypted")]
    VersionDestroyed {
        /// The key id.
        key: String,
        /// The destroyed version.
        version: u32,
    },
    /// A key administration request that the key's current state does not allow.
    #[error("invalid key state for this operation: {0}")]
    InvalidKeyState(String),
    /// The root secret does not open the keystore.
    #[error("the root secret does not open keystore {path}: wrong passphrase or key file, or the keystore was tampered with")]
    WrongRootSecret {
        /// The keystore file.
        path: PathBuf,
    },
    /// The snapshot a reader was reading was expired (and its files removed) by a concurrent
    /// `expire`/`vacuum`, compaction, re-encryption or migration: not damage. Scan again; a new
    /// scan reads the current version.
    #[error(
        "version {version} of table {table} was expired while it was being read; scan again for the current version"
    )]
    SnapshotExpired {
        /// The table.
        table: String,
        /// The version that was being read.
        version: u64,
    },
    /// An argument that is not valid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A structure that could not be decoded (a wrapped key, a keystore, a footer ...).
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A crypto backend failed in a way that is not an authentication failure.
    #[error("crypto backend failure: {0}")]
    Crypto(&'static str),
    /// A file written by a newer major version of the format.
    #[error("unsupported format version {found}: this colvault reads major version {supported}; upgrade colvault")]
    UnsupportedVersion {
        /// The version found (major.minor).
        found: String,
        /// The major version this build reads.
        supported: u8,
    },
    /// Data not in the colvault format at all (wrong magic).
    #[error("not a colvault file: {0}")]
    NotColvault(String),
    /// A file protected otherwise than the reader expects (a downgrade, or a file from elsewhere).
    #[error("algorithm mismatch: expected {expected}, the file says {found}; refusing to read it")]
    AlgorithmMismatch {
        /// What the project settings require.
        expected: String,
        /// What the file declares.
        found: String,
    },
    /// The file is wrapped under a key the reader does not allow for this data.
    #[error("key {key} is not one of the keys allowed for this data; refusing to read the file")]
    KeyNotAllowed {
        /// The key id the file names.
        key: String,
    },
    /// A table manifest sealed under a key other than the project's CMK (or the CMK a migration is
    /// leaving): it was not written by this project, whatever it says.
    #[error(
        "manifest version {version} is sealed under key {found}, not under the project's key ({expected}); refusing to read it: restore the table's _manifest directory from a trusted copy, or open the project whose key sealed it"
    )]
    ManifestKeyMismatch {
        /// The manifest version.
        version: u64,
        /// The CMK the manifest's key is wrapped under.
        found: String,
        /// The CMKs the project's settings allow, comma-separated.
        expected: String,
    },
    /// Encrypted data was opened without any way to reach its keys.
    #[error("the data is encrypted with {algorithm} and no key access was given; pass the project's key access")]
    KeysRequired {
        /// The file's algorithm.
        algorithm: String,
    },
    /// The schema of a batch differs from the writer's.
    #[error("schema mismatch: {0}")]
    SchemaMismatch(String),
    /// An error from the Parquet encoder or decoder.
    #[error("parquet: {0}")]
    Parquet(String),
    /// An error from Arrow.
    #[error("arrow: {0}")]
    Arrow(String),
    /// An I/O error, with the path or operation it came from.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What colvault was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    // -- KMS section: variants added by the key management service go above this line --
}

/// The result type of colvault.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] with what colvault was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Integrity`] for `what`.
    pub(crate) fn integrity(what: impl Into<String>) -> Self {
        Error::Integrity { what: what.into() }
    }

    /// An [`Error::Malformed`].
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }
}
