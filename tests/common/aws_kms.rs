//! `AwsKms` on the moto server of this test binary (feature `aws-kms`), for the AWS KMS tests and
//! for wiring the backend into other suites (the key-state matrix): [`AwsFixture::new`] gives a
//! fresh `Arc<AwsKms>`, a catalog in a temporary directory and a KEK cache on a manual clock.
//!
//! What a matrix cell needs, through [`colvault::kms::KmsAdmin`] on `fixture.kms`:
//! * disable: `kms.disable(&cmk)`; pending deletion: `kms.schedule_deletion(&cmk, 7)`;
//!   no grant: `kms.revoke(&cmk, project.principal())`; rotation: `kms.rotate(&cmk)`;
//! * deleted, and a destroyed version: AWS KMS has no call for them; `delete_key` and
//!   `destroy_version` give `Error::KmsUnsupported` ([`unsupported_situation`]);
//! * after any of these the change is seen at once through the same `AwsKms` (it drops its cached
//!   key state); call `fixture.cache.invalidate()` for the KEK cache, as with `LocalKms`.
#![allow(dead_code)]

use std::sync::Arc;

use colvault::clock::ManualClock;
use colvault::kms::{AwsKms, AwsKmsOptions, CacheOptions, KeyCache};
use colvault::project::Keys;

use super::moto::{self, MotoServer};

/// Options reaching `server` with the test credentials (no environment read).
pub fn options(server: &MotoServer) -> AwsKmsOptions {
    AwsKmsOptions::new(
        Some(server.endpoint()),
        moto::REGION.to_string(),
        moto::ACCESS_KEY_ID.to_string(),
        zeroize::Zeroizing::new(moto::SECRET_ACCESS_KEY.to_string()),
    )
}

/// A fresh `AwsKms` on the moto server, or `None` when moto cannot run here (the test then
/// returns; see `common::moto::server`).
pub fn fresh(test: &str) -> Option<Arc<AwsKms>> {
    let server = moto::server(test)?;
    Some(Arc::new(AwsKms::open(options(server)).unwrap()))
}

/// A temporary directory with a SQLite catalog, an `AwsKms` on moto and a KEK cache on a manual
/// clock.
pub struct AwsFixture {
    pub dir: tempfile::TempDir,
    pub catalog: Arc<dyn colvault::catalog::Catalog>,
    pub kms: Arc<AwsKms>,
    pub clock: Arc<ManualClock>,
    pub cache: Arc<KeyCache>,
}

impl AwsFixture {
    /// `None` when moto cannot run here.
    pub fn new(test: &str) -> Option<Self> {
        let kms = fresh(test)?;
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        ));
        let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default().with_clock(clock.clone())).unwrap());
        let catalog = super::catalog_in(dir.path());
        Some(AwsFixture {
            dir,
            catalog,
            kms,
            clock,
            cache,
        })
    }

    /// The project key services of the fixture.
    pub fn keys(&self) -> Keys {
        Keys {
            kms: self.kms.clone(),
            cache: self.cache.clone(),
        }
    }
}

/// Whether `e` is the AWS backend's refusal of a situation the AWS KMS API cannot produce (a key
/// deleted on request, a destroyed version): the matrix can skip such cells with this check.
pub fn unsupported_situation(e: &colvault::Error) -> bool {
    matches!(e, colvault::Error::KmsUnsupported { .. })
}
