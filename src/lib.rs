//! colvault: a columnar table format with encryption built in.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod codec;
pub mod crypto;
pub mod error;

pub use error::{Error, Result};
