//! The `aws-lc-rs` cipher provider.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_256};
use aws_lc_rs::iv::FixedLength;

use super::keys::SecretKey;
use super::provider::{CipherProvider, CtrKey, GcmKey, GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::error::{Error, Result};

/// AES from `aws-lc-rs` (AWS-LC, FIPS-validated lineage). Key schedules are zeroized on drop.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLc;

struct AwsGcm(LessSafeKey);
struct AwsCtr(EncryptingKey);

impl CipherProvider for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }
    fn aes256_gcm(&self, key: &SecretKey) -> Result<Box<dyn GcmKey>> {
        let k = UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| Error::Crypto("AES-256-GCM key setup"))?;
        Ok(Box::new(AwsGcm(LessSafeKey::new(k))))
    }
    fn aes256_ctr(&self, key: &SecretKey) -> Result<Box<dyn CtrKey>> {
        let k = UnboundCipherKey::new(&AES_256, key.expose()).map_err(|_| Error::Crypto("AES-256-CTR key setup"))?;
        let k = EncryptingKey::ctr(k).map_err(|_| Error::Crypto("AES-256-CTR key setup"))?;
        Ok(Box::new(AwsCtr(k)))
    }
}

impl GcmKey for AwsGcm {
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
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, in_out)
            .map(|_| ())
            .map_err(|_| Error::integrity("AES-256-GCM segment"))
    }
}

impl CtrKey for AwsCtr {
    fn apply_keystream(&self, counter: &[u8; 16], in_out: &mut [u8]) -> Result<()> {
        if in_out.is_empty() {
            return Ok(());
        }
        let ctx = EncryptionContext::Iv128(FixedLength::from(*counter));
        self.0
            .less_safe_encrypt(in_out, ctx)
            .map(|_| ())
            .map_err(|_| Error::Crypto("AES-256-CTR"))
    }
}
