//! Sealing and opening column chunks: segmented AES-256-GCM, AES-256-CTR and RC4 with
//! encrypt-then-MAC, and checksummed plaintext.
//!
//! A chunk of `n` bytes is cut into segments of [`SEGMENT_LEN`] bytes (the last may be shorter; an
//! empty chunk is one empty segment). Each segment gets a tag; the sealed chunk is the ciphertext
//! followed by the tags in segment order, so sealing works in place and segments are processed in
//! parallel on rayon with output identical to one thread. The exact bytes are in
//! `format-spec/` ("Column chunks").
//!
//! Every segment's authenticated data binds the algorithm id, the file id, the column, the row
//! group, the chunk kind, the segment index and a last-segment flag, so a segment or chunk cannot be
//! moved, reordered, truncated or transplanted without the tag check failing.

mod column;
mod ctr;
mod layout;
mod opener;
mod sealer;
mod tag;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::error::Result;

pub use ctr::ctr_apply_parallel;
pub use layout::{plaintext_len, sealed_len, segment_count};
pub use opener::ChunkOpener;
pub use sealer::ChunkSealer;
pub(crate) use tag::blake3_tag;

/// Length of a segment: 1 MiB.
pub const SEGMENT_LEN: usize = 1 << 20;

/// A file's random 128-bit id. It is part of every key derivation and every AAD of the file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub [u8; 16]);

impl FileId {
    /// A fresh random id.
    pub fn random() -> Result<Self> {
        Ok(FileId(super::keys::random_array()?))
    }
    /// The id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.to_hex())
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What a sealed chunk holds. Part of every nonce and AAD, so the two kinds never share a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChunkKind {
    /// The column chunk's pages (dictionary and data).
    Data = 0,
    /// The column chunk's metadata that reveals values (statistics).
    Metadata = 1,
}
