//! `Pkcs11Kms` on SoftHSM2 (issue 17): the latency of one KMS round trip (generate, decrypt, rewrap
//! a data key under a CMK on the token) and the round trips that 1,000 files under one CMK cost
//! through the KEK cache.
//!
//! ```sh
//! cargo bench --bench kms_pkcs11 --profile release --features pkcs11
//! cargo bench --bench kms_pkcs11 --profile release --features pkcs11 -- --calls 2000
//! ```
//!
//! A fresh token is initialised in a temporary SoftHSM2 token directory (as the tests do). Every
//! round trip reads and opens the sealed state record (a `C_GetAttributeValue` and an AES-GCM
//! `C_Decrypt` under the metadata key), finds the version's key object and runs one AES-GCM
//! `C_Encrypt` or `C_Decrypt` (two for a rewrap). One wrap in [`WRAP_LEASE`] also reserves
//! invocations in the record (a sealed record replaced on the token): the mean shows it, the
//! median does not.

#[allow(dead_code)]
#[path = "../tests/common/softhsm.rs"]
mod softhsm;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colvault::crypto::SecretKey;
use colvault::kms::pkcs11::WRAP_LEASE;
use colvault::kms::{
    CacheOptions, CreateKeyRequest, EncryptionContext, KeyCache, KeyId, Kms, KmsAdmin, Pkcs11Kms, Principal, WrappedKey,
};

struct Counting {
    inner: Arc<dyn Kms>,
    calls: AtomicUsize,
}

impl Kms for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn generate_data_key(
        &self,
        p: &Principal,
        k: &KeyId,
        c: &EncryptionContext,
    ) -> colvault::Result<(SecretKey, WrappedKey)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.generate_data_key(p, k, c)
    }
    fn decrypt_data_key(&self, p: &Principal, w: &WrappedKey, c: &EncryptionContext) -> colvault::Result<SecretKey> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt_data_key(p, w, c)
    }
    fn rewrap(&self, p: &Principal, w: &WrappedKey, c: &EncryptionContext) -> colvault::Result<WrappedKey> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.rewrap(p, w, c)
    }
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let n = times.len();
    let mean = times.iter().sum::<Duration>() / n as u32;
    let pct = |p: usize| times[(n * p / 100).min(n - 1)];
    println!(
        "{what:<22} n={n:<6} mean {:>8.1} us  median {:>8.1} us  p99 {:>8.1} us  max {:>8.1} us",
        mean.as_secs_f64() * 1e6,
        pct(50).as_secs_f64() * 1e6,
        pct(99).as_secs_f64() * 1e6,
        times[n - 1].as_secs_f64() * 1e6,
    );
}

fn main() {
    let mut calls = 1000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--calls" {
            calls = args.next().and_then(|v| v.parse().ok()).expect("--calls N");
        }
    }
    let Some(token) = softhsm::token("bench") else { return };
    let kms = Arc::new(Pkcs11Kms::open(token.options()).unwrap());
    let project = Principal::new("prj_bench").unwrap();
    let cmk = kms
        .create_key(CreateKeyRequest::project_default(project.clone()))
        .unwrap()
        .id;
    let ctx = EncryptionContext::new().with("project", "prj_bench_id");
    println!(
        "Pkcs11Kms on SoftHSM2 ({}), wrap lease {WRAP_LEASE}",
        token.module.display()
    );

    // Warm-up (and the first lease reservation).
    let (_, w) = kms.generate_data_key(&project, &cmk, &ctx).unwrap();
    kms.decrypt_data_key(&project, &w, &ctx).unwrap();

    let mut gen = Vec::with_capacity(calls);
    let mut wrapped = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let (_, w) = kms.generate_data_key(&project, &cmk, &ctx).unwrap();
        gen.push(t.elapsed());
        wrapped.push(w);
    }
    report("generate_data_key", gen);
    let mut dec = Vec::with_capacity(calls);
    for w in &wrapped {
        let t = Instant::now();
        kms.decrypt_data_key(&project, w, &ctx).unwrap();
        dec.push(t.elapsed());
    }
    report("decrypt_data_key", dec);
    kms.rotate(&cmk).unwrap();
    let mut rew = Vec::with_capacity(calls);
    for w in &wrapped {
        let t = Instant::now();
        kms.rewrap(&project, w, &ctx).unwrap();
        rew.push(t.elapsed());
    }
    report("rewrap (v1 -> v2)", rew);

    // 1,000 files under one CMK through the KEK cache: writer and reader each count their calls.
    let counting = |kms: &Arc<Pkcs11Kms>| {
        Arc::new(Counting {
            inner: kms.clone(),
            calls: AtomicUsize::new(0),
        })
    };
    let (wc, rc) = (counting(&kms), counting(&kms));
    let writer = KeyCache::new(wc.clone(), CacheOptions::default()).unwrap();
    let reader = KeyCache::new(rc.clone(), CacheOptions::default()).unwrap();
    let dek_ctx = |i: usize| ctx.clone().with("file", format!("f{i:04}"));
    let t = Instant::now();
    let envs: Vec<_> = (0..1000)
        .map(|i| writer.new_data_key(&project, &cmk, &ctx, &dek_ctx(i)).unwrap().1)
        .collect();
    let write_time = t.elapsed();
    let t = Instant::now();
    for (i, e) in envs.iter().enumerate() {
        reader.open_data_key(&project, e, &ctx, &dek_ctx(i)).unwrap();
    }
    let read_time = t.elapsed();
    println!(
        "1,000 files, one CMK:  write {} KMS round trips ({:.1} ms in all), read {} KMS round trips ({:.1} ms in all)",
        wc.calls.load(Ordering::SeqCst),
        write_time.as_secs_f64() * 1e3,
        rc.calls.load(Ordering::SeqCst),
        read_time.as_secs_f64() * 1e3,
    );
}
