//! AES-256-CTR over a large buffer in parallel slices.

use rayon::prelude::*;

use crate::crypto::provider::CtrKey;
use crate::error::{Error, Result};

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
