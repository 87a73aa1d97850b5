//! TPC-H through DataFusion (issue 18): colvault aes256 tables against DataFusion's own scan of
//! plaintext Parquet files of the same data, and of Parquet modular encryption (PME, AES-GCM, one
//! key for the footer and every column), same codec (zstd level 1) and row-group size (1 Mi rows),
//! in one run, interleaved.
//!
//! ```sh
//! cargo bench --bench sql_tpch --profile release --all-features                 # SF 1
//! cargo bench --bench sql_tpch --profile release --all-features -- --sf 0.1 --rounds 5
//! cargo bench --bench sql_tpch --profile release --all-features -- --queries 1,6,19
//! cargo bench --bench sql_tpch --profile release --all-features -- --algorithm aesctr
//! cargo bench --bench sql_tpch --profile release --all-features -- --queries 11 --explain  # both plans
//! cargo bench --bench sql_tpch --profile release --all-features -- --queries 11 --analyze  # and metrics
//! ```
//!
//! Each query runs `--rounds` times (default 3) on each engine, rotating which engine goes first
//! every round so that a busy moment of the machine hits all; the table reports each engine's
//! median, the ratios colvault / Parquet and colvault / PME, and the totals of the medians. Every
//! colvault and PME result is checked against the Parquet result (the same comparison as `tests/sql_tpch.rs`). Data generation and
//! loading are not timed.

mod common;

#[path = "../tests/common/tpch.rs"]
mod tpch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use colvault::crypto::SecretKey;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sql::SqlSession;
use colvault::Algorithm;
use datafusion::common::config::ConfigFileDecryptionProperties;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::WriterProperties;

/// colvault's table writer defaults: zstd level 1, row groups of at most 1 Mi rows.
const ROW_GROUP_ROWS: usize = 1 << 20;

struct Args {
    sf: f64,
    rounds: usize,
    /// The queries to run (`--queries 1,6,19`; default all 22).
    queries: Vec<i32>,
    /// Print both engines' physical plans of the queries instead of timing them (`--explain`), with
    /// each operator's metrics after running them (`--analyze`).
    explain: bool,
    analyze: bool,
    /// colvault's algorithm (`--algorithm aesctr`; default aes256).
    algorithm: Algorithm,
    /// Time one engine alone (`--only parquet|colvault|pme`), as a profiler wants it.
    only: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        sf: 1.0,
        rounds: 3,
        queries: (1..=22).collect(),
        explain: false,
        analyze: false,
        algorithm: Algorithm::Aes256Gcm,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--sf" => a.sf = it.next().and_then(|v| v.parse().ok()).expect("--sf N"),
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--explain" => a.explain = true,
            "--algorithm" => {
                a.algorithm = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--algorithm aes256|aesctr")
            }
            "--analyze" => (a.explain, a.analyze) = (true, true),
            "--only" => {
                let engine = it.next().expect("--only parquet|colvault|pme");
                let k = ["parquet", "colvault", "pme"].iter().position(|e| *e == engine);
                a.only = Some(k.expect("--only parquet|colvault|pme"));
            }
            "--queries" => {
                a.queries = it
                    .next()
                    .expect("--queries N,N,...")
                    .split(',')
                    .map(|q| {
                        q.trim()
                            .trim_start_matches(['Q', 'q'])
                            .parse()
                            .expect("--queries 1,6,...")
                    })
                    .collect()
            }
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

async fn run(query: impl AsyncFn(&str) -> Vec<RecordBatch>, n: i32) -> (Duration, Vec<RecordBatch>) {
    let start = Instant::now();
    let answer = tpch::answer(n, async |s| Ok::<_, std::convert::Infallible>(query(s).await)).await;
    (start.elapsed(), answer.unwrap())
}

/// Zstd level 1 and row groups of [`ROW_GROUP_ROWS`], as colvault tables write, maybe encrypted.
fn writer_props(encryption: Option<Arc<FileEncryptionProperties>>) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    if let Some(e) = encryption {
        b = b.with_file_encryption_properties(e);
    }
    b.build()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let start = Instant::now();
    let data: Vec<(&str, Vec<RecordBatch>)> = tpch::TABLES
        .iter()
        .map(|&t| (t, tpch::generate(t, a.sf, 64 * 1024)))
        .collect();
    println!("generated TPC-H SF {} in {:.1} s", a.sf, start.elapsed().as_secs_f64());

    // Plaintext Parquet, as DataFusion reads it.
    let plain = SessionContext::new();
    let start = Instant::now();
    let mut parquet_bytes = 0;
    for (name, batches) in &data {
        let path = tmp.path().join(format!("{name}.parquet"));
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batches[0].schema(),
            Some(writer_props(None)),
        )
        .unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        parquet_bytes += std::fs::metadata(&path).unwrap().len();
        rt.block_on(plain.register_parquet(*name, path.to_str().unwrap(), ParquetReadOptions::default()))
            .unwrap();
    }
    println!(
        "wrote Parquet ({:.1} MB) in {:.1} s",
        parquet_bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    // Parquet modular encryption (AES-GCM, uniform: every column and the footer under one key,
    // as colvault keeps a file's columns under one file key), as DataFusion reads it.
    let footer_key = SecretKey::generate()
        .unwrap()
        .insecure_expose_for_test_vectors()
        .to_vec();
    let pme = SessionContext::new();
    let start = Instant::now();
    let mut pme_bytes = 0;
    for (name, batches) in &data {
        let path = tmp.path().join(format!("{name}.pme.parquet"));
        let encryption = FileEncryptionProperties::builder(footer_key.clone()).build().unwrap();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batches[0].schema(),
            Some(writer_props(Some(encryption))),
        )
        .unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        pme_bytes += std::fs::metadata(&path).unwrap().len();
        let decryption = ConfigFileDecryptionProperties {
            footer_key_as_hex: colvault::codec::hex(&footer_key),
            ..Default::default()
        };
        let options = ParquetReadOptions::default().file_decryption_properties(decryption);
        rt.block_on(pme.register_parquet(*name, path.to_str().unwrap(), options))
            .unwrap();
    }
    println!(
        "wrote Parquet modular encryption ({:.1} MB) in {:.1} s",
        pme_bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    // colvault (aes256 unless --algorithm says otherwise), one file per table.
    let catalog = colvault::catalog::open(&format!("sqlite:{}", tmp.path().join("catalog.db").display())).unwrap();
    let kdir = tmp.path().join("keys");
    std::fs::create_dir_all(&kdir).unwrap();
    let settings = ProjectSettings::encrypted(a.algorithm, KeyChoice::ProjectDefault);
    let p = Project::create(
        &catalog,
        tmp.path().join("tpch"),
        "tpch",
        settings,
        common::local_keys(&kdir),
    )
    .unwrap();
    let start = Instant::now();
    let mut colvault_bytes = 0;
    for (name, batches) in &data {
        let (t, _) = p
            .create_table_from(name, batches[0].schema(), batches.iter().cloned())
            .unwrap();
        colvault_bytes += t.head().unwrap().files.iter().map(|f| f.len).sum::<u64>();
    }
    println!(
        "wrote colvault {} ({:.1} MB) in {:.1} s",
        a.algorithm,
        colvault_bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    drop(data);
    let session = SqlSession::for_project(&p);

    let on_parquet = async |sql: &str| plain.sql(sql).await.unwrap().collect().await.unwrap();
    let on_colvault = async |sql: &str| session.query(sql).await.unwrap();
    let on_pme = async |sql: &str| pme.sql(sql).await.unwrap().collect().await.unwrap();

    if a.explain {
        for &n in &a.queries {
            let stmt = &tpch::statements(n)[tpch::answer_index(n)];
            let q = format!("EXPLAIN {}{stmt}", if a.analyze { "ANALYZE " } else { "" });
            let show = |b: Vec<RecordBatch>| arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string();
            println!("Q{n} on Parquet:\n{}", show(rt.block_on(on_parquet(&q))));
            println!("Q{n} on colvault:\n{}", show(rt.block_on(on_colvault(&q))));
        }
        return;
    }
    if let Some(engine) = a.only {
        for &n in &a.queries {
            let times = (0..a.rounds)
                .map(|_| match engine {
                    0 => rt.block_on(run(&on_parquet, n)).0,
                    1 => rt.block_on(run(&on_colvault, n)).0,
                    _ => rt.block_on(run(&on_pme, n)).0,
                })
                .collect();
            println!(
                "Q{n}: median of {} runs {:.1} ms",
                a.rounds,
                median(times).as_secs_f64() * 1e3
            );
        }
        return;
    }
    println!(
        "\n{:<5} {:>11} {:>12} {:>7} {:>9} {:>12}",
        "query", "parquet ms", "colvault ms", "ratio", "PME ms", "colvault/PME"
    );
    let mut totals = [Duration::ZERO; 3];
    let mut worst: (f64, i32) = (0.0, 0);
    for &n in &a.queries {
        let mut times: [Vec<Duration>; 3] = Default::default();
        for round in 0..a.rounds {
            // Rotate which engine goes first, so that a busy moment of the machine hits all.
            for k in 0..3 {
                let engine = (round + k) % 3;
                let (d, r) = match engine {
                    0 => rt.block_on(run(&on_parquet, n)),
                    1 => rt.block_on(run(&on_colvault, n)),
                    _ => rt.block_on(run(&on_pme, n)),
                };
                times[engine].push(d);
                if round == 0 && engine != 0 {
                    let (_, expected) = rt.block_on(run(&on_parquet, n));
                    assert_eq!(
                        tpch::canonical_rows(&r),
                        tpch::canonical_rows(&expected),
                        "Q{n}: {} differs from Parquet",
                        if engine == 1 { "colvault" } else { "PME" }
                    );
                }
            }
        }
        let m = times.map(median);
        for (t, d) in totals.iter_mut().zip(m) {
            *t += d;
        }
        let ratio = m[1].as_secs_f64() / m[0].as_secs_f64();
        if ratio > worst.0 {
            worst = (ratio, n);
        }
        println!(
            "Q{:<4} {:>11.1} {:>12.1} {:>7.3} {:>9.1} {:>12.3}",
            n,
            m[0].as_secs_f64() * 1e3,
            m[1].as_secs_f64() * 1e3,
            ratio,
            m[2].as_secs_f64() * 1e3,
            m[1].as_secs_f64() / m[2].as_secs_f64()
        );
    }
    println!(
        "{:<5} {:>11.1} {:>12.1} {:>7.3} {:>9.1} {:>12.3}",
        "total",
        totals[0].as_secs_f64() * 1e3,
        totals[1].as_secs_f64() * 1e3,
        totals[1].as_secs_f64() / totals[0].as_secs_f64(),
        totals[2].as_secs_f64() * 1e3,
        totals[1].as_secs_f64() / totals[2].as_secs_f64()
    );
    println!(
        "\nmedians of {} runs per query and engine, engines rotated run by run; worst query (colvault / \
         Parquet) Q{} at {:.3}",
        a.rounds, worst.1, worst.0
    );
}
