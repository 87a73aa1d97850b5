//! The keys of one column of one file, and the segment-by-segment sealing and opening of its
//! chunks under each algorithm.

use rayon::prelude::*;
use zeroize::{Zeroize, Zeroizing};

use super::tag::{blake3_tag, check_blake3_tag};
use super::{ChunkKind, FileId, SEGMENT_LEN};
use crate::crypto::algorithm::Algorithm;
use crate::crypto::kdf::{derive_key, Purpose};
use crate::crypto::keys::{SecretKey, KEY_LEN};
use crate::crypto::provider::{CipherProvider, CtrKey, GcmKey, GCM_TAG_LEN};
use crate::crypto::rc4;
use crate::error::{Error, Result};

/// Sealing with AES-CTR encrypts and MACs a segment in pieces of this many bytes (a multiple of the
/// AES block), so the MAC reads each piece from cache rather than memory.
const FUSED_PIECE: usize = 32 << 10;
/// The per-column keys of one algorithm.
pub(super) enum Cipher {
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
pub(super) struct ColumnKeys {
    pub(super) algorithm: Algorithm,
    pub(super) file_id: FileId,
    pub(super) column: u32,
    pub(super) cipher: Cipher,
    pub(super) seg_len: usize,
}

fn mac_key(dek: &SecretKey, file_id: &FileId, column: u32) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let k = derive_key(dek, Purpose::MacColumnKey, &[&file_id.0, &column.to_be_bytes()])?;
    Ok(Zeroizing::new(*k.expose()))
}

impl ColumnKeys {
    pub(super) fn new(
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

    pub(super) fn describe(&self, row_group: u32, kind: ChunkKind) -> String {
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

    pub(super) fn segments(&self, n: usize) -> usize {
        if n == 0 {
            1
        } else {
            n.div_ceil(self.seg_len)
        }
    }

    pub(super) fn check_segment_count(&self, n: usize) -> Result<u32> {
        u32::try_from(self.segments(n))
            .map_err(|_| Error::InvalidArgument("a chunk has more than 2^32 segments".into()))
    }

    pub(super) fn seal(&self, row_group: u32, kind: ChunkKind, data: &mut [u8], parallel: bool) -> Result<Vec<u8>> {
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
    pub(super) fn open(
        &self,
        row_group: u32,
        kind: ChunkKind,
        data: &mut [u8],
        tags: &[u8],
        parallel: bool,
    ) -> Result<()> {
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
    pub(super) fn open_segment(
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
