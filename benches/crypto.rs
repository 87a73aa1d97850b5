//! Seal and open throughput per algorithm on 64 MiB, with one thread and with all threads, beside
//! the raw primitives (AES-256-CTR keystream, AES-256-GCM in one call, keyed BLAKE3, RC4).
//!
//! Run: `cargo bench --bench crypto` (add `-- --quick` for a fast pass).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use colvault::crypto::{
    ctr_apply_parallel, default_provider, Algorithm, ChunkKind, ChunkOpener, ChunkSealer, SecretKey,
};

const LEN: usize = 64 << 20;

fn pools() -> Vec<(String, rayon::ThreadPool)> {
    let all = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut v = vec![("1 thread".to_string(), 1)];
    if all > 1 {
        v.push((format!("{all} threads"), all));
    }
    v.into_iter()
        .map(|(name, n)| (name, rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()))
        .collect()
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("primitive");
    g.throughput(Throughput::Bytes(LEN as u64)).sample_size(10);
    let key = SecretKey::generate().unwrap();
    let mut buf = vec![0u8; LEN];
    let ctr = default_provider().aes256_ctr(&key).unwrap();
    let gcm = default_provider().aes256_gcm(&key).unwrap();
    for (name, pool) in pools() {
        g.bench_function(BenchmarkId::new("aes256-ctr keystream", &name), |b| {
            b.iter(|| pool.install(|| ctr_apply_parallel(&*ctr, &[0u8; 16], &mut buf, 1 << 20).unwrap()))
        });
    }
    g.bench_function("aes256-gcm one call/1 thread", |b| {
        b.iter(|| gcm.seal_in_place(&[0u8; 12], b"aad", &mut buf).unwrap())
    });
    let mac_key = [7u8; 32];
    g.bench_function("keyed blake3/1 thread", |b| {
        b.iter(|| blake3::keyed_hash(&mac_key, &buf))
    });
    let mut small = vec![0u8; 8 << 20];
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("rc4-drop3072/1 thread", |b| {
        b.iter(|| colvault::crypto::rc4::apply_keystream(&key, &mut small).unwrap())
    });
    g.finish();
}

fn seal_open(c: &mut Criterion) {
    let dek = SecretKey::generate().unwrap();
    for alg in Algorithm::ALL {
        let len = if alg == Algorithm::Rc4 { 8 << 20 } else { LEN };
        let mut g = c.benchmark_group(format!("chunk/{alg}"));
        g.throughput(Throughput::Bytes(len as u64)).sample_size(10);
        let plain = vec![0x5au8; len];
        for (name, pool) in pools() {
            let mut buf = plain.clone();
            let mut rg = 0u32;
            g.bench_function(BenchmarkId::new("seal", &name), |b| {
                // A fresh sealer per file in real use; here one sealer, a new row group per iteration.
                let sealer = ChunkSealer::new(alg, &dek, 0).unwrap();
                b.iter(|| {
                    rg += 1;
                    pool.install(|| sealer.seal_detached(rg, ChunkKind::Data, &mut buf).unwrap())
                })
            });
            let sealer = ChunkSealer::new(alg, &dek, 0).unwrap();
            let opener = ChunkOpener::new(alg, &dek, sealer.file_id(), 0).unwrap();
            let mut sealed = plain.clone();
            sealer.seal(0, ChunkKind::Data, &mut sealed).unwrap();
            g.bench_function(BenchmarkId::new("open", &name), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |s| pool.install(|| opener.open(0, ChunkKind::Data, s).unwrap()),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, primitives, seal_open);
criterion_main!(benches);
