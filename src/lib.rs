#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod access;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod error;
pub mod format;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod kms;
pub mod project;
pub mod read;
pub mod sample;
#[cfg(feature = "datafusion")]
pub mod sql;
pub mod storage;
pub mod table;
pub mod write;

pub use access::KeyAccess;
pub use crypto::Algorithm;
pub use error::{ColumnKeyProblem, Error, Result};
pub use read::{BatchReader, CmpOp, FileReader, Predicate, ReaderOptions, ScanBuilder};
pub use write::{Compression, FileMetadata, FileWriter, WriterOptions, WriterOptionsBuilder};
