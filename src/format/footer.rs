//! The footer body: Parquet metadata (schema, row groups, statistics) and the chunk table, sealed
//! with AES-256-GCM under the footer key (or checksummed for `none`).

use crate::codec::{Decoder, Encoder};
use crate::crypto::chunk::blake3_tag;
use crate::crypto::{ct_eq, default_provider, Algorithm, SecretKey};
use crate::error::{Error, Result};

/// Where one sealed chunk lies, and a digest of its tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Offset of the sealed chunk in the file.
    pub offset: u64,
    /// Length of the sealed chunk.
    pub len: u64,
    /// BLAKE3 of the chunk's tags, so the footer authenticates every chunk tag.
    pub tags_digest: [u8; 32],
}

/// The plaintext of the footer body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FooterBody {
    /// Thrift-encoded Parquet `FileMetaData` of the virtual plaintext Parquet file whose column
    /// chunks are this file's chunks: schema (with the Arrow schema in its key-value metadata),
    /// row groups, per-chunk encodings, sizes and statistics.
    pub parquet_metadata: Vec<u8>,
    /// The Arrow schema of the file in colvault's own encoding ([`crate::format::schema`]).
    pub arrow_schema: Vec<u8>,
    /// Number of row groups.
    pub row_groups: u32,
    /// Number of leaf columns.
    pub leaves: u32,
    /// `row_groups * leaves` entries, row group major.
    pub chunks: Vec<ChunkEntry>,
    /// Statistics of the chunks of columns with their own key, each sealed under that column's
    /// key (kind 1, "metadata"); the Parquet metadata above carries none for those columns.
    pub sealed_stats: Vec<SealedStats>,
}

/// The sealed statistics of one column chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedStats {
    /// Row group.
    pub row_group: u32,
    /// Leaf column.
    pub leaf: u32,
    /// The sealed bytes of [`crate::format::stats::encode`].
    pub sealed: Vec<u8>,
}

const MAX_PARQUET_METADATA: usize = 64 << 20;
const MAX_ARROW_SCHEMA: usize = 16 << 20;
const MAX_ROW_GROUPS: usize = 1 << 24;
const MAX_LEAVES: usize = 1 << 16;
const CHUNK_ENTRY_LEN: usize = 8 + 8 + 32;
const MAX_SEALED_STATS: usize = 4 << 20;

impl FooterBody {
    /// The bytes of the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.bytes(&self.parquet_metadata)
            .bytes(&self.arrow_schema)
            .u32(self.row_groups)
            .u32(self.leaves);
        e.u32(self.chunks.len() as u32);
        for c in &self.chunks {
            e.u64(c.offset).u64(c.len).raw(&c.tags_digest);
        }
        e.u32(self.sealed_stats.len() as u32);
        for st in &self.sealed_stats {
            e.u32(st.row_group).u32(st.leaf).bytes(&st.sealed);
        }
        e.finish()
    }

    /// Parses a body.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut d = Decoder::new(buf, "footer body");
        let parquet_metadata = d.bytes(MAX_PARQUET_METADATA)?.to_vec();
        let arrow_schema = d.bytes(MAX_ARROW_SCHEMA)?.to_vec();
        let row_groups = d.u32()?;
        let leaves = d.u32()?;
        if row_groups as usize > MAX_ROW_GROUPS || leaves as usize > MAX_LEAVES {
            return Err(Error::malformed(
                "footer body",
                format!("{row_groups} row groups of {leaves} leaves"),
            ));
        }
        let n = d.count(MAX_ROW_GROUPS * 64, CHUNK_ENTRY_LEN)?;
        if n as u64 != row_groups as u64 * leaves as u64 {
            return Err(Error::malformed(
                "footer body",
                format!("{n} chunks for {row_groups} x {leaves}"),
            ));
        }
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            chunks.push(ChunkEntry {
                offset: d.u64()?,
                len: d.u64()?,
                tags_digest: d.array()?,
            });
        }
        let n = d.count(MAX_ROW_GROUPS * 64, 12)?;
        let mut sealed_stats = Vec::with_capacity(n);
        for _ in 0..n {
            let row_group = d.u32()?;
            let leaf = d.u32()?;
            if row_group >= row_groups || leaf >= leaves {
                return Err(Error::malformed(
                    "footer body",
                    "sealed statistics of a chunk that does not exist",
                ));
            }
            sealed_stats.push(SealedStats {
                row_group,
                leaf,
                sealed: d.bytes(MAX_SEALED_STATS)?.to_vec(),
            });
        }
        d.finish()?;
        Ok(FooterBody {
            parquet_metadata,
            arrow_schema,
            row_groups,
            leaves,
            chunks,
            sealed_stats,
        })
    }
}

/// The AAD of the footer body: `envelope || u64 file length || u64 sealed body length`.
pub fn body_aad(envelope: &[u8], file_len: u64, sealed_body_len: u64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.raw(envelope).u64(file_len).u64(sealed_body_len);
    e.finish()
}

/// The sealed length of a body of `n` bytes.
pub fn sealed_body_len(algorithm: Algorithm, n: usize) -> usize {
    n + if algorithm.is_encrypted() { 16 } else { 32 }
}

/// Seals `body` in place (appending the tag): AES-256-GCM under `footer_key` with `nonce`, or a
/// BLAKE3 checksum for `none`.
pub fn seal_body(footer_key: Option<&SecretKey>, nonce: &[u8; 12], aad: &[u8], body: &mut Vec<u8>) -> Result<()> {
    match footer_key {
        Some(k) => {
            let tag = default_provider().aes256_gcm(k)?.seal_in_place(nonce, aad, body)?;
            body.extend_from_slice(&tag);
        }
        None => {
            let c = blake3_tag(None, aad, body);
            body.extend_from_slice(&c);
        }
    }
    Ok(())
}

/// Verifies and opens a sealed body in place.
pub fn open_body(footer_key: Option<&SecretKey>, nonce: &[u8; 12], aad: &[u8], sealed: &mut Vec<u8>) -> Result<()> {
    let tag_len = if footer_key.is_some() { 16 } else { 32 };
    if sealed.len() < tag_len {
        return Err(Error::integrity("footer body (too short)"));
    }
    let n = sealed.len() - tag_len;
    let (body, tag) = sealed.split_at_mut(n);
    let ok = match footer_key {
        Some(k) => {
            let tag: &[u8; 16] = (&*tag).try_into().map_err(|_| Error::integrity("footer body"))?;
            default_provider()
                .aes256_gcm(k)?
                .open_in_place(nonce, aad, body, tag)
                .is_ok()
        }
        None => ct_eq(&blake3_tag(None, aad, body), tag),
    };
    if !ok {
        zeroize::Zeroize::zeroize(sealed);
        return Err(Error::integrity("footer body"));
    }
    sealed.truncate(n);
    Ok(())
}
