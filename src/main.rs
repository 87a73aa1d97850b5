//! The `colvault` command line tool: a thin layer over the library.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use colvault::crypto::{Algorithm, ChunkKind, ChunkOpener, ChunkSealer, FileId, SecretKey};

/// colvault: a columnar table format with encryption built in.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measures seal and open throughput of every algorithm on this machine (all threads).
    Speed {
        /// Size of the chunk sealed and opened, in MiB.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
        mib: u32,
        /// How many times each measurement runs; the best run is reported.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
    },
}

fn speed(mib: u32, runs: u32) -> colvault::Result<()> {
    let len = mib as usize * (1 << 20);
    let dek = SecretKey::generate()?;
    let file = FileId::random()?;
    println!(
        "{:<8} {:>12} {:>12}   ({mib} MiB chunk, best of {runs}, {} threads)",
        "algorithm",
        "seal MB/s",
        "open MB/s",
        rayon::current_num_threads()
    );
    for alg in Algorithm::ALL {
        let sealer = ChunkSealer::new(alg, &dek, file, alg.id() as u32)?;
        let opener = ChunkOpener::new(alg, &dek, file, alg.id() as u32)?;
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
                    what: "speed self-check: opened data differs".into(),
                });
            }
        }
        let mb = len as f64 / 1e6;
        println!("{:<8} {:>12.0} {:>12.0}", alg.name(), mb / best_seal, mb / best_open);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Speed { mib, runs } => speed(mib, runs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
