//! [`ChunkOpener`]: verifies and decrypts the chunks of one column, whole or a segment at a time.

use std::fmt;

use zeroize::Zeroize;

use super::column::{Cipher, ColumnKeys};
use super::layout::plaintext_len_with;
use super::{ChunkKind, FileId};
use crate::crypto::algorithm::Algorithm;
use crate::crypto::keys::SecretKey;
use crate::crypto::provider::{default_provider, CipherProvider};
use crate::error::{Error, Result};

/// Opens the chunks of one column of one file.
pub struct ChunkOpener {
    keys: ColumnKeys,
}

impl fmt::Debug for ChunkOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkOpener")
            .field("algorithm", &self.keys.algorithm)
            .field("file_id", &self.keys.file_id)
            .field("column", &self.keys.column)
            .finish_non_exhaustive()
    }
}

impl ChunkOpener {
    /// An opener for column `column` of file `file_id`, whose keys derive from `dek`.
    pub fn new(algorithm: Algorithm, dek: &SecretKey, file_id: FileId, column: u32) -> Result<Self> {
        Self::with_provider(default_provider(), algorithm, dek, file_id, column)
    }

    /// The same, with an explicit AES provider.
    pub fn with_provider(
        provider: &dyn CipherProvider,
        algorithm: Algorithm,
        dek: &SecretKey,
        file_id: FileId,
        column: u32,
    ) -> Result<Self> {
        Ok(ChunkOpener {
            keys: ColumnKeys::new(provider, algorithm, dek, file_id, column)?,
        })
    }

    /// Verifies a sealed chunk and decrypts it in place, dropping the tags. Nothing is decrypted
    /// before every tag has been checked (GCM checks each segment's tag as it decrypts it; on any
    /// failure the whole buffer is wiped), and a failure is an [`Error::Integrity`] naming the chunk.
    pub fn open(&self, row_group: u32, kind: ChunkKind, buf: &mut Vec<u8>) -> Result<()> {
        self.open_with(row_group, kind, buf, true)
    }

    /// [`open`](Self::open) on the calling thread only (never on rayon): for callers that already
    /// run one task per chunk, and for code that must not wait on other rayon jobs.
    pub fn open_here(&self, row_group: u32, kind: ChunkKind, buf: &mut Vec<u8>) -> Result<()> {
        self.open_with(row_group, kind, buf, false)
    }

    fn open_with(&self, row_group: u32, kind: ChunkKind, buf: &mut Vec<u8>, may_split: bool) -> Result<()> {
        let n = plaintext_len_with(self.keys.algorithm.tag_len(), self.keys.seg_len, buf.len()).ok_or_else(|| {
            buf.zeroize();
            Error::integrity(self.keys.describe(row_group, kind))
        })?;
        let (data, tags) = buf.split_at_mut(n);
        let parallel = may_split && n > self.keys.seg_len;
        if let Err(e) = self.keys.open(row_group, kind, data, tags, parallel) {
            buf.zeroize();
            return Err(e);
        }
        buf.truncate(n);
        Ok(())
    }

    /// Whether [`open_segment`](Self::open_segment) can open a segment on its own: every algorithm
    /// but RC4, whose keystream runs over the whole chunk.
    pub fn opens_segments(&self) -> bool {
        !matches!(self.keys.cipher, Cipher::Rc4 { .. })
    }

    /// Verifies and decrypts, in place, segment `index` of a chunk of `plain_len` plaintext bytes
    /// against its `tag`, for readers that open a chunk a segment at a time as they need it. The
    /// segment must be exactly its full length (the chunk's length fixes it). On failure `seg` is
    /// wiped and the error is an [`Error::Integrity`] naming the chunk.
    pub fn open_segment(
        &self,
        row_group: u32,
        kind: ChunkKind,
        plain_len: usize,
        index: u32,
        seg: &mut [u8],
        tag: &[u8],
    ) -> Result<()> {
        let keys = &self.keys;
        let count = keys.check_segment_count(plain_len)?;
        let start = index as usize * keys.seg_len;
        let fits = index < count
            && seg.len() == keys.seg_len.min(plain_len - start.min(plain_len))
            && tag.len() == keys.algorithm.tag_len();
        let result = if fits {
            keys.open_segment(row_group, kind, index, index + 1 == count, seg, tag)
        } else {
            Err(Error::integrity("segment"))
        };
        result.map_err(|_| {
            seg.zeroize();
            Error::integrity(keys.describe(row_group, kind))
        })
    }

    /// Verifies and decrypts `data` in place against its detached `tags`.
    pub fn open_detached(&self, row_group: u32, kind: ChunkKind, data: &mut [u8], tags: &[u8]) -> Result<()> {
        let parallel = data.len() > self.keys.seg_len;
        self.keys.open(row_group, kind, data, tags, parallel)
    }
}
