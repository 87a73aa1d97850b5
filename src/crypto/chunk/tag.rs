//! BLAKE3 segment tags: the encrypt-then-MAC tag (keyed) or checksum (unkeyed) of a segment.

use crate::crypto::keys::{ct_eq, KEY_LEN};
use crate::error::{Error, Result};

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
pub(super) fn check_blake3_tag(key: Option<&[u8; KEY_LEN]>, aad: &[u8], data: &[u8], tag: &[u8]) -> Result<()> {
    if ct_eq(&blake3_tag(key, aad, data), tag) {
        Ok(())
    } else {
        Err(Error::integrity("segment"))
    }
}
