//! What the benchmarks share.

use std::path::Path;
use std::sync::Arc;

use colvault::kms::{Argon2Params, CacheOptions, KeyCache, LocalKms, LocalKmsOptions, RootSecret};
use colvault::project::Keys;

/// A fresh local keystore in `dir` (fast key derivation: benchmarks time data, not the keystore)
/// and its key cache.
pub fn local_keys(dir: &Path) -> Keys {
    let opts = LocalKmsOptions::new().with_argon2(Argon2Params::insecure_for_tests());
    let kms =
        Arc::new(LocalKms::create(dir.join("keystore"), RootSecret::passphrase("bench passphrase"), opts).unwrap());
    let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default()).unwrap());
    Keys { kms, cache }
}
