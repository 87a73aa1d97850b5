//! Chunk lengths: how many segments a chunk has, and its sealed and plaintext lengths.

use super::SEGMENT_LEN;
use crate::crypto::algorithm::Algorithm;
use crate::error::{Error, Result};

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

pub(super) fn plaintext_len_with(tag: usize, seg: usize, sealed: usize) -> Option<usize> {
    let full = seg + tag;
    let (q, r) = (sealed / full, sealed % full);
    match (q, r) {
        (0, r) if r == tag => Some(0),
        (q, 0) if q > 0 => Some(q * seg),
        (q, r) if r > tag => Some(q * seg + r - tag),
        _ => None,
    }
}
