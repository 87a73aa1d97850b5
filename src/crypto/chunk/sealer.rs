//! [`ChunkSealer`]: seals each chunk position of one column once, and is poisoned by a failure.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use zeroize::Zeroize;

use super::column::ColumnKeys;
use super::{ChunkKind, FileId};
use crate::crypto::algorithm::Algorithm;
use crate::crypto::keys::SecretKey;
use crate::crypto::provider::{default_provider, CipherProvider};
use crate::error::{Error, Result};

/// Seals the chunks of one column of one file. Each (row group, kind) position can be sealed once:
/// sealing it again would reuse a nonce and is refused. A sealer that fails is poisoned and refuses
/// all further work, so a failed write is never retried under the same data key.
///
/// A sealer draws its own random file id, which every key and nonce it uses is derived from, so two
/// sealers never share a (key, nonce) pair even when handed the same data key and column. Open what
/// it sealed with a [`ChunkOpener`](super::ChunkOpener) for [`file_id`](Self::file_id).
///
/// ```
/// use colvault::crypto::{Algorithm, ChunkKind, ChunkOpener, ChunkSealer, SecretKey};
/// let dek = SecretKey::generate()?;
/// let sealer = ChunkSealer::new(Algorithm::Aes256Gcm, &dek, 0)?;
/// let mut chunk = b"column bytes".to_vec();
/// sealer.seal(0, ChunkKind::Data, &mut chunk)?;
/// let opener = ChunkOpener::new(Algorithm::Aes256Gcm, &dek, sealer.file_id(), 0)?;
/// opener.open(0, ChunkKind::Data, &mut chunk)?;
/// assert_eq!(chunk, b"column bytes");
/// # Ok::<(), colvault::Error>(())
/// ```
///
/// A caller cannot choose the file id, so cannot make two sealers that reuse nonces:
/// ```compile_fail,E0061
/// use colvault::crypto::{Algorithm, ChunkSealer, FileId, SecretKey};
/// let dek = SecretKey::generate().unwrap();
/// let a = ChunkSealer::for_file(default_provider(), Algorithm::Aes256Gcm, &dek, FileId([1; 16]), 0);
/// ```
/// ```compile_fail,E0624
/// use colvault::crypto::{default_provider, Algorithm, ChunkSealer, FileId, SecretKey};
/// let dek = SecretKey::generate().unwrap();
/// let a = ChunkSealer::for_file(default_provider(), Algorithm::Aes256Gcm, &dek, FileId([1; 16]), 0);
/// ```
pub struct ChunkSealer {
    keys: ColumnKeys,
    sealed: Mutex<HashSet<(u32, u8)>>,
    poisoned: AtomicBool,
}

impl fmt::Debug for ChunkSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSealer")
            .field("algorithm", &self.keys.algorithm)
            .field("file_id", &self.keys.file_id)
            .field("column", &self.keys.column)
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl ChunkSealer {
    /// A sealer for column `column` of a new file with a fresh random id, whose keys derive from
    /// `dek` and that id.
    pub fn new(algorithm: Algorithm, dek: &SecretKey, column: u32) -> Result<Self> {
        Self::with_provider(default_provider(), algorithm, dek, column)
    }

    /// The same, with an explicit AES provider.
    pub fn with_provider(
        provider: &dyn CipherProvider,
        algorithm: Algorithm,
        dek: &SecretKey,
        column: u32,
    ) -> Result<Self> {
        Self::for_file(provider, algorithm, dek, FileId::random()?, column)
    }

    /// A sealer for column `column` of file `file_id`. Crate-private: the file writer (and test
    /// vectors) choose the id of the file they write, once per file and fresh DEK, with one
    /// sealer per column.
    pub(crate) fn for_file(
        provider: &dyn CipherProvider,
        algorithm: Algorithm,
        dek: &SecretKey,
        file_id: FileId,
        column: u32,
    ) -> Result<Self> {
        Ok(ChunkSealer {
            keys: ColumnKeys::new(provider, algorithm, dek, file_id, column)?,
            sealed: Mutex::new(HashSet::new()),
            poisoned: AtomicBool::new(false),
        })
    }

    /// The id of the file this sealer seals for (what a [`ChunkOpener`] needs).
    pub fn file_id(&self) -> FileId {
        self.keys.file_id
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.keys.algorithm
    }

    /// Whether an earlier failure poisoned this sealer.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Seals `buf` in place: encrypts it and appends the segment tags.
    pub fn seal(&self, row_group: u32, kind: ChunkKind, buf: &mut Vec<u8>) -> Result<()> {
        let tags = self.seal_detached(row_group, kind, buf)?;
        buf.extend_from_slice(&tags);
        Ok(())
    }

    /// Encrypts `data` in place and returns the segment tags, to be stored right after it.
    pub fn seal_detached(&self, row_group: u32, kind: ChunkKind, data: &mut [u8]) -> Result<Vec<u8>> {
        let parallel = data.len() > self.keys.seg_len;
        self.seal_with(row_group, kind, data, parallel)
    }

    /// [`seal_detached`](Self::seal_detached) on the calling thread only (never on rayon): for
    /// code that runs beside rayon tasks it must not queue behind.
    pub fn seal_detached_here(&self, row_group: u32, kind: ChunkKind, data: &mut [u8]) -> Result<Vec<u8>> {
        self.seal_with(row_group, kind, data, false)
    }

    fn seal_with(&self, row_group: u32, kind: ChunkKind, data: &mut [u8], parallel: bool) -> Result<Vec<u8>> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let fresh = self
            .sealed
            .lock()
            .map_err(|_| Error::Poisoned)?
            .insert((row_group, kind as u8));
        if !fresh {
            return Err(Error::NonceReuse {
                what: self.keys.describe(row_group, kind),
            });
        }
        self.keys.seal(row_group, kind, data, parallel).inspect_err(|_| {
            self.poisoned.store(true, Ordering::SeqCst);
            data.zeroize();
        })
    }
}
