//! The seam between colvault and the AES implementations, in the manner of rustls's crypto providers.
//!
//! Chunk sealing asks a [`CipherProvider`] for keyed AES-256-GCM and AES-256-CTR objects; the
//! construction around them (segments, nonces, AAD, MACs) lives in colvault and is the same for every
//! provider. [`default_provider`] is `aws-lc-rs`: it has the fastest AES-GCM and AES-CTR measured on
//! these machines and zeroizes its key schedules on drop.

use std::fmt;
use std::sync::OnceLock;

use crate::crypto::keys::SecretKey;
use crate::error::Result;

/// Length of a GCM nonce (96 bits, SP 800-38D section 8.2.1 deterministic construction).
pub const GCM_NONCE_LEN: usize = 12;
/// Length of a GCM tag (128 bits).
pub const GCM_TAG_LEN: usize = 16;

/// An AES-256-GCM key (NIST SP 800-38D).
pub trait GcmKey: Send + Sync {
    /// Encrypts `in_out` in place and returns the tag.
    fn seal_in_place(&self, nonce: &[u8; GCM_NONCE_LEN], aad: &[u8], in_out: &mut [u8]) -> Result<[u8; GCM_TAG_LEN]>;
    /// Verifies `tag` and decrypts `in_out` in place. On failure the contents of `in_out` are
    /// unspecified: the caller must discard (and wipe) them.
    fn open_in_place(
        &self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<()>;
}

/// An AES-256-CTR key (NIST SP 800-38A section 6.5) with a full 128-bit counter block.
pub trait CtrKey: Send + Sync {
    /// XORs the keystream that starts at counter block `counter` into `in_out`. The counter block
    /// is incremented as a 128-bit big-endian integer per 16-byte block.
    fn apply_keystream(&self, counter: &[u8; 16], in_out: &mut [u8]) -> Result<()>;
}

/// A source of keyed AES objects.
pub trait CipherProvider: Send + Sync + fmt::Debug {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// An AES-256-GCM key.
    fn aes256_gcm(&self, key: &SecretKey) -> Result<Box<dyn GcmKey>>;
    /// An AES-256-CTR key.
    fn aes256_ctr(&self, key: &SecretKey) -> Result<Box<dyn CtrKey>>;
}

static DEFAULT: OnceLock<&'static dyn CipherProvider> = OnceLock::new();

/// The process-wide provider: the one [`install_default_provider`] installed, else
/// [`AwsLc`](super::aws_lc::AwsLc). Writers and readers use it unless their options name another
/// (`cipher_provider`).
pub fn default_provider() -> &'static dyn CipherProvider {
    *DEFAULT.get_or_init(|| &super::aws_lc::AwsLc)
}

/// Installs the process-wide provider, once, before any use of [`default_provider`], as rustls's
/// `CryptoProvider::install_default` does. If a provider is already in place (installed, or fixed by
/// a first use) it stays, and the call returns it as the error.
///
/// ```
/// use colvault::crypto::{default_provider, install_default_provider, ring::Ring};
///
/// install_default_provider(&Ring).expect("nothing used a provider yet");
/// assert_eq!(default_provider().name(), "ring");
/// assert!(install_default_provider(&Ring).is_err(), "only once");
/// ```
pub fn install_default_provider(
    provider: &'static dyn CipherProvider,
) -> std::result::Result<(), &'static dyn CipherProvider> {
    let mut installed = false;
    let current = *DEFAULT.get_or_init(|| {
        installed = true;
        provider
    });
    if installed {
        Ok(())
    } else {
        Err(current)
    }
}

/// Every provider colvault ships, the default first.
pub fn providers() -> [&'static dyn CipherProvider; 2] {
    [&super::aws_lc::AwsLc, &super::ring::Ring]
}
