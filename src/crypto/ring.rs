//! The `ring` cipher provider: AES-256-GCM from `ring`, AES-256-CTR from RustCrypto's `aes` and
//! `ctr` (`ring` has no public AES-CTR).
//!
//! On x86-64 CPUs with VAES and VPCLMULQDQ but without AVX-512 (AMD Zen 3, Intel Alder Lake and
//! later client parts), `ring`'s AES-GCM uses 256-bit vector AES and is about twice as fast as
//! `aws-lc-rs`'s; see the provider figures in the README. The trade-off: `ring` does not wipe its
//! AES-GCM key schedule when the key is dropped (colvault's own copies of the key bytes are still
//! wiped, and so are the RustCrypto AES-CTR round keys). That is why [`AwsLc`](super::aws_lc::AwsLc)
//! stays the default; choose this provider with
//! [`WriterOptionsBuilder::cipher_provider`](crate::write::WriterOptionsBuilder::cipher_provider),
//! [`ReaderOptions::cipher_provider`](crate::read::ReaderOptions::cipher_provider) or
//! [`install_default_provider`](super::install_default_provider).

use ::aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use ::ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

use super::keys::SecretKey;
use super::provider::{CipherProvider, CtrKey, GcmKey, GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::error::{Error, Result};

/// AES-256-GCM from `ring`, AES-256-CTR from RustCrypto `aes` + `ctr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ring;

struct RingGcm(LessSafeKey);
struct RustCryptoCtr(::aes::Aes256);

impl CipherProvider for Ring {
    fn name(&self) -> &'static str {
        "ring"
    }
    fn aes256_gcm(&self, key: &SecretKey) -> Result<Box<dyn GcmKey>> {
        let k = UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| Error::Crypto("AES-256-GCM key setup"))?;
        Ok(Box::new(RingGcm(LessSafeKey::new(k))))
    }
    fn aes256_ctr(&self, key: &SecretKey) -> Result<Box<dyn CtrKey>> {
        let k = ::aes::Aes256::new_from_slice(key.expose()).map_err(|_| Error::Crypto("AES-256-CTR key setup"))?;
        Ok(Box::new(RustCryptoCtr(k)))
    }
}

impl GcmKey for RingGcm {
    fn seal_in_place(&self, nonce: &[u8; GCM_NONCE_LEN], aad: &[u8], in_out: &mut [u8]) -> Result<[u8; GCM_TAG_LEN]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), in_out)
            .map_err(|_| Error::Crypto("AES-256-GCM seal"))?;
        let mut out = [0u8; GCM_TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }
    fn open_in_place(
        &self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<()> {
        self.0
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*tag),
                in_out,
                0..,
            )
            .map(|_| ())
            .map_err(|_| Error::integrity("AES-256-GCM segment"))
    }
}

impl CtrKey for RustCryptoCtr {
    fn apply_keystream(&self, counter: &[u8; 16], in_out: &mut [u8]) -> Result<()> {
        let core =
            ::ctr::CtrCore::<::aes::Aes256, ::ctr::flavors::Ctr128BE>::inner_iv_init(self.0.clone(), counter.into());
        let mut c = ::ctr::Ctr128BE::<::aes::Aes256>::from_core(core);
        c.try_apply_keystream(in_out)
            .map_err(|_| Error::Crypto("AES-256-CTR keystream"))
    }
}
