//! A `Kms` wrapper that counts the round trips made through it, per call kind.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use colvault::crypto::SecretKey;
use colvault::kms::{EncryptionContext, KeyId, Kms, Principal, WrappedKey};

/// Counts `generate_data_key`, `decrypt_data_key` and `rewrap` calls to `inner`.
pub struct CountingKms {
    inner: Arc<dyn Kms>,
    generate: AtomicUsize,
    decrypt: AtomicUsize,
    rewrap: AtomicUsize,
    /// Whether `rotation_epoch` is passed through (see [`CountingKms::without_rotation_signal`]).
    forward_epoch: bool,
}

impl CountingKms {
    pub fn new(inner: Arc<dyn Kms>) -> Self {
        CountingKms {
            inner,
            generate: AtomicUsize::new(0),
            decrypt: AtomicUsize::new(0),
            rewrap: AtomicUsize::new(0),
            forward_epoch: true,
        }
    }

    /// A wrapper whose `rotation_epoch` never changes, as a client in another process sees a
    /// rotation made elsewhere: its KEK cache learns of it only when the cached KEK expires.
    pub fn without_rotation_signal(inner: Arc<dyn Kms>) -> Self {
        CountingKms {
            forward_epoch: false,
            ..Self::new(inner)
        }
    }

    /// (generate, decrypt, rewrap) calls so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.generate.load(Ordering::SeqCst),
            self.decrypt.load(Ordering::SeqCst),
            self.rewrap.load(Ordering::SeqCst),
        )
    }

    /// All calls so far.
    pub fn calls(&self) -> usize {
        let (g, d, r) = self.counts();
        g + d + r
    }
}

impl Kms for CountingKms {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn generate_data_key(
        &self,
        principal: &Principal,
        key: &KeyId,
        ctx: &EncryptionContext,
    ) -> colvault::Result<(SecretKey, WrappedKey)> {
        self.generate.fetch_add(1, Ordering::SeqCst);
        self.inner.generate_data_key(principal, key, ctx)
    }
    fn decrypt_data_key(
        &self,
        principal: &Principal,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> colvault::Result<SecretKey> {
        self.decrypt.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt_data_key(principal, wrapped, ctx)
    }
    fn rewrap(
        &self,
        principal: &Principal,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> colvault::Result<WrappedKey> {
        self.rewrap.fetch_add(1, Ordering::SeqCst);
        self.inner.rewrap(principal, wrapped, ctx)
    }
    fn rotation_epoch(&self) -> u64 {
        if self.forward_epoch {
            self.inner.rotation_epoch()
        } else {
            0
        }
    }
}
