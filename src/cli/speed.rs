//! `colvault speed`: seal and open throughput of every algorithm and cipher provider on this machine.

use std::time::Instant;

use colvault::crypto::{providers, Algorithm, ChunkKind, ChunkOpener, ChunkSealer, SecretKey};

pub fn speed(mib: u32, runs: u32) -> colvault::Result<()> {
    let len = mib as usize * (1 << 20);
    let dek = SecretKey::generate()?;
    println!(
        "{:<8} {:<10} {:>12} {:>12}   ({mib} MiB chunk, best of {runs}, {} threads)",
        "algorithm",
        "provider",
        "seal MB/s",
        "open MB/s",
        rayon::current_num_threads()
    );
    // RC4 and `none` do not use AES, so they are measured once.
    let cases = Algorithm::ALL.into_iter().flat_map(|alg| {
        let uses_aes = matches!(alg, Algorithm::Aes256Gcm | Algorithm::Aes256Ctr);
        let ps = providers();
        ps.into_iter()
            .take(if uses_aes { ps.len() } else { 1 })
            .map(move |p| (alg, p, uses_aes))
    });
    for (alg, provider, uses_aes) in cases {
        let sealer = ChunkSealer::with_provider(provider, alg, &dek, alg.id() as u32)?;
        let opener = ChunkOpener::with_provider(provider, alg, &dek, sealer.file_id(), alg.id() as u32)?;
        let (mut best_seal, mut best_open) = (f64::MAX, f64::MAX);
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for run in 0..runs {
            let mut buf = plain.clone();
            let t = Instant::now();
            sealer.seal(run, ChunkKind::Data, &mut buf)?;
            best_seal = best_seal.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            opener.open(run, ChunkKind::Data, &mut buf)?;
            best_open = best_open.min(t.elapsed().as_secs_f64());
            if buf != plain {
                return Err(colvault::Error::Integrity {
                    what: "the speed self-check (opened data differs from what was sealed)".into(),
                });
            }
        }
        let mb = len as f64 / 1e6;
        let name = if uses_aes { provider.name() } else { "-" };
        println!(
            "{:<8} {name:<10} {:>12.0} {:>12.0}",
            alg.name(),
            mb / best_seal,
            mb / best_open
        );
    }
    Ok(())
}
