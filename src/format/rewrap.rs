//! Rewrapping a file: its keys move to the current CMK version; its chunks are copied byte for
//! byte and its footer body is re-sealed under the same footer key with a fresh random nonce.

use std::collections::HashMap;
use std::io::Write;

use crate::access::KeyAccess;
use crate::crypto::{derive_key, random_array, verify_commitment, Purpose};
use crate::error::{Error, Result};
use crate::format::envelope::{Envelope, KeyRole};
use crate::format::footer::{body_aad, open_body, seal_body};
use crate::format::{ReadAt, MAGIC, TRAILER_LEN};
use crate::kms::{DataKeyEnvelope, KeyId};
use crate::read::read_envelope;

/// What a rewrap wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewrapInfo {
    /// The new file's length.
    pub file_len: u64,
    /// BLAKE3 of the new envelope, sealed body and trailer.
    pub footer_digest: [u8; 32],
    /// The CMK version the file key is now wrapped under.
    pub key_version: u32,
    /// Chunk bytes copied unchanged.
    pub chunk_bytes: u64,
}

/// Writes to `sink` the file in `source` with every wrapped key moved to its CMK's current version.
/// Column data is neither decrypted nor re-encrypted. `memo` carries re-wrapped KEKs across files.
/// Every key of the file (the file key and each column key) must be wrapped under one of
/// `allowed` (the CMKs the table's manifest records for the file): any other is refused with
/// [`Error::KeyNotAllowed`] before anything is re-wrapped.
pub fn rewrap_file(
    source: &dyn ReadAt,
    sink: &mut dyn Write,
    access: &KeyAccess,
    allowed: &[KeyId],
    memo: &mut HashMap<Vec<u8>, DataKeyEnvelope>,
) -> Result<RewrapInfo> {
    let (info, env_bytes) = read_envelope(source)?;
    let env = info.envelope;
    if !env.algorithm.is_encrypted() {
        return Err(Error::InvalidArgument(
            "a file without encryption has no keys to rewrap".into(),
        ));
    }
    for k in &env.keys {
        let key = DataKeyEnvelope::from_bytes(&k.wrapped)?.key_id().clone();
        if !allowed.contains(&key) {
            return Err(Error::KeyNotAllowed { key: key.to_string() });
        }
    }
    // The file key, to open and re-seal the footer body.
    let entry = env
        .keys
        .first()
        .ok_or_else(|| Error::integrity("envelope (an encrypted file without a file key)"))?;
    let dek = access.open_data_key(&entry.wrapped, &env.file_id, None, Some(allowed))?;
    verify_commitment(&dek, &entry.commitment)?;
    let footer_key = derive_key(&dek, Purpose::FooterKey, &[&env.file_id.0])?;
    let body_start = info.file_len - TRAILER_LEN as u64 - info.sealed_body_len;
    let mut body = vec![0u8; info.sealed_body_len as usize];
    source.read_exact_at(body_start, &mut body)?;
    let aad = body_aad(&env_bytes, info.file_len, info.sealed_body_len);
    open_body(Some(&footer_key), &env.footer_nonce, &aad, &mut body)?;

    let mut keys = env.keys.clone();
    for k in &mut keys {
        debug_assert!(matches!(k.role, KeyRole::File | KeyRole::Column(_)));
        k.wrapped = access.rewrap_data_key(&k.wrapped, memo)?;
    }
    let key_version = DataKeyEnvelope::from_bytes(&keys[0].wrapped)?.key_version();
    let new_env = Envelope {
        keys,
        footer_nonce: random_array()?,
        ..env
    }
    .encode();
    let sealed_len = body.len() + 16;
    let chunk_end = MAGIC.len() as u64 + info.chunk_bytes;
    let file_len = chunk_end + new_env.len() as u64 + sealed_len as u64 + TRAILER_LEN as u64;
    seal_body(
        Some(&footer_key),
        &Envelope::decode(&new_env)?.footer_nonce,
        &body_aad(&new_env, file_len, sealed_len as u64),
        &mut body,
    )?;

    // Copy magic and chunks verbatim, in bounded pieces.
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < chunk_end {
        let n = ((chunk_end - at) as usize).min(buf.len());
        source.read_exact_at(at, &mut buf[..n])?;
        sink.write_all(&buf[..n])
            .map_err(|e| Error::io("writing a rewrapped file", e))?;
        at += n as u64;
    }
    let mut trailer = Vec::with_capacity(TRAILER_LEN);
    trailer.extend_from_slice(&(new_env.len() as u32).to_be_bytes());
    trailer.extend_from_slice(&(body.len() as u32).to_be_bytes());
    trailer.extend_from_slice(&MAGIC);
    let mut digest = blake3::Hasher::new();
    for part in [&new_env, &body, &trailer] {
        sink.write_all(part)
            .map_err(|e| Error::io("writing a rewrapped file", e))?;
        digest.update(part);
    }
    sink.flush().map_err(|e| Error::io("writing a rewrapped file", e))?;
    Ok(RewrapInfo {
        file_len,
        footer_digest: *digest.finalize().as_bytes(),
        key_version,
        chunk_bytes: info.chunk_bytes,
    })
}
