//! The KMS backends the key-state matrix (and other backend-generic tests) run against: each makes a
//! fresh KMS, catalog, clock and KEK cache per cell, and knows how to reopen its KMS with wrong
//! credentials or after its key state was tampered with.
//!
//! Adding a backend (for instance `AwsKms` on moto) is one `impl KmsBackend` and one line in
//! [`backends`].

use std::any::Any;
use std::sync::Arc;

use colvault::clock::ManualClock;
use colvault::kms::{Argon2Params, CacheOptions, KeyCache, KmsAdmin, LocalKms, LocalKmsOptions, RootSecret};
use colvault::Error;

/// One cell's world: a temporary directory (the catalog and the projects live in it), the KMS, the
/// clock every time-dependent part reads, and the KEK cache in front of the KMS.
pub struct Cell {
    pub dir: tempfile::TempDir,
    pub catalog: Arc<dyn colvault::catalog::Catalog>,
    pub kms: Arc<dyn KmsAdmin>,
    pub clock: Arc<ManualClock>,
    pub cache: Arc<KeyCache>,
    /// Whatever the backend needs to reopen its KMS (a keystore path, a token).
    pub extra: Box<dyn Any>,
}

impl Cell {
    /// The project key services of the cell.
    pub fn keys(&self) -> colvault::project::Keys {
        colvault::project::Keys {
            kms: self.kms.clone(),
            cache: self.cache.clone(),
        }
    }

    /// The same KMS reopened in a new value, with a cache of its own (for a cell that reopens).
    pub fn keys_with(kms: Arc<dyn KmsAdmin>) -> colvault::project::Keys {
        let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default()).unwrap());
        colvault::project::Keys { kms, cache }
    }
}

/// A KMS backend for backend-generic tests.
pub trait KmsBackend {
    /// The backend's name in messages (`local`, `pkcs11`, ...).
    fn name(&self) -> &'static str;

    /// A fresh cell; `None` when the backend's service is unavailable and not required (the backend
    /// has printed `SKIPPED ...`).
    fn cell(&self, test: &str) -> Option<Cell>;

    /// Opens the cell's KMS anew with wrong credentials (`LocalKms`: another passphrase;
    /// `Pkcs11Kms`: another PIN).
    fn reopen_with_wrong_credentials(&self, cell: &Cell) -> Result<Arc<dyn KmsAdmin>, Error>;

    /// The name of the error variant [`KmsBackend::reopen_with_wrong_credentials`] must give.
    fn wrong_credentials_error(&self) -> &'static str;

    /// Alters the KMS's stored key state the way an attacker could reach it, then opens it anew with
    /// the right credentials (`LocalKms`: one byte of the keystore file flipped; `Pkcs11Kms`: one byte
    /// of the sealed state record on the token flipped, through a logged-in session).
    fn reopen_after_tampering(&self, cell: &Cell) -> Result<Arc<dyn KmsAdmin>, Error>;

    /// Why this backend cannot produce the key-state matrix situation named `situation` (its
    /// `Debug` name), or `None` when it can (the default). The matrix still makes the situation's
    /// setup call for such a cell and requires it to fail with `Error::KmsUnsupported` (so a
    /// backend that gains the ability makes the test fail until this is updated); the cell is then
    /// reported as skipped, never as passed.
    fn cannot_produce(&self, _situation: &str) -> Option<&'static str> {
        None
    }
}

fn start_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
    ))
}

fn cell_with(dir: tempfile::TempDir, kms: Arc<dyn KmsAdmin>, clock: Arc<ManualClock>, extra: Box<dyn Any>) -> Cell {
    let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default().with_clock(clock.clone())).unwrap());
    let catalog = super::catalog_in(dir.path());
    Cell {
        dir,
        catalog,
        kms,
        clock,
        cache,
        extra,
    }
}

/// The embedded keystore.
pub struct Local;

const LOCAL_PASSPHRASE: &str = "test passphrase";

impl Local {
    fn options(clock: Arc<ManualClock>) -> LocalKmsOptions {
        LocalKmsOptions::new()
            .with_clock(clock)
            .with_argon2(Argon2Params::insecure_for_tests())
    }
}

impl KmsBackend for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn cell(&self, _test: &str) -> Option<Cell> {
        let dir = tempfile::tempdir().unwrap();
        let clock = start_clock();
        let kms = LocalKms::create(
            dir.path().join("keystore"),
            RootSecret::passphrase(LOCAL_PASSPHRASE),
            Self::options(clock.clone()),
        )
        .unwrap();
        Some(cell_with(dir, Arc::new(kms), clock, Box::new(())))
    }

    fn reopen_with_wrong_credentials(&self, cell: &Cell) -> Result<Arc<dyn KmsAdmin>, Error> {
        let kms = LocalKms::open(
            cell.dir.path().join("keystore"),
            RootSecret::passphrase("another passphrase"),
            Self::options(cell.clock.clone()),
        )?;
        Ok(Arc::new(kms))
    }

    fn wrong_credentials_error(&self) -> &'static str {
        "WrongRootSecret"
    }

    fn reopen_after_tampering(&self, cell: &Cell) -> Result<Arc<dyn KmsAdmin>, Error> {
        let path = cell.dir.path().join("keystore");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let kms = LocalKms::open(
            &path,
            RootSecret::passphrase(LOCAL_PASSPHRASE),
            Self::options(cell.clock.clone()),
        )?;
        Ok(Arc::new(kms))
    }
}

/// A SoftHSM2 token per cell.
#[cfg(feature = "pkcs11")]
pub struct Pkcs11;

#[cfg(feature = "pkcs11")]
impl KmsBackend for Pkcs11 {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn cell(&self, test: &str) -> Option<Cell> {
        let token = super::softhsm::token(test)?;
        let dir = tempfile::tempdir().unwrap();
        let clock = start_clock();
        let kms = colvault::kms::Pkcs11Kms::open(token.options().with_clock(clock.clone())).unwrap();
        Some(cell_with(dir, Arc::new(kms), clock, Box::new(token)))
    }

    fn reopen_with_wrong_credentials(&self, cell: &Cell) -> Result<Arc<dyn KmsAdmin>, Error> {
        let token: &super::softhsm::Token = cell.extra.downcast_ref().unwrap();
        let opts = colvault::kms::Pkcs11Options::new(&token.module, &token.label)
            .with_pin(zeroize::Zeroizing::new("wrong-pin-0000".to_owned()))
            .with_clock(cell.clock.clone());
        Ok(Arc::new(colvault::kms::Pkcs11Kms::open(opts)?))
    }

    fn wrong_credentials_error(&self) -> &'static str {
        "KmsAuthentication"
    }

    fn reopen_after_tampering(&self, cell: &Cell) -> Result<Arc<dyn KmsAdmin>, Error> {
        let token: &super::softhsm::Token = cell.extra.downcast_ref().unwrap();
        super::softhsm::flip_state_record_byte(token);
        Ok(Arc::new(colvault::kms::Pkcs11Kms::open(
            token.options().with_clock(cell.clock.clone()),
        )?))
    }
}

/// `AwsKms` on the moto server of the test binary (one server, a fresh CMK per project, so cells
/// stay independent).
#[cfg(feature = "aws-kms")]
pub struct Aws;

#[cfg(feature = "aws-kms")]
impl Aws {
    const NAME: &'static str = "aws-kms";
}

#[cfg(feature = "aws-kms")]
impl KmsBackend for Aws {
    fn name(&self) -> &'static str {
        "aws-kms"
    }

    fn cell(&self, test: &str) -> Option<Cell> {
        let kms = super::aws_kms::fresh(test)?;
        let dir = tempfile::tempdir().unwrap();
        let clock = start_clock();
        Some(cell_with(dir, kms, clock, Box::new(())))
    }

    /// moto does not check request signatures (see `common::moto`): any access key and secret are
    /// accepted, so wrong credentials cannot be produced against it. Always
    /// `Err(Error::KmsUnsupported)` with that explanation.
    fn reopen_with_wrong_credentials(&self, _cell: &Cell) -> Result<Arc<dyn KmsAdmin>, Error> {
        Err(Error::KmsUnsupported {
            kms: Self::NAME.into(),
            operation: "opening with wrong credentials".into(),
            detail: "the moto emulator accepts any access key and secret (it checks no request signature), \
                     so wrong credentials cannot be produced against it"
                .into(),
        })
    }

    fn wrong_credentials_error(&self) -> &'static str {
        // What real AWS says to a bad signature or unknown access key; not producible on moto.
        "KmsAuthentication"
    }

    /// The key state (enabled, disabled, pending deletion, grants, rotations) lives in the service,
    /// not in anything colvault stores or could flip a byte of. Always `Err(Error::KmsUnsupported)`.
    fn reopen_after_tampering(&self, _cell: &Cell) -> Result<Arc<dyn KmsAdmin>, Error> {
        Err(Error::KmsUnsupported {
            kms: Self::NAME.into(),
            operation: "tampering with the stored key state".into(),
            detail: "AWS KMS keeps every key's state inside the service; colvault stores none of it".into(),
        })
    }

    fn cannot_produce(&self, situation: &str) -> Option<&'static str> {
        match situation {
            "Deleted" => Some(
                "the AWS KMS API cannot delete a key on request (only when the ScheduleKeyDeletion window \
                 ends, in real time): delete_key is KmsUnsupported",
            ),
            "DestroyedVersionUnused" | "DestroyedVersionNeeded" => {
                Some("the AWS KMS API cannot destroy one version's material: destroy_version is KmsUnsupported")
            }
            "WrongCredentials" => Some(
                "moto accepts any credentials (no signature check), so wrong credentials cannot be produced \
                 on the emulator",
            ),
            "TamperedKeyState" => {
                Some("AWS KMS keeps key state inside the service: there is no stored state to tamper with")
            }
            _ => None,
        }
    }
}

/// Every backend this build can test.
pub fn backends() -> Vec<Box<dyn KmsBackend>> {
    #[allow(unused_mut)]
    let mut v: Vec<Box<dyn KmsBackend>> = vec![Box::new(Local)];
    #[cfg(feature = "pkcs11")]
    v.push(Box::new(Pkcs11));
    #[cfg(feature = "aws-kms")]
    v.push(Box::new(Aws));
    v
}
