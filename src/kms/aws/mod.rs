//! `AwsKms`: CMKs in a service speaking the AWS KMS API (AWS KMS itself, and the other clouds and
//! on-premises KMSs that speak it), behind feature `aws-kms`.
//!
//! # Data plane
//!
//! * [`Kms::generate_data_key`] is `GenerateDataKey` with `KeySpec = AES_256`;
//! * [`Kms::decrypt_data_key`] is `Decrypt` with `KeyId` pinned to the key the wrapped key names, so
//!   a ciphertext made under another key is refused (`IncorrectKeyException` from AWS);
//! * [`Kms::rewrap`] is `ReEncrypt` from and to the same key: the data key moves to the key's
//!   current backing material inside the service and is never returned.
//!
//! Each sends the encryption context of [`context`]: the colvault context, the principal, the KMS
//! name, key id, version and the wrapped key's nonce, so a wrap opens only for the same principal
//! and context ([`crate::Error::Integrity`] otherwise). The service's ciphertext blob is the
//! [`WrappedKey`]'s sealed bytes (at most 1,024 bytes; an AWS symmetric ciphertext is under 200);
//! the 16-byte nonce of the [`WrappedKey`] is fresh per wrap and bound through the context.
//!
//! Before each of these calls colvault checks what `DescribeKey`, `ListGrants` and
//! `ListKeyRotations` said about the key (fetched together, cached for the check lifetime,
//! [`AwsKmsOptions::with_check_lifetime`], default 60 s, dropped at once by any change made through
//! this value): a disabled or pending-deletion key is refused with the same typed errors as
//! [`crate::kms::LocalKms`], whatever the service does (AWS refuses such keys itself; the moto
//! emulator does not), and a principal without a grant is [`crate::Error::AccessDenied`].
//!
//! # Versions
//!
//! AWS KMS rotation (`RotateKeyOnDemand`, or automatic rotation) adds backing key material inside
//! the service and keeps every older one usable; the API has no per-version handle. colvault's
//! version of a key is **1 + the number of rotations `ListKeyRotations` lists**: [`KmsAdmin::rotate`]
//! makes it grow by one, new wraps carry it (bound in the context, so it is authentic), and
//! `rewrap` moves a wrap to the newest version. The label is colvault's: a rotation made elsewhere
//! less than the check lifetime ago may be missed by a wrap, which is then labelled one version
//! lower than the material AWS used (harmless: it still decrypts, and a rewrap relabels it).
//! [`KmsAdmin::destroy_version`] is refused with [`crate::Error::KmsUnsupported`]: AWS KMS cannot
//! destroy one version's material; only deleting the whole key destroys material.
//!
//! # Grants
//!
//! A colvault grant of key K to principal P is an AWS grant on K with `Operations = [Decrypt,
//! GenerateDataKey, ReEncryptFrom, ReEncryptTo]` and the constraint `EncryptionContextSubset =
//! {"colvault:principal": P}`; its `GranteePrincipal` must be an IAM ARN in AWS, so it names the
//! identity colvault runs as ([`AwsKmsOptions::with_grantee`], `COLVAULT_AWS_GRANTEE_ARN`), by
//! default the account root of the key's account. When that identity has no key-policy access of
//! its own, AWS itself then lets it use K only for contexts naming P; colvault checks the grants
//! (`ListGrants`) on every call anyway, since the key's owner or an emulator is not so limited.
//!
//! # Runtime
//!
//! See [`client`]: a runtime of its own, safe to call from inside another tokio runtime.

mod admin;
mod client;
mod context;
mod errors;
mod options;
mod view;

pub use options::{AwsKmsOptions, DEFAULT_CHECK_LIFETIME};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroizing;

use self::client::Service;
use self::context::aws_context;
use self::errors::{map, Call};
use self::view::KeyView;
use super::types::{EncryptionContext, KeyId, Principal, WrappedKey, WRAP_NONCE_LEN};
use super::Kms;
use crate::crypto::{random_array, SecretKey, KEY_LEN};
use crate::error::{Error, Result};

/// The name of this KMS, recorded in every key it wraps.
pub const NAME: &str = "aws-kms";

/// A KMS speaking the AWS KMS API. See the [module documentation](self).
pub struct AwsKms {
    service: Service,
    grantee: Option<String>,
    check_lifetime: Duration,
    views: Mutex<HashMap<KeyId, (Instant, Arc<KeyView>)>>,
    epoch: AtomicU64,
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms")
            .field("grantee", &self.grantee)
            .field("check_lifetime", &self.check_lifetime)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A data key the service returned, checked and moved into a [`SecretKey`]; the SDK's buffer is
/// wiped here.
fn data_key(plaintext: Option<Blob>, op: &'static str) -> Result<SecretKey> {
    let bytes = Zeroizing::new(plaintext.map(Blob::into_inner).unwrap_or_default());
    if bytes.len() != KEY_LEN {
        return Err(Error::KmsService {
            kms: NAME.into(),
            operation: op.into(),
            detail: format!(
                "the service returned a data key of {} bytes, not {KEY_LEN}",
                bytes.len()
            ),
            retriable: false,
        });
    }
    SecretKey::from_slice(&bytes)
}

fn blob(ciphertext: Option<Blob>, op: &'static str) -> Result<Vec<u8>> {
    ciphertext.map(Blob::into_inner).ok_or_else(|| Error::KmsService {
        kms: NAME.into(),
        operation: op.into(),
        detail: "the answer holds no ciphertext".into(),
        retriable: false,
    })
}

/// Checks that the key ARN the service says it used is `key`'s.
fn check_arn(returned: Option<&str>, key: &KeyId, op: &str) -> Result<()> {
    match returned {
        Some(arn) if arn != key.as_str() && !arn.ends_with(&format!("/{key}")) => Err(Error::integrity(format!(
            "{op} answer (the service used key {arn}, not {key})"
        ))),
        _ => Ok(()),
    }
}

impl AwsKms {
    /// A client for the service of `opts`. Sends nothing yet: the first key use or administration
    /// call reaches the service.
    pub fn open(opts: AwsKmsOptions) -> Result<Self> {
        Ok(AwsKms {
            service: Service::new(&opts)?,
            grantee: opts.grantee.clone(),
            check_lifetime: opts.check_lifetime,
            views: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        })
    }

    /// How many HTTP requests this client sent so far (each attempt of each call, retries
    /// included): what tests and the benchmark count as round trips.
    pub fn requests(&self) -> u64 {
        self.service.requests()
    }

    /// Forgets every key state, grant list and rotation list it cached: the next use of each key
    /// asks the service again.
    pub fn invalidate(&self) {
        lock(&self.views).clear();
    }

    fn forget(&self, key: &KeyId) {
        lock(&self.views).remove(key);
    }

    /// What the service says of `key` now (and cached).
    fn fresh_view(&self, key: &KeyId) -> Result<Arc<KeyView>> {
        let v = Arc::new(view::fetch(&self.service, key)?);
        if !self.check_lifetime.is_zero() {
            lock(&self.views).insert(key.clone(), (Instant::now(), v.clone()));
        }
        Ok(v)
    }

    /// The cached view of `key` if younger than the check lifetime, else a fresh one.
    fn view(&self, key: &KeyId) -> Result<Arc<KeyView>> {
        if let Some((at, v)) = lock(&self.views).get(key) {
            if at.elapsed() < self.check_lifetime {
                return Ok(v.clone());
            }
        }
        self.fresh_view(key)
    }

    /// The view of `key`, after checking that `principal` may use it now.
    fn usable(&self, key: &KeyId, principal: &Principal) -> Result<Arc<KeyView>> {
        let v = self.view(key)?;
        v.check_usable(key)?;
        v.check_granted(key, principal)?;
        Ok(v)
    }

    /// A refusal of the service that a state change may explain (made elsewhere since the view was
    /// fetched): the fresh state's error if there is one, else `err`.
    fn explain(&self, key: &KeyId, principal: &Principal, err: Error) -> Error {
        if matches!(
            err,
            Error::KeyDisabled { .. }
                | Error::InvalidKeyState(_)
                | Error::AccessDenied { .. }
                | Error::UnknownKey { .. }
        ) {
            self.forget(key);
            if let Ok(v) = self.fresh_view(key) {
                if let Err(e) = v.check_usable(key).and_then(|()| v.check_granted(key, principal)) {
                    return e;
                }
            }
        }
        err
    }

    fn check_kms(&self, wrapped: &WrappedKey) -> Result<()> {
        if wrapped.kms() != NAME {
            return Err(Error::InvalidArgument(format!(
                "the wrapped key belongs to KMS {:?}, not to this KMS {NAME:?}",
                wrapped.kms()
            )));
        }
        Ok(())
    }
}

impl Kms for AwsKms {
    fn name(&self) -> &str {
        NAME
    }

    fn generate_data_key(
        &self,
        principal: &Principal,
        key: &KeyId,
        ctx: &EncryptionContext,
    ) -> Result<(SecretKey, WrappedKey)> {
        const OP: &str = "GenerateDataKey";
        let view = self.usable(key, principal)?;
        let version = view.primary_version();
        let nonce = random_array::<WRAP_NONCE_LEN>()?;
        let request = self
            .service
            .client()
            .generate_data_key()
            .key_id(key.as_str())
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(aws_context(NAME, key, version, principal, ctx, &nonce)));
        let out = self
            .service
            .run(request.send())?
            .map_err(|e| self.explain(key, principal, map(e, Call::data(OP, key.as_str(), principal.as_str()))))?;
        check_arn(out.key_id(), key, OP)?;
        let mut out = out;
        let dek = data_key(out.plaintext.take(), OP)?;
        let wrapped = WrappedKey::new(NAME, key.clone(), version, nonce, blob(out.ciphertext_blob.take(), OP)?)?;
        Ok((dek, wrapped))
    }

    fn decrypt_data_key(
        &self,
        principal: &Principal,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretKey> {
        const OP: &str = "Decrypt";
        self.check_kms(wrapped)?;
        let key = wrapped.key_id();
        let view = self.usable(key, principal)?;
        let request = self
            .service
            .client()
            .decrypt()
            .key_id(key.as_str())
            .ciphertext_blob(Blob::new(wrapped.ciphertext()))
            .set_encryption_context(Some(aws_context(
                NAME,
                key,
                wrapped.version(),
                principal,
                ctx,
                wrapped.nonce(),
            )));
        let mut out = self
            .service
            .run(request.send())?
            .map_err(|e| self.explain(key, principal, map(e, Call::data(OP, key.as_str(), principal.as_str()))))?;
        check_arn(out.key_id(), key, OP)?;
        let dek = data_key(out.plaintext.take(), OP)?;
        if wrapped.version() > view.primary_version() {
            // An authentic wrap under a rotation this view has not seen: ask again next time.
            self.forget(key);
        }
        Ok(dek)
    }

    fn rewrap(&self, principal: &Principal, wrapped: &WrappedKey, ctx: &EncryptionContext) -> Result<WrappedKey> {
        const OP: &str = "ReEncrypt";
        self.check_kms(wrapped)?;
        let key = wrapped.key_id();
        let view = self.usable(key, principal)?;
        let version = view.primary_version().max(wrapped.version());
        let nonce = random_array::<WRAP_NONCE_LEN>()?;
        let request = self
            .service
            .client()
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.ciphertext()))
            .source_key_id(key.as_str())
            .set_source_encryption_context(Some(aws_context(
                NAME,
                key,
                wrapped.version(),
                principal,
                ctx,
                wrapped.nonce(),
            )))
            .destination_key_id(key.as_str())
            .set_destination_encryption_context(Some(aws_context(NAME, key, version, principal, ctx, &nonce)));
        let mut out = self
            .service
            .run(request.send())?
            .map_err(|e| self.explain(key, principal, map(e, Call::data(OP, key.as_str(), principal.as_str()))))?;
        check_arn(out.key_id(), key, OP)?;
        WrappedKey::new(NAME, key.clone(), version, nonce, blob(out.ciphertext_blob.take(), OP)?)
    }

    fn rotation_epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}
