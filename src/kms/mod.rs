//! Key management: the KMS seam, the embedded [`LocalKms`], and the KEK cache that makes double
//! wrapping cost O(1) KMS round trips.
//!
//! The seam is two small object-safe traits, in the style of rustls's crypto providers and arrow-rs's
//! parquet key retrievers:
//!
//! * [`Kms`], the data plane: everything readers and writers need (generate, decrypt and re-wrap data
//!   keys under a CMK, as a principal, bound to an encryption context);
//! * [`KmsAdmin`], the administration plane: create, describe, list, enable, disable, schedule and
//!   cancel deletion, delete, rotate, destroy a version, grant, revoke.
//!
//! A cloud KMS or a PKCS#11 HSM implements the same traits later. Files hold a [`WrappedKey`] (or a
//! [`DataKeyEnvelope`] when double wrapping) that names its KMS, key and version.
//!
//! Every refusal is a typed [`crate::Error`]: `UnknownKey`, `AccessDenied`, `KeyDisabled`,
//! `KeyPendingDeletion`, `KeyDeleted`, `VersionDestroyed`; a wrong encryption context or a tampered
//! wrapped key gives `Integrity`; an administration request that the key's state does not allow gives
//! `InvalidKeyState`.

pub mod audit;
#[cfg(feature = "aws-kms")]
pub mod aws;
pub mod cache;
pub mod local;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod select;
pub mod types;
pub mod wrap;

pub use audit::{AuditAction, AuditOutcome, AuditRecord};
#[cfg(feature = "aws-kms")]
pub use aws::{AwsKms, AwsKmsOptions};
pub use cache::{CacheOptions, DataKeyEnvelope, KeyCache, DEFAULT_KEK_LIFETIME, MAX_KEK_LIFETIME};
pub use local::{Argon2Params, LocalKms, LocalKmsOptions, RootSecret, MIN_PASSPHRASE_CHARS};
#[cfg(feature = "pkcs11")]
pub use pkcs11::{Pkcs11Kms, Pkcs11Options};
pub use types::{
    CreateKeyRequest, EncryptionContext, KeyId, KeyMetadata, KeyOrigin, KeyState, KeyVersionInfo, KeyVersionState,
    Principal, WrappedKey,
};

use crate::crypto::SecretKey;
use crate::error::Result;

/// The data plane of a key management service: what readers and writers need.
///
/// Every call names the principal it acts for (a project id); the KMS checks the key's state and grants
/// on every call. Implementations must be usable from many threads.
pub trait Kms: Send + Sync {
    /// The name of this KMS, recorded in every key it wraps (for instance `"local"`).
    fn name(&self) -> &str;

    /// A fresh 32-byte data key and the same key wrapped under the primary version of CMK `key`,
    /// bound to `ctx`.
    fn generate_data_key(
        &self,
        principal: &Principal,
        key: &KeyId,
        ctx: &EncryptionContext,
    ) -> Result<(SecretKey, WrappedKey)>;

    /// Unwraps a data key. `ctx` must equal the context it was wrapped with, else
    /// [`crate::Error::Integrity`].
    fn decrypt_data_key(
        &self,
        principal: &Principal,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretKey>;

    /// Re-wraps a wrapped key under the current primary version of its CMK, with the same context,
    /// without returning the plaintext key.
    fn rewrap(&self, principal: &Principal, wrapped: &WrappedKey, ctx: &EncryptionContext) -> Result<WrappedKey>;

    /// A counter that changes whenever a CMK is rotated through this value (for [`LocalKms`], every
    /// successful [`KmsAdmin::rotate`] on it). A [`KeyCache`] in front of it drops its writer KEKs
    /// when it changes, so rotating through a process stops that process from wrapping under the old
    /// version at once. Other processes stop when their cached KEK expires. The default never changes.
    fn rotation_epoch(&self) -> u64 {
        0
    }
}

/// The administration plane of a key management service.
///
/// Each call returns the key's metadata after the change. Transitions that the key's state does not
/// allow fail with [`crate::Error::InvalidKeyState`] and change nothing.
pub trait KmsAdmin: Kms {
    /// Creates a CMK (version 1, state `Enabled`). A `ProjectDefault` key is granted to its project.
    fn create_key(&self, request: CreateKeyRequest) -> Result<KeyMetadata>;

    /// The metadata of one key (also of a deleted key: its tombstone).
    fn describe(&self, key: &KeyId) -> Result<KeyMetadata>;

    /// The metadata of every key, in creation order.
    fn list(&self) -> Result<Vec<KeyMetadata>>;

    /// `Disabled` (or `Enabled`) to `Enabled`.
    fn enable(&self, key: &KeyId) -> Result<KeyMetadata>;

    /// `Enabled` (or `Disabled`) to `Disabled`.
    fn disable(&self, key: &KeyId) -> Result<KeyMetadata>;

    /// `Enabled` or `Disabled` to `PendingDeletion { until: now + days }`; `days` must be 7 to 30, else
    /// [`crate::Error::InvalidArgument`].
    fn schedule_deletion(&self, key: &KeyId, days: u32) -> Result<KeyMetadata>;

    /// `PendingDeletion` back to the state the key had before the deletion was scheduled.
    fn cancel_deletion(&self, key: &KeyId) -> Result<KeyMetadata>;

    /// `PendingDeletion` whose window has passed to `Deleted`: every version's material is destroyed;
    /// the metadata stays as a tombstone.
    fn delete_key(&self, key: &KeyId) -> Result<KeyMetadata>;

    /// Adds a version and makes it primary (the key must be `Enabled`); older versions still unwrap.
    fn rotate(&self, key: &KeyId) -> Result<KeyMetadata>;

    /// Destroys the material of a version other than the primary; keys wrapped under it then fail with
    /// [`crate::Error::VersionDestroyed`]. [`LocalKms`] refuses it with
    /// [`crate::Error::VersionDestroyTooEarly`] until its version destroy delay (default the longest
    /// KEK lifetime, 24 hours) has passed since the rotation that superseded the version, because
    /// until then a writer may still wrap new data keys under a KEK of that version it has cached.
    fn destroy_version(&self, key: &KeyId, version: u32) -> Result<KeyMetadata>;

    /// Lets `principal` use the key.
    fn grant(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata>;

    /// Stops `principal` from using the key.
    fn revoke(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata>;

    /// Where the KMS keeps its state in a file that storage could roll back (the local keystore):
    /// a stable id of that state and its current generation, which the catalog anchors
    /// ([`crate::catalog::anchor_kms`]). `None` (the default) for services that keep their own
    /// state (an HSM, a cloud KMS).
    fn state_generation(&self) -> Result<Option<(String, u64)>> {
        Ok(None)
    }
}
