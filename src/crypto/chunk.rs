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

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use zeroize::{Zeroize, Zeroizing};

use super::algorithm::Algorithm;
use super::kdf::{derive_key, Purpose};
use super::keys::{ct_eq, SecretKey, KEY_LEN};
use super::provider::{default_provider, CipherProvider, CtrKey, GcmKey, GCM_TAG_LEN};
use super::rc4;
use crate::error::{Error, Result};

/// Length of a segment: 1 MiB.
pub const SEGMENT_LEN: usize = 1 << 20;

/// Sealing with AES-CTR encrypts and MACs a segment in pieces of this many bytes (a multiple of the
/// AES block), so the MAC reads each piece from cache rather than memory.
const FUSED_PIECE: usize = 32 << 10;

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

/// The number of segments of a chunk of `n` plaintext bytes (at least one).
pub const fn segment_count(n: usize) -> usize {
    if n == 0 {
        1
    } else {
        n.div_ceil(SEGMENT_LEN)
    }
}

/// The sealed length of a chunk of `n` plaintext bytes.
pub const fn sealed_len(algorithm: Algorithm, n: usize) -> usize {
    n + segment_count(n) * algorithm.tag_len()
}

/// The plaintext length of a sealed chunk of `sealed` bytes, or an error if no plaintext length
/// seals to exactly that many bytes.
pub fn plaintext_len(algorithm: Algorithm, sealed: usize) -> Result<usize> {
    plaintext_len_with(algorithm.tag_len(), SEGMENT_LEN, sealed)
        .ok_or_else(|| Error::integrity(format!("chunk length ({sealed} bytes is not a valid sealed length)")))
}

fn plaintext_len_with(tag: usize, seg: usize, sealed: usize) -> Option<usize> {
    let full = seg + tag;
    let (q, r) = (sealed / full, sealed % full);
    match (q, r) {
        (0, r) if r == tag => Some(0),
        (q, 0) if q > 0 => Some(q * seg),
        (q, r) if r > tag => Some(q * seg + r - tag),
        _ => None,
    }
}

/// The encrypt-then-MAC tag (keyed) or checksum (unkeyed) of one segment or footer body:
/// BLAKE3(u64 len(AAD) || AAD || u64 len(C) || C).
pub(crate) fn blake3_tag(key: Option<&[u8; KEY_LEN]>, aad: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = zeroize::Zeroizing::new(match key {
        Some(k) => blake3::Hasher::new_keyed(k),
        None => blake3::Hasher::new(),
    });
    h.update(&(aad.len() as u64).to_be_bytes());
    h.update(aad);
    h.update(&(data.len() as u64).to_be_bytes());
    h.update(data);
    *h.finalize().as_bytes()
}

/// Checks a segment's BLAKE3 tag (see [`blake3_tag`]) in constant time.
fn check_blake3_tag(key: Option<&[u8; KEY_LEN]>, aad: &[u8], data: &[u8], tag: &[u8]) -> Result<()> {
    if ct_eq(&blake3_tag(key, aad, data), tag) {
        Ok(())
    } else {
        Err(Error::integrity("segment"))
    }
}

/// The per-column keys of one algorithm.
enum Cipher {
    None,
    Gcm(Box<dyn GcmKey>),
    Ctr {
        enc: Box<dyn CtrKey>,
        mac: Zeroizing<[u8; KEY_LEN]>,
    },
    Rc4 {
        chunk_root: SecretKey,
        mac: Zeroizing<[u8; KEY_LEN]>,
    },
}

/// Everything needed to seal or open the chunks of one column of one file.
struct ColumnKeys {
    algorithm: Algorithm,
    file_id: FileId,
    column: u32,
    cipher: Cipher,
    seg_len: usize,
}

fn mac_key(dek: &SecretKey, file_id: &FileId, column: u32) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let k = derive_key(dek, Purpose::MacColumnKey, &[&file_id.0, &column.to_be_bytes()])?;
    Ok(Zeroizing::new(*k.expose()))
}

impl ColumnKeys {
    fn new(
        provider: &dyn CipherProvider,
        algorithm: Algorithm,
        dek: &SecretKey,
        file_id: FileId,
        column: u32,
    ) -> Result<Self> {
        let ctx: [&[u8]; 2] = [&file_id.0, &column.to_be_bytes()];
        let cipher = match algorithm {
            Algorithm::None => Cipher::None,
            Algorithm::Aes256Gcm => Cipher::Gcm(provider.aes256_gcm(&derive_key(dek, Purpose::GcmColumnKey, &ctx)?)?),
            Algorithm::Aes256Ctr => Cipher::Ctr {
                enc: provider.aes256_ctr(&derive_key(dek, Purpose::CtrColumnKey, &ctx)?)?,
                mac: mac_key(dek, &file_id, column)?,
            },
            Algorithm::Rc4 => Cipher::Rc4 {
                chunk_root: derive_key(dek, Purpose::Rc4ColumnRoot, &ctx)?,
                mac: mac_key(dek, &file_id, column)?,
            },
        };
        Ok(ColumnKeys {
            algorithm,
            file_id,
            column,
            cipher,
            seg_len: SEGMENT_LEN,
        })
    }

    fn describe(&self, row_group: u32, kind: ChunkKind) -> String {
        format!(
            "column {} row group {} {} chunk of file {}",
            self.column,
            row_group,
            match kind {
                ChunkKind::Data => "data",
                ChunkKind::Metadata => "metadata",
            },
            self.file_id
        )
    }

    /// AAD of one segment: alg id (1) || file id (16) || column (4) || row group (4) || kind (1) ||
    /// segment index (4) || last flag (1).
    fn aad(&self, row_group: u32, kind: ChunkKind, segment: u32, last: bool) -> [u8; 31] {
        let mut a = [0u8; 31];
        a[0] = self.algorithm.id();
        a[1..17].copy_from_slice(&self.file_id.0);
        a[17..21].copy_from_slice(&self.column.to_be_bytes());
        a[21..25].copy_from_slice(&row_group.to_be_bytes());
        a[25] = kind as u8;
        a[26..30].copy_from_slice(&segment.to_be_bytes());
        a[30] = last as u8;
        a
    }

    fn counter_block(row_group: u32, kind: ChunkKind, block: u64) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0..4].copy_from_slice(&row_group.to_be_bytes());
        c[4] = kind as u8;
        c[8..16].copy_from_slice(&block.to_be_bytes());
        c
    }

    fn gcm_nonce(row_group: u32, kind: ChunkKind, segment: u32) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[0..4].copy_from_slice(&row_group.to_be_bytes());
        n[4] = kind as u8;
        n[8..12].copy_from_slice(&segment.to_be_bytes());
        n
    }

    fn rc4_chunk_key(root: &SecretKey, row_group: u32, kind: ChunkKind) -> Result<SecretKey> {
        derive_key(root, Purpose::Rc4ChunkKey, &[&row_group.to_be_bytes(), &[kind as u8]])
    }

    /// Runs `f(segment index, segment, tag)` over every segment, in parallel if asked.
    fn for_each_segment<F>(&self, data: &mut [u8], tags: &mut [u8], parallel: bool, f: F) -> Result<()>
    where
        F: Fn(u32, &mut [u8], &mut [u8]) -> Result<()> + Send + Sync,
    {
        let t = self.algorithm.tag_len();
        if data.is_empty() {
            return f(0, data, &mut tags[..t]);
        }
        if parallel {
            data.par_chunks_mut(self.seg_len)
                .zip(tags.par_chunks_mut(t))
                .enumerate()
                .try_for_each(|(i, (seg, tag))| f(i as u32, seg, tag))
        } else {
            data.chunks_mut(self.seg_len)
                .zip(tags.chunks_mut(t))
                .enumerate()
                .try_for_each(|(i, (seg, tag))| f(i as u32, seg, tag))
        }
    }

    fn segments(&self, n: usize) -> usize {
        if n == 0 {
            1
        } else {
            n.div_ceil(self.seg_len)
        }
    }

    fn check_segment_count(&self, n: usize) -> Result<u32> {
        u32::try_from(self.segments(n))
            .map_err(|_| Error::InvalidArgument("a chunk has more than 2^32 segments".into()))
    }

    fn seal(&self, row_group: u32, kind: ChunkKind, data: &mut [u8], parallel: bool) -> Result<Vec<u8>> {
        let k = self.check_segment_count(data.len())?;
        let t = self.algorithm.tag_len();
        let mut tags = vec![0u8; k as usize * t];
        let last = k - 1;
        let blocks_per_seg = (self.seg_len / 16) as u64;
        match &self.cipher {
            Cipher::None => self.for_each_segment(data, &mut tags, parallel, |i, seg, tag| {
                tag.copy_from_slice(&blake3_tag(None, &self.aad(row_group, kind, i, i == last), seg));
                Ok(())
            })?,
            Cipher::Gcm(key) => self.for_each_segment(data, &mut tags, parallel, |i, seg, tag| {
                let aad = self.aad(row_group, kind, i, i == last);
                tag.copy_from_slice(&key.seal_in_place(&Self::gcm_nonce(row_group, kind, i), &aad, seg)?);
                Ok(())
            })?,
            Cipher::Ctr { enc, mac } => self.for_each_segment(data, &mut tags, parallel, |i, seg, tag| {
                // Encrypt and MAC in cache-sized pieces, so each piece is hashed while it is still in
                // cache. The MAC input is the same as [`Self::blake3_tag`]'s.
                let aad = self.aad(row_group, kind, i, i == last);
                let mut h = zeroize::Zeroizing::new(blake3::Hasher::new_keyed(mac));
                h.update(&(aad.len() as u64).to_be_bytes()).update(&aad);
                h.update(&(seg.len() as u64).to_be_bytes());
                let base = i as u64 * blocks_per_seg;
                for (j, piece) in seg.chunks_mut(FUSED_PIECE).enumerate() {
                    let block = base + (j * FUSED_PIECE / 16) as u64;
                    enc.apply_keystream(&Self::counter_block(row_group, kind, block), piece)?;
                    h.update(piece);
                }
                tag.copy_from_slice(h.finalize().as_bytes());
                Ok(())
            })?,
            Cipher::Rc4 { chunk_root, mac } => {
                rc4::apply_keystream(&Self::rc4_chunk_key(chunk_root, row_group, kind)?, data)?;
                self.for_each_segment(data, &mut tags, parallel, |i, seg, tag| {
                    tag.copy_from_slice(&blake3_tag(Some(mac), &self.aad(row_group, kind, i, i == last), seg));
                    Ok(())
                })?
            }
        }
        Ok(tags)
    }

    /// Verifies and decrypts. On any failure `data` is wiped, so no unverified plaintext escapes.
    fn open(&self, row_group: u32, kind: ChunkKind, data: &mut [u8], tags: &[u8], parallel: bool) -> Result<()> {
        let k = self.check_segment_count(data.len())?;
        let t = self.algorithm.tag_len();
        if tags.len() != k as usize * t {
            return Err(Error::integrity(self.describe(row_group, kind)));
        }
        let result = self.open_inner(row_group, kind, data, tags, parallel, k - 1);
        if result.is_err() {
            data.zeroize();
            return Err(Error::integrity(self.describe(row_group, kind)));
        }
        result
    }

    /// Opens one segment (not RC4). The caller wipes `seg` on failure.
    fn open_segment(
        &self,
        row_group: u32,
        kind: ChunkKind,
        i: u32,
        last: bool,
        seg: &mut [u8],
        tag: &[u8],
    ) -> Result<()> {
        let aad = self.aad(row_group, kind, i, last);
        match &self.cipher {
            Cipher::None => check_blake3_tag(None, &aad, seg, tag),
            Cipher::Gcm(key) => {
                let tag: &[u8; GCM_TAG_LEN] = tag.try_into().map_err(|_| Error::integrity("tag"))?;
                key.open_in_place(&Self::gcm_nonce(row_group, kind, i), &aad, seg, tag)
            }
            Cipher::Ctr { enc, mac } => {
                check_blake3_tag(Some(mac), &aad, seg, tag)?;
                let block = i as u64 * (self.seg_len / 16) as u64;
                enc.apply_keystream(&Self::counter_block(row_group, kind, block), seg)
            }
            Cipher::Rc4 { .. } => Err(Error::InvalidArgument(
                "RC4 chunks are opened whole: its keystream runs over the chunk".into(),
            )),
        }
    }

    fn open_inner(
        &self,
        row_group: u32,
        kind: ChunkKind,
        data: &mut [u8],
        tags: &[u8],
        parallel: bool,
        last: u32,
    ) -> Result<()> {
        let t = self.algorithm.tag_len();
        let mut tag_copy = tags.to_vec();
        let verify_blake3 = |key: Option<&[u8; KEY_LEN]>, data: &mut [u8], tag_copy: &mut [u8]| {
            self.for_each_segment(data, tag_copy, parallel, |i, seg, tag| {
                check_blake3_tag(key, &self.aad(row_group, kind, i, i == last), seg, tag)
            })
        };
        match &self.cipher {
            Cipher::None => verify_blake3(None, data, &mut tag_copy),
            Cipher::Gcm(_) => self.for_each_segment(data, &mut tag_copy, parallel, |i, seg, tag| {
                self.open_segment(row_group, kind, i, i == last, seg, tag)
            }),
            Cipher::Ctr { enc, mac } => {
                verify_blake3(Some(mac), data, &mut tag_copy)?;
                let blocks_per_seg = (self.seg_len / 16) as u64;
                let mut dummy = vec![0u8; tags.len()];
                debug_assert_eq!(dummy.len() % t, 0);
                self.for_each_segment(data, &mut dummy, parallel, |i, seg, _| {
                    enc.apply_keystream(&Self::counter_block(row_group, kind, i as u64 * blocks_per_seg), seg)
                })
            }
            Cipher::Rc4 { chunk_root, mac } => {
                verify_blake3(Some(mac), data, &mut tag_copy)?;
                rc4::apply_keystream(&Self::rc4_chunk_key(chunk_root, row_group, kind)?, data)
            }
        }
    }
}

/// Seals the chunks of one column of one file. Each (row group, kind) position can be sealed once:
/// sealing it again would reuse a nonce and is refused. A sealer that fails is poisoned and refuses
/// all further work, so a failed write is never retried under the same data key.
///
/// A sealer draws its own random file id, which every key and nonce it uses is derived from, so two
/// sealers never share a (key, nonce) pair even when handed the same data key and column. Open what
/// it sealed with a [`ChunkOpener`] for [`file_id`](Self::file_id).
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

/// Applies the AES-256-CTR keystream starting at `counter` to `buf`, in slices of `slice_len` bytes
/// (a multiple of 16) run on rayon. The output is identical to one call over the whole buffer.
pub fn ctr_apply_parallel(key: &dyn CtrKey, counter: &[u8; 16], buf: &mut [u8], slice_len: usize) -> Result<()> {
    if slice_len == 0 || !slice_len.is_multiple_of(16) {
        return Err(Error::InvalidArgument(
            "the CTR slice length must be a non-zero multiple of 16".into(),
        ));
    }
    let base = u128::from_be_bytes(*counter);
    buf.par_chunks_mut(slice_len).enumerate().try_for_each(|(i, slice)| {
        let c = base.wrapping_add((i * slice_len / 16) as u128);
        key.apply_keystream(&c.to_be_bytes(), slice)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(alg: Algorithm, dek: &SecretKey, seg: usize) -> ColumnKeys {
        let mut k = ColumnKeys::new(default_provider(), alg, dek, FileId([3; 16]), 7).unwrap();
        k.seg_len = seg;
        k
    }

    #[test]
    fn length_arithmetic() {
        for tag in [16usize, 32] {
            for seg in [16usize, 64, 1 << 20] {
                for n in [0usize, 1, 15, 16, 17, 63, 64, 65, 128, 1000, 3 * seg, 3 * seg + 1] {
                    let k = if n == 0 { 1 } else { n.div_ceil(seg) };
                    let sealed = n + k * tag;
                    assert_eq!(
                        plaintext_len_with(tag, seg, sealed),
                        Some(n),
                        "tag {tag} seg {seg} n {n}"
                    );
                }
                for bad in [0usize, 1, tag - 1, tag + seg + tag - 1] {
                    if bad != tag && (bad < tag || bad % (seg + tag) <= tag && bad % (seg + tag) != 0) {
                        assert_eq!(plaintext_len_with(tag, seg, bad), None, "tag {tag} seg {seg} bad {bad}");
                    }
                }
            }
        }
    }

    #[test]
    fn round_trip_each_algorithm_and_size() {
        let dek = SecretKey::generate().unwrap();
        for alg in Algorithm::ALL {
            for n in [0usize, 1, 31, 64, 65, 1000] {
                let k = keys(alg, &dek, 64);
                let plain: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
                let mut data = plain.clone();
                let tags = k.seal(2, ChunkKind::Data, &mut data, false).unwrap();
                assert_eq!(tags.len(), k.segments(n) * alg.tag_len());
                if alg.is_encrypted() && n > 8 {
                    assert_ne!(data, plain, "{alg} encrypts");
                }
                k.open(2, ChunkKind::Data, &mut data, &tags, false).unwrap();
                assert_eq!(data, plain, "{alg} n={n}");
            }
        }
    }

    /// Opening a chunk segment by segment gives the same plaintext as opening it whole; a flipped
    /// byte fails exactly its segment; a tag, index or length that is not the segment's fails.
    #[test]
    fn segments_open_one_at_a_time() {
        let dek = SecretKey::generate().unwrap();
        let file = FileId([9; 16]);
        let n = 2 * SEGMENT_LEN + 1234;
        let plain: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        for alg in Algorithm::ALL {
            let sealer = ChunkSealer::for_file(default_provider(), alg, &dek, file, 4).unwrap();
            let opener = ChunkOpener::new(alg, &dek, file, 4).unwrap();
            let mut sealed = plain.clone();
            let tags = sealer.seal_detached(6, ChunkKind::Data, &mut sealed).unwrap();
            if alg == Algorithm::Rc4 {
                assert!(!opener.opens_segments());
                let mut seg = sealed[..SEGMENT_LEN].to_vec();
                assert!(opener
                    .open_segment(6, ChunkKind::Data, n, 0, &mut seg, &tags[..32])
                    .is_err());
                continue;
            }
            assert!(opener.opens_segments(), "{alg}");
            let t = alg.tag_len();
            let seg_of = |i: usize| (i * SEGMENT_LEN, ((i + 1) * SEGMENT_LEN).min(n));
            for i in 0..3 {
                let (a, b) = seg_of(i);
                let mut seg = sealed[a..b].to_vec();
                opener
                    .open_segment(6, ChunkKind::Data, n, i as u32, &mut seg, &tags[i * t..(i + 1) * t])
                    .unwrap();
                assert_eq!(seg, plain[a..b], "{alg} segment {i}");

                let mut flipped = sealed[a..b].to_vec();
                flipped[17] ^= 1;
                let e = opener.open_segment(6, ChunkKind::Data, n, i as u32, &mut flipped, &tags[i * t..(i + 1) * t]);
                assert!(
                    matches!(e, Err(Error::Integrity { .. })),
                    "{alg} flipped segment {i}: {e:?}"
                );
                assert!(flipped.iter().all(|&x| x == 0), "{alg}: a failed segment is wiped");
            }
            // Segment 1's bytes under segment 0's tag, as segment 0, and as the last segment; a
            // short segment, an index past the end, another row group.
            let fails = |rg: u32, plain_len: usize, index: u32, bytes: &[u8], tag: &[u8]| {
                let mut seg = bytes.to_vec();
                opener
                    .open_segment(rg, ChunkKind::Data, plain_len, index, &mut seg, tag)
                    .is_err()
            };
            let (a, b) = seg_of(1);
            let (seg1, tag0, tag1) = (&sealed[a..b], &tags[..t], &tags[t..2 * t]);
            assert!(fails(6, n, 1, seg1, tag0), "{alg}: another segment's tag");
            assert!(fails(6, n, 0, seg1, tag1), "{alg}: another index");
            assert!(fails(6, 2 * SEGMENT_LEN, 1, seg1, tag1), "{alg}: as the last segment");
            assert!(fails(6, n, 1, &seg1[..seg1.len() - 1], tag1), "{alg}: a short segment");
            assert!(fails(6, n, 3, seg1, tag1), "{alg}: an index past the end");
            assert!(fails(7, n, 1, seg1, tag1), "{alg}: another row group");
            assert!(!fails(6, n, 1, seg1, tag1), "{alg}: the segment itself opens");
        }
    }

    /// Large chunks with the real segment length: several segments, and CTR's fused pieces (sealed in
    /// pieces, verified in one pass), round trip for every algorithm.
    #[test]
    fn multi_segment_round_trip() {
        let dek = SecretKey::generate().unwrap();
        let n = 2 * SEGMENT_LEN + SEGMENT_LEN / 2 + 5;
        let plain: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        for alg in Algorithm::ALL {
            let sealer = ChunkSealer::for_file(default_provider(), alg, &dek, FileId([9; 16]), 1).unwrap();
            let opener = ChunkOpener::new(alg, &dek, FileId([9; 16]), 1).unwrap();
            let mut buf = plain.clone();
            sealer.seal(4, ChunkKind::Data, &mut buf).unwrap();
            assert_eq!(buf.len(), sealed_len(alg, n));
            opener.open(4, ChunkKind::Data, &mut buf).unwrap();
            assert!(buf == plain, "{alg}");
        }
    }

    /// Any flipped bit of ciphertext or tag fails to open, for every algorithm, and the buffer
    /// handed back is wiped.
    #[test]
    fn every_bit_flip_fails() {
        let dek = SecretKey::generate().unwrap();
        for alg in Algorithm::ALL {
            let opener = ChunkOpener::new(alg, &dek, FileId([1; 16]), 0).unwrap();
            let sealer = ChunkSealer::for_file(default_provider(), alg, &dek, FileId([1; 16]), 0).unwrap();
            let mut sealed = b"0123456789abcdefghij-some column bytes".to_vec();
            sealer.seal(0, ChunkKind::Data, &mut sealed).unwrap();
            for bit in 0..sealed.len() * 8 {
                let mut c = sealed.clone();
                c[bit / 8] ^= 1 << (bit % 8);
                let err = opener.open(0, ChunkKind::Data, &mut c).unwrap_err();
                assert!(matches!(err, Error::Integrity { .. }), "{alg} bit {bit}: {err}");
                assert!(
                    c.is_empty(),
                    "{alg}: the buffer is wiped and emptied after a failed open"
                );
            }
            // Truncation and extension.
            for cut in 0..sealed.len() {
                let mut c = sealed[..cut].to_vec();
                assert!(opener.open(0, ChunkKind::Data, &mut c).is_err(), "{alg} cut {cut}");
            }
            let mut c = sealed.clone();
            c.push(0);
            assert!(opener.open(0, ChunkKind::Data, &mut c).is_err());
            let mut c = sealed.clone();
            opener.open(0, ChunkKind::Data, &mut c).unwrap();
        }
    }

    /// A chunk cannot be moved to another position, kind, column or file, nor opened with another
    /// algorithm or DEK.
    #[test]
    fn binding() {
        let dek = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        for alg in Algorithm::ALL {
            let sealer = ChunkSealer::for_file(default_provider(), alg, &dek, FileId([1; 16]), 4).unwrap();
            let mut sealed = vec![42u8; 100];
            sealer.seal(3, ChunkKind::Data, &mut sealed).unwrap();
            let same = ChunkOpener::new(alg, &dek, FileId([1; 16]), 4).unwrap();
            let mut c = sealed.clone();
            same.open(3, ChunkKind::Data, &mut c).unwrap();
            let try_open = |o: &ChunkOpener, rg, kind| {
                let mut c = sealed.clone();
                o.open(rg, kind, &mut c).is_err()
            };
            assert!(try_open(&same, 2, ChunkKind::Data), "{alg}: other row group");
            assert!(try_open(&same, 3, ChunkKind::Metadata), "{alg}: other kind");
            for o in [
                ChunkOpener::new(alg, &dek, FileId([1; 16]), 5).unwrap(),
                ChunkOpener::new(alg, &dek, FileId([2; 16]), 4).unwrap(),
            ] {
                assert!(try_open(&o, 3, ChunkKind::Data), "{alg}: other column or file");
            }
            if alg.is_encrypted() {
                let o = ChunkOpener::new(alg, &other, FileId([1; 16]), 4).unwrap();
                assert!(try_open(&o, 3, ChunkKind::Data), "{alg}: other key");
            }
            for other_alg in Algorithm::ALL.into_iter().filter(|a| *a != alg) {
                let o = ChunkOpener::new(other_alg, &dek, FileId([1; 16]), 4).unwrap();
                assert!(try_open(&o, 3, ChunkKind::Data), "{alg} opened as {other_alg}");
            }
        }
    }

    #[test]
    fn segments_cannot_be_reordered_or_dropped() {
        let dek = SecretKey::generate().unwrap();
        for alg in Algorithm::ALL {
            let k = keys(alg, &dek, 64);
            let mut data = vec![9u8; 64 * 3];
            let tags = k.seal(0, ChunkKind::Data, &mut data, false).unwrap();
            let t = alg.tag_len();
            // Swap segments 0 and 1 together with their tags.
            let mut swapped = data.clone();
            swapped[..64].copy_from_slice(&data[64..128]);
            swapped[64..128].copy_from_slice(&data[..64]);
            let mut swapped_tags = tags.clone();
            swapped_tags[..t].copy_from_slice(&tags[t..2 * t]);
            swapped_tags[t..2 * t].copy_from_slice(&tags[..t]);
            assert!(
                k.open(0, ChunkKind::Data, &mut swapped, &swapped_tags, false).is_err(),
                "{alg} reorder"
            );
            // Drop the last segment: the new last one was not sealed as last.
            let mut short = data[..128].to_vec();
            assert!(
                k.open(0, ChunkKind::Data, &mut short, &tags[..2 * t], false).is_err(),
                "{alg} drop"
            );
        }
    }

    #[test]
    fn sealing_a_position_twice_is_refused() {
        let dek = SecretKey::generate().unwrap();
        let s = ChunkSealer::for_file(default_provider(), Algorithm::Aes256Gcm, &dek, FileId([1; 16]), 0).unwrap();
        s.seal(0, ChunkKind::Data, &mut vec![1, 2, 3]).unwrap();
        s.seal(0, ChunkKind::Metadata, &mut vec![1, 2, 3]).unwrap();
        s.seal(1, ChunkKind::Data, &mut vec![1, 2, 3]).unwrap();
        let err = s.seal(0, ChunkKind::Data, &mut vec![1, 2, 3]).unwrap_err();
        assert!(matches!(err, Error::NonceReuse { .. }), "{err}");
    }

    /// Two sealers given the same data key and column draw different file ids, so the same
    /// plaintext at the same position seals to different bytes under different keys: no
    /// (key, nonce) pair is shared. (Before, the caller chose the file id and could repeat it.)
    #[test]
    fn sealers_with_one_dek_never_share_a_nonce() {
        let dek = SecretKey::generate().unwrap();
        for alg in [Algorithm::Aes256Gcm, Algorithm::Aes256Ctr, Algorithm::Rc4] {
            let a = ChunkSealer::new(alg, &dek, 0).unwrap();
            let b = ChunkSealer::new(alg, &dek, 0).unwrap();
            assert_ne!(a.file_id(), b.file_id(), "{alg}");
            let (mut x, mut y) = (vec![0u8; 64], vec![0u8; 64]);
            a.seal(0, ChunkKind::Data, &mut x).unwrap();
            b.seal(0, ChunkKind::Data, &mut y).unwrap();
            assert_ne!(x, y, "{alg}: two sealers produced the same ciphertext");
            let opener = ChunkOpener::new(alg, &dek, b.file_id(), 0).unwrap();
            assert!(opener.open(0, ChunkKind::Data, &mut x).is_err(), "{alg}");
            opener.open(0, ChunkKind::Data, &mut y).unwrap();
            assert_eq!(y, vec![0u8; 64]);
        }
    }

    /// A provider whose GCM fails after a few uses: the sealer is poisoned for good.
    #[derive(Debug)]
    struct Flaky;
    struct FlakyGcm(Box<dyn GcmKey>, std::sync::atomic::AtomicUsize);
    impl GcmKey for FlakyGcm {
        fn seal_in_place(&self, n: &[u8; 12], a: &[u8], d: &mut [u8]) -> Result<[u8; 16]> {
            if self.1.fetch_add(1, Ordering::SeqCst) >= 1 {
                return Err(Error::Crypto("injected failure"));
            }
            self.0.seal_in_place(n, a, d)
        }
        fn open_in_place(&self, n: &[u8; 12], a: &[u8], d: &mut [u8], t: &[u8; 16]) -> Result<()> {
            self.0.open_in_place(n, a, d, t)
        }
    }
    impl CipherProvider for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn aes256_gcm(&self, key: &SecretKey) -> Result<Box<dyn GcmKey>> {
            Ok(Box::new(FlakyGcm(default_provider().aes256_gcm(key)?, 0.into())))
        }
        fn aes256_ctr(&self, key: &SecretKey) -> Result<Box<dyn CtrKey>> {
            default_provider().aes256_ctr(key)
        }
    }

    #[test]
    fn a_failed_sealer_is_poisoned() {
        let dek = SecretKey::generate().unwrap();
        let s = ChunkSealer::for_file(&Flaky, Algorithm::Aes256Gcm, &dek, FileId([1; 16]), 0).unwrap();
        s.seal(0, ChunkKind::Data, &mut vec![1, 2, 3]).unwrap();
        let mut buf = vec![5u8; 10];
        assert!(matches!(s.seal(1, ChunkKind::Data, &mut buf), Err(Error::Crypto(_))));
        assert!(buf.iter().all(|&b| b == 0), "half-sealed data is wiped");
        assert!(s.is_poisoned());
        assert!(matches!(s.seal(2, ChunkKind::Data, &mut vec![1]), Err(Error::Poisoned)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Parallel segments give byte-identical output to the one-thread path, for every algorithm,
        /// sizes including 0 and odd lengths, and segment lengths that are not powers of two.
        #[test]
        fn parallel_equals_sequential(n in prop_oneof![Just(0usize), 0usize..5000, 5000usize..70_000], seg_blocks in 1usize..40, alg_id in 0u8..4) {
            let alg = Algorithm::from_id(alg_id).unwrap();
            let dek = SecretKey::generate().unwrap();
            let k = keys(alg, &dek, seg_blocks * 16);
            let plain: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut a = plain.clone();
            let mut b = plain.clone();
            let ta = k.seal(1, ChunkKind::Data, &mut a, false).unwrap();
            let tb = k.seal(1, ChunkKind::Data, &mut b, true).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&ta, &tb);
            k.open(1, ChunkKind::Data, &mut b, &tb, true).unwrap();
            prop_assert_eq!(&b, &plain);
            k.open(1, ChunkKind::Data, &mut a, &ta, false).unwrap();
            prop_assert_eq!(&a, &plain);
        }

        /// CTR slices on rayon equal one keystream call over the whole buffer.
        #[test]
        fn ctr_slices_equal_one_stream(n in 0usize..100_000, slice_blocks in 1usize..300, hi in any::<u64>(), lo in any::<u64>()) {
            let key = default_provider().aes256_ctr(&SecretKey::generate().unwrap()).unwrap();
            let mut counter = [0u8; 16];
            counter[..8].copy_from_slice(&hi.to_be_bytes());
            counter[8..].copy_from_slice(&lo.to_be_bytes());
            let mut a = vec![0u8; n];
            let mut b = vec![0u8; n];
            key.apply_keystream(&counter, &mut a).unwrap();
            ctr_apply_parallel(&*key, &counter, &mut b, slice_blocks * 16).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
