//! TPC-H through DataFusion (issue 18): colvault aes256 tables against DataFusion's own scan of
//! plaintext Parquet files of the same data, same codec (zstd level 1) and row-group size (1 Mi
//! rows), in one run, interleaved.
//!
//! ```sh
//! cargo bench --bench sql_tpch --profile release --all-features                 # SF 1
//! cargo bench --bench sql_tpch --profile release --all-features -- --sf 0.1 --rounds 5
//! cargo bench --bench sql_tpch --profile release --all-features -- --queries 1,6,19
//! ```
//!
//! Each query runs `--rounds` times (default 3) on each engine, alternating engines every run so
//! that a busy moment of the machine hits both; the table reports each engine's median, their
//! ratio (colvault / Parquet) and the totals of the medians. Every colvault result is checked
//! against the Parquet result (the same comparison as `tests/sql_tpch.rs`). Data generation and
//! loading are not timed.

mod common;

#[path = "../tests/common/tpch.rs"]
mod tpch;

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sql::SqlSession;
use colvault::Algorithm;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// colvault's table writer defaults: zstd level 1, row groups of at most 1 Mi rows.
const ROW_GROUP_ROWS: usize = 1 << 20;

struct Args {
    sf: f64,
    rounds: usize,
    /// The queries to run (`--queries 1,6,19`; default all 22).
    queries: Vec<i32>,
}

fn args() -> Args {
    let mut a = Args {
        sf: 1.0,
        rounds: 3,
        queries: (1..=22).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--sf" => a.sf = it.next().and_then(|v| v.parse().ok()).expect("--sf N"),
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
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
    let mut answer = Vec::new();
    for (i, stmt) in tpch::statements(n).iter().enumerate() {
        let got = query(stmt).await;
        if i == tpch::answer_index(n) {
            answer = got;
        }
    }
    (start.elapsed(), answer)
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
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batches[0].schema(), Some(props)).unwrap();
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

    // colvault, aes256, one file per table.
    let catalog = colvault::catalog::open(&format!("sqlite:{}", tmp.path().join("catalog.db").display())).unwrap();
    let kdir = tmp.path().join("keys");
    std::fs::create_dir_all(&kdir).unwrap();
    let settings = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault);
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
        "wrote colvault aes256 ({:.1} MB) in {:.1} s",
        colvault_bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    drop(data);
    let session = SqlSession::for_project(&p);

    let on_parquet = async |sql: &str| plain.sql(sql).await.unwrap().collect().await.unwrap();
    let on_colvault = async |sql: &str| session.query(sql).await.unwrap();

    println!(
        "\n{:<5} {:>12} {:>12} {:>8}",
        "query", "parquet ms", "colvault ms", "ratio"
    );
    let (mut total_p, mut total_c) = (Duration::ZERO, Duration::ZERO);
    let mut worst: (f64, i32) = (0.0, 0);
    for &n in &a.queries {
        let (mut tp, mut tc) = (Vec::new(), Vec::new());
        for round in 0..a.rounds {
            // Alternate which engine goes first.
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            for parquet_first in order {
                if parquet_first {
                    let (d, r) = rt.block_on(run(&on_parquet, n));
                    tp.push(d);
                    if round == 0 {
                        let (_, c) = rt.block_on(run(&on_colvault, n));
                        assert_eq!(
                            tpch::canonical_rows(&c),
                            tpch::canonical_rows(&r),
                            "Q{n}: colvault differs from Parquet"
                        );
                    }
                } else {
                    let (d, _) = rt.block_on(run(&on_colvault, n));
                    tc.push(d);
                }
            }
        }
        let (mp, mc) = (median(tp), median(tc));
        total_p += mp;
        total_c += mc;
        let ratio = mc.as_secs_f64() / mp.as_secs_f64();
        if ratio > worst.0 {
            worst = (ratio, n);
        }
        println!(
            "Q{:<4} {:>12.1} {:>12.1} {:>8.3}",
            n,
            mp.as_secs_f64() * 1e3,
            mc.as_secs_f64() * 1e3,
            ratio
        );
    }
    println!(
        "{:<5} {:>12.1} {:>12.1} {:>8.3}",
        "total",
        total_p.as_secs_f64() * 1e3,
        total_c.as_secs_f64() * 1e3,
        total_c.as_secs_f64() / total_p.as_secs_f64()
    );
    println!(
        "\nmedians of {} runs per query and engine, interleaved; worst query Q{} at {:.3}",
        a.rounds, worst.1, worst.0
    );
}
