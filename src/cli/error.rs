//! Errors of the command line tool, their exit codes and the hint that says what to do next.

use std::fmt;
use std::process::ExitCode;

use colvault::Error;

/// What kind of failure: each kind has its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Anything else (I/O, invalid arguments found by the library, ...): exit code 1.
    Other,
    /// A command line that does not make sense (clap's own errors exit with 2 too): exit code 2.
    Usage,
    /// A key could not be used: disabled, pending deletion, deleted, not granted, unknown, wrong
    /// root secret ...: exit code 3.
    Key,
    /// Data that is corrupt, tampered with, not colvault, or not of the expected shape: exit code 4.
    Data,
}

impl Kind {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::Key => 3,
            Kind::Data => 4,
        }
    }
}

/// An error of a command: a message (what went wrong) and an optional hint (what to do next).
#[derive(Debug)]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
}

/// The result type of the commands.
pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(Kind::Other, message)
    }
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(Kind::Data, message)
    }
    pub fn key(message: impl Into<String>) -> Self {
        Self::new(Kind::Key, message)
    }
    /// Sets (replaces) the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prints the error and its hint to stderr and gives the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("error: {}", self.message);
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
        ExitCode::from(self.kind.code())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

/// The exit-code kind of a library error.
pub fn kind_of(e: &Error) -> Kind {
    match e {
        Error::KeyDisabled { .. }
        | Error::KeyPendingDeletion { .. }
        | Error::KeyDeleted { .. }
        | Error::AccessDenied { .. }
        | Error::UnknownKey { .. }
        | Error::VersionDestroyed { .. }
        | Error::WrongRootSecret { .. }
        | Error::KeyNotAllowed { .. }
        | Error::KeysRequired { .. }
        | Error::InvalidKeyState(_)
        | Error::ColumnKeyUnavailable { .. }
        | Error::KeyLimit { .. }
        | Error::VersionDestroyTooEarly { .. } => Kind::Key,
        Error::Integrity { .. }
        | Error::Malformed { .. }
        | Error::NotColvault(_)
        | Error::UnsupportedVersion { .. }
        | Error::AlgorithmMismatch { .. }
        | Error::ManifestKeyMismatch { .. }
        | Error::ColumnKeyMismatch { .. }
        | Error::UnknownAlgorithmId { .. }
        | Error::SchemaMismatch(_)
        | Error::Parquet(_)
        | Error::Arrow(_)
        | Error::Downgrade { .. }
        | Error::SettingsRollback { .. }
        | Error::TableRollback { .. }
        | Error::KeystoreRollback { .. }
        | Error::KdfCostTooHigh { .. } => Kind::Data,
        Error::UnknownAlgorithm { .. }
        | Error::LegacyAlgorithmRefused
        | Error::WeakRootSecret(_)
        | Error::Config { .. }
        | Error::InvalidColumnKey { .. }
        | Error::KmsUnsupported { .. } => Kind::Usage,
        _ => Kind::Other,
    }
}

/// Whether an integrity failure is the keystore's (or its audit log's), not a project's data:
/// `project verify` cannot help there.
fn is_keystore(what: &str) -> bool {
    ["keystore", "audit log"].iter().any(|p| what.starts_with(p))
}

fn hint_of(e: &Error) -> Option<String> {
    Some(match e {
        Error::WrongRootSecret { .. } => {
            "the keystore is opened with COLVAULT_PASSPHRASE if it is set, else with the root key \
             file (--root-key-file, COLVAULT_ROOT_KEY_FILE, default ~/.colvault/root.key); give the one it was \
             created with"
                .into()
        }
        Error::UnknownKey { .. } => "`colvault kms list` shows the keys of this keystore; check --keystore / \
             COLVAULT_KEYSTORE point at the keystore the data was written with"
            .into(),
        Error::KeyPendingDeletion { key, .. } => format!("colvault kms cancel-deletion {key}"),
        Error::InvalidKeyState(_) => "`colvault kms describe KEY_ID` shows the key's state and versions".into(),
        Error::KeysRequired { .. } => "the data is encrypted but the project's settings say it is not: the \
             catalog refuses a downgraded settings file, so this is a file read outside a project; open it through \
             its project (`--project PROJECT` on inspect)"
            .into(),
        Error::KeyNotAllowed { .. } | Error::AlgorithmMismatch { .. } => {
            "the file does not belong to this table (or was swapped for a downgraded one); restore it from a backup"
                .into()
        }
        Error::Integrity { what } if is_keystore(what) => "the keystore or its audit log was damaged or tampered \
             with: restore it from a backup, and check that --keystore / COLVAULT_KEYSTORE names the right file"
            .into(),
        Error::Integrity { .. } => "the data was damaged or tampered with: restore it from a backup; \
             `colvault project verify PROJECT` checks every file of every table"
            .into(),
        Error::NotColvault(_) => "colvault data files are the *.cvlt files under PROJECT/tables/TABLE_ID/data/ (`colvault catalog show PROJECT` lists the tables' ids)".into(),
        Error::SchemaMismatch(_) => "`colvault table schema PROJECT TABLE` shows the table's columns".into(),
        Error::LegacyAlgorithmRefused => "pass --allow-legacy-rc4 to write RC4 anyway, or choose aes256".into(),
        Error::SnapshotExpired { .. } => "another process changed the table meanwhile; run the command again".into(),
        Error::Downgrade { .. } | Error::SettingsRollback { .. } | Error::TableRollback { .. } => {
            "storage was altered: the catalog holds what to expect, so restore the project's files from a backup; \
             nothing was read or written"
                .into()
        }
        Error::KeystoreRollback { .. } => "an older copy of the keystore was restored: put the newest one back \
             (--keystore / COLVAULT_KEYSTORE)"
            .into(),
        Error::ColumnKeyUnavailable { source, .. } => return hint_of(source),
        Error::ColumnKeyMismatch { .. } => "a file or manifest of the table keeps a column under another key than the \
             catalog records (written by someone holding the project's key but not the column's): restore the table's \
             files from a backup"
            .into(),
        Error::InvalidColumnKey { .. } => "`colvault table schema PROJECT TABLE` (or the file's header) shows the \
             top-level columns; `colvault kms list` the keys"
            .into(),
        Error::NotRegistered { kind: "partition", .. } => {
            "`colvault table partitions PROJECT TABLE` lists the table's partitions".into()
        }
        Error::NotRegistered { .. } => "`colvault catalog list` shows the projects and tables the catalog knows".into(),
        _ => return None,
    })
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError {
            kind: kind_of(&e),
            message: e.to_string(),
            hint: hint_of(&e),
        }
    }
}

impl From<arrow::error::ArrowError> for CliError {
    fn from(e: arrow::error::ArrowError) -> Self {
        match e {
            arrow::error::ArrowError::ExternalError(inner) => match inner.downcast::<Error>() {
                Ok(e) => (*e).into(),
                Err(other) => CliError::data(format!("arrow: {other}")),
            },
            arrow::error::ArrowError::IoError(msg, _) => CliError::other(format!("I/O error: {msg}")),
            other => CliError::data(format!("arrow: {other}")),
        }
    }
}

impl From<parquet::errors::ParquetError> for CliError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        CliError::data(format!("parquet: {e}"))
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError::other(format!("JSON output: {e}"))
    }
}

/// An I/O error with what was being done.
pub fn io_err(context: impl fmt::Display, e: std::io::Error) -> CliError {
    CliError::other(format!("I/O error while {context}: {e}"))
}
