//! Shared test fixtures: a LocalKms in a temporary directory, a project key, key access.
#![allow(dead_code)]

use std::sync::Arc;

/// A throwaway PostgreSQL server (feature `postgres`).
#[cfg(feature = "postgres")]
pub mod pg;

/// A throwaway moto server: the S3 and KMS APIs (features `s3`, `aws-kms`).
#[cfg(any(feature = "s3", feature = "aws-kms"))]
pub mod moto;

/// A moto server enforcing IAM, with a user per process (feature `ballista`).
#[cfg(feature = "ballista")]
pub mod moto_iam;

/// A store wrapper that fails requests or holds GETs on demand.
pub mod faulty;

/// A partitioned events table's rows.
pub mod events;

/// Manifests committed by a writer holding the project's key.
pub mod insider;

/// Project locations on each data-plane backend (local, memory, S3).
pub mod stores;

/// TPC-H data and queries (feature `datafusion`).
#[cfg(feature = "datafusion")]
pub mod tpch;

/// SoftHSM2 with a fresh token per test (feature `pkcs11`).
#[cfg(feature = "pkcs11")]
pub mod softhsm;

/// The key-state matrix's KMS backends: a fresh KMS, catalog and clock per cell.
pub mod kms_backend;

/// `AwsKms` on that moto server (feature `aws-kms`).
#[cfg(feature = "aws-kms")]
pub mod aws_kms;

use colvault::clock::ManualClock;
use colvault::kms::{
    Argon2Params, CacheOptions, CreateKeyRequest, KeyCache, KeyId, KmsAdmin, LocalKms, LocalKmsOptions, Principal,
    RootSecret,
};
use colvault::KeyAccess;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The catalog: SQLite in the fixture's directory.
    pub catalog: Arc<dyn colvault::catalog::Catalog>,
    pub kms: Arc<LocalKms>,
    pub clock: Arc<ManualClock>,
    pub cache: Arc<KeyCache>,
    pub project: Principal,
    pub cmk: KeyId,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        ));
        let opts = LocalKmsOptions::new()
            .with_clock(clock.clone())
            .with_argon2(Argon2Params::insecure_for_tests());
        let kms = Arc::new(
            LocalKms::create(
                dir.path().join("keystore"),
                RootSecret::passphrase("test passphrase"),
                opts,
            )
            .unwrap(),
        );
        let project = Principal::new("prj_test").unwrap();
        let cmk = kms
            .create_key(CreateKeyRequest::project_default(project.clone()))
            .unwrap()
            .id;
        let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default().with_clock(clock.clone())).unwrap());
        let catalog = catalog_in(dir.path());
        Fixture {
            dir,
            catalog,
            kms,
            clock,
            cache,
            project,
            cmk,
        }
    }

    pub fn access(&self) -> KeyAccess {
        KeyAccess::new(self.cache.clone(), self.project.clone(), "prj_test_id", "tbl_test_id")
    }

    pub fn new_key(&self) -> KeyId {
        self.kms
            .create_key(CreateKeyRequest::project_default(self.project.clone()))
            .unwrap()
            .id
    }
}

/// `n` rows of a single non-null Int64 column `id`, the values `start .. start + n`.
pub fn id_batch(start: i64, n: i64) -> arrow::array::RecordBatch {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "id",
        arrow::datatypes::DataType::Int64,
        false,
    )]));
    arrow::array::RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int64Array::from(
            (start..start + n).collect::<Vec<_>>(),
        ))],
    )
    .unwrap()
}

/// The project key services of the fixture.
pub fn keys(fx: &Fixture) -> colvault::project::Keys {
    colvault::project::Keys {
        kms: fx.kms.clone(),
        cache: fx.cache.clone(),
    }
}

/// The SQLite catalog `catalog.db` in `dir` (each call opens its own handle on the same file).
pub fn catalog_in(dir: &std::path::Path) -> Arc<dyn colvault::catalog::Catalog> {
    colvault::catalog::open(&format!("sqlite:{}", dir.join("catalog.db").display())).unwrap()
}

/// A multi-threaded tokio runtime, for the SQL tests.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `batches` as a text table, to compare results.
pub fn text(batches: &[arrow::array::RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string()
}
