//! Latency of the AWS KMS backend per round trip (GenerateDataKey, Decrypt, ReEncrypt through
//! `AwsKms`, after its key check is cached) and the round trips of 1,000 files under one CMK
//! through the KEK cache.
//!
//! ```text
//! cargo bench --features aws-kms --bench kms_aws                       # starts moto_server itself
//! cargo bench --features aws-kms --bench kms_aws -- --endpoint URL --iterations 500
//! ```
//!
//! moto_server is taken from COLVAULT_MOTO_SERVER, else PATH, else the `.ci/run` virtual
//! environment (/root/.cache/colvault-venv/bin/moto_server). With `--endpoint`, the AWS_* static
//! credentials and region come from the environment (test values if unset).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colvault::kms::{
    AwsKms, AwsKmsOptions, CacheOptions, CreateKeyRequest, EncryptionContext, KeyCache, Kms, KmsAdmin, Principal,
};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COLVAULT_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("moto_server").is_file() {
            return Some(dir.join("moto_server"));
        }
    }
    Some(PathBuf::from("/root/.cache/colvault-venv/bin/moto_server")).filter(|p| p.is_file())
}

/// Starts moto on a free loopback port; its endpoint once it answers.
fn start_moto() -> (Moto, String) {
    let program = moto_program().expect("moto_server not found: set COLVAULT_MOTO_SERVER or pass --endpoint");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Moto(child), endpoint)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len();
    let mean = samples.iter().sum::<Duration>() / n as u32;
    let at = |q: f64| samples[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "{name:<16} n={n:<5} mean {:>8.3} ms  p50 {:>8.3} ms  p99 {:>8.3} ms",
        mean.as_secs_f64() * 1e3,
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let iterations: usize = arg("--iterations").and_then(|s| s.parse().ok()).unwrap_or(200);
    let (_moto, endpoint) = match arg("--endpoint") {
        Some(e) => (None, e),
        None => {
            let (m, e) = start_moto();
            (Some(m), e)
        }
    };
    println!("AWS KMS API at {endpoint}, {iterations} calls each");
    let opts = AwsKmsOptions::new(
        Some(endpoint),
        env_or("AWS_REGION", "us-east-1"),
        env_or("AWS_ACCESS_KEY_ID", "colvault-bench"),
        zeroize::Zeroizing::new(env_or("AWS_SECRET_ACCESS_KEY", "colvault-bench-secret")),
    );
    let kms = Arc::new(AwsKms::open(opts).expect("opening the AWS KMS client"));
    let principal = Principal::new("bench-project").unwrap();
    let key = kms
        .create_key(CreateKeyRequest::project_default(principal.clone()))
        .expect("CreateKey")
        .id;
    let ctx = |i: usize| {
        EncryptionContext::new()
            .with("project", "p")
            .with("file", i.to_string())
    };

    // Warm up (connection, key check cached).
    let (_, warm) = kms.generate_data_key(&principal, &key, &ctx(0)).unwrap();
    kms.decrypt_data_key(&principal, &warm, &ctx(0)).unwrap();

    let mut wraps = Vec::with_capacity(iterations);
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        let (_, w) = kms.generate_data_key(&principal, &key, &ctx(i)).unwrap();
        samples.push(t.elapsed());
        wraps.push(w);
    }
    report("GenerateDataKey", samples);
    let samples = wraps
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let t = Instant::now();
            kms.decrypt_data_key(&principal, w, &ctx(i)).unwrap();
            t.elapsed()
        })
        .collect();
    report("Decrypt", samples);
    let samples = wraps
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let t = Instant::now();
            kms.rewrap(&principal, w, &ctx(i)).unwrap();
            t.elapsed()
        })
        .collect();
    report("ReEncrypt", samples);

    // 1,000 files through two KEK caches (a writer and a reader), the key check not cached.
    kms.invalidate();
    let before = kms.requests();
    let writer = KeyCache::new(kms.clone(), CacheOptions::default()).unwrap();
    let reader = KeyCache::new(kms.clone(), CacheOptions::default()).unwrap();
    let kek_ctx = EncryptionContext::new().with("project", "p");
    let t = Instant::now();
    let envs: Vec<_> = (0..1000)
        .map(|i| writer.new_data_key(&principal, &key, &kek_ctx, &ctx(i)).unwrap().1)
        .collect();
    let written = kms.requests() - before;
    for (i, e) in envs.iter().enumerate() {
        reader.open_data_key(&principal, e, &kek_ctx, &ctx(i)).unwrap();
    }
    let total = kms.requests() - before;
    println!(
        "1,000 files: write {written} HTTP requests (3 key-check requests in parallel + GenerateDataKey), \
         read {} (Decrypt), {:.1} ms in all",
        total - written,
        t.elapsed().as_secs_f64() * 1e3
    );
}
