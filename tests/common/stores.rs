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

// ---- the data plane as an attacker with write access to it sees it ----

use bytes::Bytes;
use colvault::storage::Storage;

/// Every object under `s`, with its bytes (to save a table's or a directory's contents before an
/// attack and put them back after).
pub fn snapshot(s: &Storage) -> Vec<(String, Bytes)> {
    s.list("")
        .unwrap()
        .into_iter()
        .map(|e| {
            let b = s.get(&e.name).unwrap().unwrap();
            (e.name, b)
        })
        .collect()
}

/// Replaces everything under `s` by `objects` (removing what is there first): restoring a saved
/// snapshot, or copying another table's objects in.
pub fn replace_all(s: &Storage, objects: &[(String, Bytes)]) {
    s.delete_all("").unwrap();
    for (name, bytes) in objects {
        s.put(name, bytes.clone()).unwrap();
    }
}

/// Flips one bit of byte `at` of object `name`, in place.
pub fn flip(s: &Storage, name: &str, at: usize) {
    let mut b = s.get(name).unwrap().unwrap().to_vec();
    b[at] ^= 0x01;
    s.put(name, b.into()).unwrap();
}

/// What `s` holds, for "nothing was deleted" checks: each object's name and size. On a local
/// directory every file found by walking it, staging and hidden files included (which
/// `Storage::list` does not show).
pub fn inventory(s: &Storage) -> Vec<(String, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, e.metadata().unwrap().len()));
            }
        }
    }
    let mut out = Vec::new();
    match s.local_dir() {
        Some(dir) => walk(&dir, &dir, &mut out),
        None => out.extend(s.list("").unwrap().into_iter().map(|e| (e.name, e.size))),
    }
    out.sort();
    out
}

/// Whether nothing is at location `loc`: on a local directory, that the directory does not exist;
/// on an object store, that no object is under the prefix.
pub fn is_gone(loc: &str) -> bool {
    if !loc.contains("://") {
        return !Path::new(loc).exists();
    }
    Storage::open(loc, false).unwrap().list("").unwrap().is_empty()
}

/// The object name (relative to the table's storage) of a manifest file
/// [`Table::manifest_file`](colvault::table::Table::manifest_file) names.
pub fn manifest_object(t: &colvault::table::Table, version: u64) -> String {
    let f = t.manifest_file(version).unwrap();
    format!("_manifest/{}", f.file_name().unwrap().to_str().unwrap())
}

/// The settings objects (`*.cv`) at the top of a project's storage, sorted.
pub fn settings_objects(s: &Storage) -> Vec<String> {
    s.list("")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| !n.contains('/') && n.ends_with(".cv"))
        .collect()
}

/// The object name of the settings file the catalog records for `p`.
pub fn current_settings(p: &colvault::project::Project) -> String {
    let rec = p.catalog().project(p.name()).unwrap().unwrap();
    let hex: String = rec.settings_digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("project-{hex}.cv")
}
