//! The colvault file layout, version 1. The normative description is `format-spec/file.md`.
//!
//! ```text
//! file    = MAGIC || chunk* || envelope || sealed body || trailer
//! trailer = u32 len(envelope) || u32 len(sealed body) || MAGIC
//! ```
//! Chunks are sealed column chunks (see [`crate::crypto::chunk`]) laid out in row-group order, leaf
//! columns in schema order, contiguous from byte 4. The envelope is plaintext but authenticated: it
//! is the associated data of the sealed body, together with the file length and the body length.
//! A reader checks that magic, chunks, envelope, body and trailer tile the file exactly.

pub mod envelope;
pub mod footer;
pub mod rewrap;
pub mod schema;
pub mod source;
pub mod stats;
pub mod thrift;

pub use envelope::{Envelope, KeyEntry, KeyRole};
pub use footer::{ChunkEntry, FooterBody, SealedStats};
pub use source::ReadAt;

/// The four bytes at the start and at the end of every colvault file.
pub const MAGIC: [u8; 4] = *b"CVLT";
/// The major format version this build writes and reads.
pub const VERSION_MAJOR: u8 = 1;
/// The minor format version this build writes (readers accept any minor of their major).
pub const VERSION_MINOR: u8 = 0;
/// Length of the trailer.
pub const TRAILER_LEN: usize = 12;
/// The largest envelope a reader accepts.
pub const MAX_ENVELOPE_LEN: usize = 1 << 20;
/// The largest sealed footer body a reader accepts.
pub const MAX_BODY_LEN: usize = 256 << 20;
