//! The crypto core: algorithms, keys, key derivation, and sealing of column chunks.
//!
//! Everything here follows a published standard, cited in `format-spec/`. AES runs behind a
//! [`CipherProvider`] seam (as rustls does with its crypto providers); the default provider is
//! `aws-lc-rs`, which is fast and zeroizes its key schedules.

pub mod algorithm;
pub mod aws_lc;
pub mod chunk;
pub mod kdf;
pub mod keys;
pub mod provider;
pub mod rc4;

pub use algorithm::{Algorithm, Integrity};
pub use chunk::{
    ctr_apply_parallel, plaintext_len, sealed_len, ChunkKind, ChunkOpener, ChunkSealer, FileId, SEGMENT_LEN,
};
pub use kdf::{commitment, derive_key, verify_commitment, Purpose, COMMITMENT_LEN};
pub use keys::{ct_eq, fill_random, random_array, SecretKey, KEY_LEN};
pub use provider::{default_provider, CipherProvider, CtrKey, GcmKey};
