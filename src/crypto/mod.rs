//! The crypto core: algorithms, keys, key derivation, and sealing of column chunks.
//!
//! Everything here follows a published standard, cited in `format-spec/`. AES runs behind a
//! [`CipherProvider`] seam (as rustls does with its crypto providers). Two providers ship:
//! [`aws_lc::AwsLc`], the default, which zeroizes its key schedules, and [`ring::Ring`], whose
//! AES-GCM is faster on CPUs with 256-bit vector AES but does not wipe its key schedule.

pub mod algorithm;
pub mod aws_lc;
pub mod chunk;
pub mod kdf;
pub mod keys;
pub mod provider;
pub mod rc4;
pub mod ring;

pub use algorithm::{Algorithm, Integrity};
pub use chunk::{
    ctr_apply_parallel, plaintext_len, sealed_len, ChunkKind, ChunkOpener, ChunkSealer, FileId, SEGMENT_LEN,
};
pub use kdf::{commitment, derive_key, verify_commitment, Purpose, COMMITMENT_LEN};
pub use keys::{ct_eq, fill_random, random_array, SecretKey, KEY_LEN};
pub use provider::{default_provider, install_default_provider, providers, CipherProvider, CtrKey, GcmKey};
