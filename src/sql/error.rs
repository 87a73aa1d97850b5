//! Errors across the DataFusion boundary: colvault's errors travel inside
//! `DataFusionError::External` and come back out typed.

use std::sync::Arc;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::error::Error;

/// A colvault error as a DataFusion error (kept whole, so it comes back out typed).
pub(crate) fn to_df(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The colvault error a DataFusion error carries, or one that describes it.
pub(crate) fn from_df(e: DataFusionError) -> Error {
    if find(&e).is_some() {
        return take(e).unwrap_or_else(|e| sql_error(&e));
    }
    match e {
        DataFusionError::ArrowError(a, _) => Error::Arrow(a.to_string()),
        DataFusionError::ParquetError(p) => Error::Parquet(p.to_string()),
        DataFusionError::IoError(io) => Error::io("running a SQL statement", io),
        other => sql_error(&other),
    }
}

fn sql_error(e: &DataFusionError) -> Error {
    Error::InvalidArgument(format!("SQL: {e}"))
}

/// The colvault error inside `e`, by reference.
fn find(e: &DataFusionError) -> Option<&Error> {
    match e {
        DataFusionError::External(b) => b.downcast_ref::<Error>().or_else(|| {
            b.downcast_ref::<DataFusionError>()
                .and_then(find)
                .or_else(|| b.downcast_ref::<ArrowError>().and_then(find_arrow))
        }),
        DataFusionError::ArrowError(a, _) => find_arrow(a),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => find(inner),
        DataFusionError::Shared(inner) => find(inner),
        DataFusionError::Collection(v) => v.iter().find_map(find),
        _ => None,
    }
}

fn find_arrow(e: &ArrowError) -> Option<&Error> {
    match e {
        ArrowError::ExternalError(b) => b
            .downcast_ref::<Error>()
            .or_else(|| b.downcast_ref::<DataFusionError>().and_then(find)),
        _ => None,
    }
}

/// Moves the colvault error out of `e` (which [`find`] said holds one).
fn take(e: DataFusionError) -> std::result::Result<Error, DataFusionError> {
    match e {
        DataFusionError::External(b) => match b.downcast::<Error>() {
            Ok(e) => Ok(*e),
            Err(b) => match b.downcast::<DataFusionError>() {
                Ok(inner) => take(*inner),
                Err(b) => match b.downcast::<ArrowError>() {
                    Ok(a) => take_arrow(*a),
                    Err(b) => Err(DataFusionError::External(b)),
                },
            },
        },
        DataFusionError::ArrowError(a, _) => take_arrow(*a),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => take(*inner),
        DataFusionError::Shared(arc) => match Arc::try_unwrap(arc) {
            Ok(inner) => take(inner),
            // Others hold the same error (a repartition hands it to every consumer): a copy.
            Err(arc) => find(&arc).map(duplicate).ok_or(DataFusionError::Shared(arc)),
        },
        DataFusionError::Collection(v) => {
            let i = v.iter().position(|e| find(e).is_some()).unwrap_or(0);
            match v.into_iter().nth(i) {
                Some(e) => take(e),
                None => Err(DataFusionError::Collection(Vec::new())),
            }
        }
        other => Err(other),
    }
}

fn take_arrow(e: ArrowError) -> std::result::Result<Error, DataFusionError> {
    match e {
        ArrowError::ExternalError(b) => match b.downcast::<Error>() {
            Ok(e) => Ok(*e),
            Err(b) => match b.downcast::<DataFusionError>() {
                Ok(inner) => take(*inner),
                Err(b) => Err(DataFusionError::External(b)),
            },
        },
        other => Err(DataFusionError::ArrowError(Box::new(other), None)),
    }
}

/// A copy of an error held elsewhere: the same variant and fields (an I/O error keeps its kind
/// and message).
pub(crate) fn duplicate(e: &Error) -> Error {
    use Error::*;
    match e {
        UnknownAlgorithm { name } => UnknownAlgorithm { name: name.clone() },
        UnknownAlgorithmId { id } => UnknownAlgorithmId { id: *id },
        LegacyAlgorithmRefused => LegacyAlgorithmRefused,
        Integrity { what } => Integrity { what: what.clone() },
        Poisoned => Poisoned,
        NonceReuse { what } => NonceReuse { what: what.clone() },
        KeyLimit { what } => KeyLimit { what: what.clone() },
        KeyDisabled { key } => KeyDisabled { key: key.clone() },
        KeyPendingDeletion { key, until_unix_secs } => KeyPendingDeletion {
            key: key.clone(),
            until_unix_secs: *until_unix_secs,
        },
        KeyDeleted { key } => KeyDeleted { key: key.clone() },
        AccessDenied { principal, key } => AccessDenied {
            principal: principal.clone(),
            key: key.clone(),
        },
        UnknownKey { key } => UnknownKey { key: key.clone() },
        VersionDestroyed { key, version } => VersionDestroyed {
            key: key.clone(),
            version: *version,
        },
        InvalidKeyState(s) => InvalidKeyState(s.clone()),
        SnapshotExpired { table, version } => SnapshotExpired {
            table: table.clone(),
            version: *version,
        },
        InvalidArgument(s) => InvalidArgument(s.clone()),
        Malformed { what, detail } => Malformed {
            what,
            detail: detail.clone(),
        },
        NotColvault(s) => NotColvault(s.clone()),
        AlgorithmMismatch { expected, found } => AlgorithmMismatch {
            expected: expected.clone(),
            found: found.clone(),
        },
        KeyNotAllowed { key } => KeyNotAllowed { key: key.clone() },
        KeysRequired { algorithm } => KeysRequired {
            algorithm: algorithm.clone(),
        },
        SchemaMismatch(s) => SchemaMismatch(s.clone()),
        Parquet(s) => Parquet(s.clone()),
        Arrow(s) => Arrow(s.clone()),
        Io { context, source } => Io {
            context: context.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Storage {
            context,
            message,
            retriable,
        } => Storage {
            context: context.clone(),
            message: message.clone(),
            retriable: *retriable,
        },
        Catalog {
            catalog,
            detail,
            retriable,
        } => Catalog {
            catalog: catalog.clone(),
            detail: detail.clone(),
            retriable: *retriable,
        },
        NotRegistered { kind, name, hint } => NotRegistered {
            kind,
            name: name.clone(),
            hint: hint.clone(),
        },
        KmsService {
            kms,
            operation,
            detail,
            retriable,
        } => KmsService {
            kms: kms.clone(),
            operation: operation.clone(),
            detail: detail.clone(),
            retriable: *retriable,
        },
        // The rest are never raised by a scan or a commit; their message is kept.
        other => InvalidArgument(other.to_string()),
    }
}
