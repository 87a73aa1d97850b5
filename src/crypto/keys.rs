//! Secret key buffers: zeroized on drop, redacted in `Debug`, compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// Length in bytes of every symmetric key colvault handles (AES-256, HKDF outputs, MAC keys).
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key.
///
/// The bytes are zeroized when the key is dropped and never printed:
///
/// ```
/// use colvault::crypto::SecretKey;
/// let key = SecretKey::generate()?;
/// assert_eq!(format!("{key:?}"), "SecretKey([REDACTED])");
/// # Ok::<(), colvault::Error>(())
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut k = SecretKey([0u8; KEY_LEN]);
        fill_random(&mut k.0)?;
        Ok(k)
    }

    /// Takes ownership of existing key material (for instance BYOK material being imported).
    /// The caller's array is zeroized.
    pub fn from_bytes(bytes: &mut [u8; KEY_LEN]) -> Self {
        let k = SecretKey(*bytes);
        bytes.zeroize();
        k
    }

    /// Copies key material from a slice, which must be exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::InvalidArgument(format!("a key is {KEY_LEN} bytes, got {}", bytes.len())))?;
        Ok(SecretKey(arr))
    }

    /// The raw key bytes. Crate-private: key material leaves the crate only through a KMS wrap.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

#[cfg(feature = "insecure-test-vectors")]
impl SecretKey {
    /// Test vectors only (cargo feature `insecure-test-vectors`, absent from default builds): the
    /// raw key bytes, to record a test key next to the files it opens.
    #[doc(hidden)]
    pub fn insecure_expose_for_test_vectors(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

impl PartialEq for SecretKey {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for SecretKey {}

/// Fills `buf` from the operating system's CSPRNG (`getrandom`, NIST SP 800-90A via the OS).
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|_| Error::Crypto("the operating system's random number generator failed"))
}

/// `N` random bytes from the operating system's CSPRNG.
pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let mut raw = [7u8; KEY_LEN];
        let k = SecretKey::from_bytes(&mut raw);
        assert_eq!(
            raw, [0u8; KEY_LEN],
            "imported material is wiped from the caller's buffer"
        );
        let shown = format!("{k:?}");
        assert!(!shown.contains('7'), "{shown}");
        assert_eq!(shown, "SecretKey([REDACTED])");
    }

    #[test]
    fn generated_keys_differ_and_compare() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
        assert!(SecretKey::from_slice(&[0u8; 31]).is_err());
    }
}
