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
    #[error("access denied: principal {principal} may not use key {key}; the key's owner can grant it: colvault kms grant {key} {}", grantee(principal))]
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
    /// A request to the data plane's store failed after its retries (a network failure, a
    /// throttled or refused request). Nothing visible was changed by the call that failed; when
    /// `retriable` is set, the same call may succeed when tried again.
    #[error("storage error while {context}: {message}{}", if *retriable { " (retriable: nothing was changed, try again)" } else { "" })]
    Storage {
        /// What colvault was doing, with the object's URL or path.
        context: String,
        /// What the store said.
        message: String,
        /// Whether the same call may succeed when tried again.
        retriable: bool,
    },
    // -- Control plane: what the catalog anchors --
    /// The catalog could not be reached or answered with an error (a database error, a lost
    /// connection). Retriable when `retriable` is set: nothing was changed.
    #[error("catalog {catalog}: {detail}")]
    Catalog {
        /// Which catalog (its URL, without credentials).
        catalog: String,
        /// What went wrong.
        detail: String,
        /// Whether the same call may succeed when tried again.
        retriable: bool,
    },
    /// A project or table name that the catalog does not know.
    #[error("no {kind} named {name}{hint}")]
    NotRegistered {
        /// `project` or `table`.
        kind: &'static str,
        /// The name that was asked for.
        name: String,
        /// What to do (may be empty).
        hint: String,
    },
    /// A name that the catalog already holds.
    #[error("{kind} {name} already exists in the catalog")]
    AlreadyExists {
        /// `project` or `table`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Storage claims weaker protection than the catalog records for the project (for instance a
    /// plaintext settings file in a project the catalog records as encrypted): refused.
    #[error("downgrade refused for project {project}: the catalog records {expected}, storage says {found}; the settings file was replaced (restore it from a backup, never re-register the project)")]
    Downgrade {
        /// The project.
        project: String,
        /// What the catalog records.
        expected: String,
        /// What storage claims.
        found: String,
    },
    /// Storage holds older project settings than the catalog records (an old copy was restored).
    #[error("settings rollback refused for project {project}: the catalog records settings generation {expected}, storage holds {found}")]
    SettingsRollback {
        /// The project.
        project: String,
        /// The generation (and digest) the catalog records.
        expected: String,
        /// What storage holds.
        found: String,
    },
    /// Storage does not hold the table head the catalog records: manifests were deleted, an older
    /// copy was restored, or another table's manifests were put in its place.
    #[error("table {table}: storage does not hold version {version}, the head the catalog records ({detail}); its manifests were deleted, rolled back or replaced: restore them from a backup")]
    TableRollback {
        /// The table.
        table: String,
        /// The head version the catalog records.
        version: u64,
        /// What was found instead.
        detail: String,
    },
    /// A keystore older than one the catalog has seen (a backup or snapshot restored).
    #[error("keystore rollback refused: {kms} is at generation {found}, the catalog has seen generation {expected}; restore the newest keystore")]
    KeystoreRollback {
        /// Which keystore.
        kms: String,
        /// The generation the catalog has seen.
        expected: u64,
        /// The keystore's generation.
        found: u64,
    },
    /// Argon2id parameters read from a keystore header (not yet authenticated when they are used) ask
    /// for more than this opener allows: refused before any memory is allocated for them.
    #[error(
        "keystore {path} asks for Argon2id cost {found}, above this opener's maximum {max}: refused before \
         allocating it; if the keystore is genuine, raise the maximum (LocalKmsOptions::with_max_argon2)"
    )]
    KdfCostTooHigh {
        /// The keystore file.
        path: PathBuf,
        /// The parameters the header asks for.
        found: String,
        /// The opener's maximum.
        max: String,
    },
    /// A root secret weaker than colvault accepts: a passphrase shorter than the minimum, or Argon2id
    /// parameters below the floor for new root secrets.
    #[error("root secret refused: {0}")]
    WeakRootSecret(String),
    /// A key version cannot be destroyed yet: KEKs generated under it may still be cached by writers
    /// (in any process) and wrap new data keys until the version destroy delay has passed since the
    /// rotation that superseded it.
    #[error(
        "cannot destroy version {version} of key {key} yet: it was superseded at {superseded_unix_secs} s since \
         the epoch, and key-encryption keys cached under it may wrap new data until {not_before_unix_secs} s since \
         the epoch (the version destroy delay); after that, rewrap what it protects and destroy it"
    )]
    VersionDestroyTooEarly {
        /// The key id.
        key: String,
        /// The version.
        version: u32,
        /// When the rotation that superseded it happened, in seconds since the Unix epoch.
        superseded_unix_secs: u64,
        /// The earliest time it can be destroyed, in seconds since the Unix epoch.
        not_before_unix_secs: u64,
    },
    /// A key management service refused the credentials colvault presented: a wrong, locked or
    /// expired PIN for a PKCS#11 token (SoftHSM2 may report a wrong PIN as `CKR_GENERAL_ERROR`).
    /// Nothing was changed; the credentials are never part of the message.
    #[error("the KMS {kms} refused the credentials: {detail}")]
    KmsAuthentication {
        /// Which KMS (for PKCS#11, the module and the token label).
        kms: String,
        /// What it said, and what to do.
        detail: String,
    },
    // -- KMS section: variants added by the key management service go above this line --
    /// A key management service could not be reached, throttled the request, or failed inside
    /// (network error, timeout, `ThrottlingException`, `KMSInternalException` ...). Retriable when
    /// `retriable` is set. Never carries key material.
    #[error("KMS {kms}: {operation} failed: {detail}{}", if *retriable { " (temporary: try again)" } else { "" })]
    KmsService {
        /// Which KMS (its name, for instance `aws-kms`).
        kms: String,
        /// The request that failed (for instance `GenerateDataKey`).
        operation: String,
        /// What the service or the transport said.
        detail: String,
        /// Whether the same call may succeed when tried again.
        retriable: bool,
    },
    /// An operation that this KMS backend cannot perform (for instance destroying one version of an
    /// AWS KMS key, which the AWS KMS API has no call for, or changing the passphrase of a KMS that
    /// has none).
    #[error("KMS {kms} does not support {operation}: {detail}")]
    KmsUnsupported {
        /// Which KMS.
        kms: String,
        /// The operation refused.
        operation: String,
        /// Why, and what to do instead.
        detail: String,
    },
    /// A missing or malformed setting: an environment variable, a `--kms` URL, or the
    /// configuration file (named with its line).
    #[error("configuration {setting}: {detail}")]
    Config {
        /// The variable, flag, or `file:line`.
        setting: String,
        /// What is wrong and what is expected.
        detail: String,
    },
    /// A column key asked of a new table that cannot be given (see [`ColumnKeyProblem`]); nothing
    /// was created.
    #[error("column key for {column:?} refused: {problem}")]
    InvalidColumnKey {
        /// The column as it was named.
        column: String,
        /// What is wrong with it.
        problem: ColumnKeyProblem,
    },
    /// A column kept under a CMK of its own could not be read or written because that key cannot be
    /// used now (disabled, pending deletion, deleted, unknown, a destroyed version). Other columns
    /// are not affected.
    #[error("column {column:?} is kept under a key of its own, which cannot be used: {source}")]
    ColumnKeyUnavailable {
        /// The column.
        column: String,
        /// Why the key cannot be used.
        #[source]
        source: Box<Error>,
    },
    /// A manifest or data file of a table whose column keys are not the ones the catalog records
    /// for the table (a column moved under another key, or out from under its own): refused before
    /// any of it is read.
    #[error("table {table}: {detail}; the catalog records the table's column keys as {expected}, so this was not written under them: refusing it")]
    ColumnKeyMismatch {
        /// The table.
        table: String,
        /// What differs.
        detail: String,
        /// The column keys the catalog records (`column=key, ...`, or `none`).
        expected: String,
    },
}

/// Why a column key asked of a new table is refused ([`Error::InvalidColumnKey`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColumnKeyProblem {
    /// The schema has no top-level field of that name.
    UnknownColumn,
    /// The name is a path into a nested field; a column key covers a whole top-level field, all of
    /// its leaves: give it to `top_level`.
    NestedField {
        /// The top-level field to name instead.
        top_level: String,
    },
    /// The project is not encrypted, so there is no data key for a column key to replace.
    ProjectNotEncrypted,
    /// The same column was given two keys.
    Duplicate,
    /// The key is the project's own CMK, which would keep the column under the same key as the rest.
    ProjectKey,
}

impl std::fmt::Display for ColumnKeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnKeyProblem::UnknownColumn => f.write_str("the table has no top-level column of that name"),
            ColumnKeyProblem::NestedField { top_level } => write!(
                f,
                "a column key covers a whole top-level column, all of its leaves: give it to {top_level:?}"
            ),
            ColumnKeyProblem::ProjectNotEncrypted => {
                f.write_str("the project is not encrypted; column keys need an encrypted project")
            }
            ColumnKeyProblem::Duplicate => f.write_str("the column was given more than one key"),
            ColumnKeyProblem::ProjectKey => f.write_str(
                "that is the project's own key, which protects every other column already; name another key",
            ),
        }
    }
}

/// The project name to put in a `colvault kms grant` hint: the principal's first word (a project
/// name), or a placeholder.
fn grantee(principal: &str) -> &str {
    let p = principal.strip_prefix("project ").unwrap_or(principal);
    match p.split(' ').next() {
        Some(name) if !name.is_empty() => name,
        _ => "<project>",
    }
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

thread_local! {
    /// How many [`contain`] calls the current thread is inside.
    static CONTAINING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether the current thread runs inside [`contain`], so a panic now becomes an error (the fuzz
/// targets' panic hook lets those through and aborts on any other).
pub fn panic_is_contained() -> bool {
    CONTAINING.with(|c| c.get() > 0)
}

/// Runs `f`, a decoder from a dependency (Parquet, Arrow IPC, CSV, JSON) over untrusted bytes, and
/// turns a panic inside it into [`Error::Malformed`] about `what`: such a panic means input the
/// decoder did not expect, never a state of colvault's own.
///
/// Unwind safety is asserted: callers move into `f` only values they drop or rebuild after a
/// failure, so nothing is observed half-updated.
pub(crate) fn contain<T>(what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    CONTAINING.with(|c| c.set(c.get() + 1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(c.get() - 1));
    match r {
        Ok(r) => r,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the decoder failed".into());
            Err(Error::malformed(
                what,
                format!("the decoder failed on this input ({detail})"),
            ))
        }
    }
}
