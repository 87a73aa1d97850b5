//! Where a test puts its project: a local directory, a process-wide in-memory store, or a fresh
//! bucket on the moto S3 server (feature `s3`). Each backend gets the same tests through
//! [`backend_tests!`](crate::backend_tests).

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The data-plane backends the suites run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    Memory,
    S3,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty project location for `test` on `backend`, or `None` when the backend's service
/// is unavailable here (the test then returns after the harness printed why).
pub fn location(backend: Backend, dir: &Path, test: &str) -> Option<String> {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    match backend {
        Backend::Local => Some(dir.join(format!("p{n}")).display().to_string()),
        Backend::Memory => Some(format!("memory://{}-{}-{n}/proj", std::process::id(), sanitize(test))),
        Backend::S3 => s3_location(test),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(feature = "s3")]
fn s3_location(test: &str) -> Option<String> {
    let server = super::moto::server(test)?;
    let bucket = server.bucket(test);
    register_s3(server, &bucket);
    Some(format!("s3://{bucket}/sales"))
}

/// Serves `s3://BUCKET` in this process from an S3 client configured for the moto server
/// explicitly (no process environment is changed: tests run in parallel threads).
#[cfg(feature = "s3")]
pub fn register_s3(server: &super::moto::MotoServer, bucket: &str) {
    use object_store::aws::AmazonS3Builder;
    let s3 = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_bucket_name(bucket)
        .with_access_key_id(super::moto::ACCESS_KEY_ID)
        .with_secret_access_key(super::moto::SECRET_ACCESS_KEY)
        .with_region(super::moto::REGION)
        .with_allow_http(true)
        .build()
        .unwrap();
    colvault::storage::register_store(&format!("s3://{bucket}"), std::sync::Arc::new(s3));
}

#[cfg(not(feature = "s3"))]
fn s3_location(test: &str) -> Option<String> {
    eprintln!("SKIPPED {test} on S3: this build lacks feature `s3`");
    assert!(
        std::env::var("COLVAULT_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{test}: S3 tests need feature `s3` when COLVAULT_REQUIRE_SERVICES=1"
    );
    None
}

/// Runs each named test body `fn(Backend)` against every backend, as `NAME::local`,
/// `NAME::memory` and `NAME::s3`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::common::stores::Backend;
                #[test]
                fn local() {
                    super::$name(Backend::Local);
                }
                #[test]
                fn memory() {
                    super::$name(Backend::Memory);
                }
                #[test]
                fn s3() {
                    super::$name(Backend::S3);
                }
            }
        )*
    };
}
