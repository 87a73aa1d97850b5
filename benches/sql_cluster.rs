//! TPC-H on a Ballista cluster (issue 19): the 22 queries over an encrypted colvault project, on a
//! cluster of 1 and of 2 executors (a scheduler and the executors are `colvault cluster`
//! processes on this machine), and in one process for reference; total times, and the bytes the
//! executors moved over the network.
//!
//! ```sh
//! cargo bench --bench sql_cluster --profile release --all-features                 # SF 1
//! cargo bench --bench sql_cluster --profile release --all-features -- --sf 0.1 --rounds 1
//! ```
//!
//! The project is a local directory with the embedded catalog (SQLite) and keystore, which every
//! process opens with its own configuration (`COLVAULT_CATALOG`, `COLVAULT_KEYSTORE`,
//! `COLVAULT_PASSPHRASE`): the figures are the engine's, not an object store's. Every answer is
//! checked against the single process's.
//!
//! Network bytes are counted by relays: each executor listens on 127.0.0.2 and is reached through
//! a byte-counting relay on 127.0.0.1 (its advertised address), as is the scheduler. "data" is
//! what the executors' Arrow Flight services served (shuffle partitions fetched by other
//! executors, results fetched by the client); "control" is the gRPC traffic between scheduler,
//! executors and client (plans, task status, heartbeats). On one machine every executor could
//! read every shuffle file from disk, so the benchmark sets Ballista's
//! `ballista.shuffle.force_remote_read`: every shuffle partition is fetched over Flight,
//! as between machines (an executor's own partitions included).

mod common;

#[path = "../tests/common/tpch.rs"]
mod tpch;

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sql::cluster::ClusterSession;
use colvault::sql::SqlSession;
use colvault::Algorithm;

struct Args {
    sf: f64,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args { sf: 1.0, rounds: 2 };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--sf" => a.sf = it.next().and_then(|v| v.parse().ok()).expect("--sf N"),
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Relays 127.0.0.1:`port` to 127.0.0.2:`port`, counting the bytes both ways into `bytes` as
/// they pass (gRPC and Flight keep their connections open, so counting at close would miss them).
async fn relay(port: u16, bytes: Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let bytes = bytes.clone();
        tokio::spawn(async move {
            let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.2", port)).await else {
                return;
            };
            let (in_r, in_w) = inbound.into_split();
            let (out_r, out_w) = outbound.into_split();
            tokio::spawn(pipe(in_r, out_w, bytes.clone()));
            pipe(out_r, in_w, bytes).await;
        });
    }
}

/// Copies `from` to `to` until either ends, adding each chunk's length to `bytes`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(host: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect((host, port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {host}:{port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster of `n` executors, with relays counting what crosses them.
struct Cluster {
    _procs: Vec<Proc>,
    url: String,
    data: Arc<AtomicU64>,
    control: Arc<AtomicU64>,
}

fn start(rt: &tokio::runtime::Runtime, dir: &Path, env: &[(&str, String)], n: usize) -> Cluster {
    let colvault = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_colvault"));
        c.args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Proc(c.spawn().unwrap())
    };
    let (data, control) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let port = free_port();
    rt.spawn(relay(port, control.clone()));
    let mut procs = vec![colvault(&[
        "cluster",
        "scheduler",
        "--bind",
        &format!("127.0.0.2:{port}"),
    ])];
    wait_listening("127.0.0.2", port);
    for i in 0..n {
        let (flight, grpc) = (free_port(), free_port());
        rt.spawn(relay(flight, data.clone()));
        rt.spawn(relay(grpc, control.clone()));
        let work = dir.join(format!("work-{n}-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        procs.push(colvault(&[
            "cluster",
            "executor",
            "--scheduler",
            &format!("127.0.0.1:{port}"),
            "--host",
            "127.0.0.2",
            "--advertise-host",
            "127.0.0.1",
            "--flight-port",
            &flight.to_string(),
            "--grpc-port",
            &grpc.to_string(),
            "--work-dir",
            work.to_str().unwrap(),
        ]));
        wait_listening("127.0.0.2", flight);
    }
    std::thread::sleep(Duration::from_secs(2));
    Cluster {
        _procs: procs,
        url: format!("http://127.0.0.1:{port}"),
        data,
        control,
    }
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
    let start_gen = Instant::now();
    let data: Vec<(&str, Vec<RecordBatch>)> = tpch::TABLES
        .iter()
        .map(|&t| (t, tpch::generate(t, a.sf, 64 * 1024)))
        .collect();
    println!(
        "generated TPC-H SF {} in {:.1} s",
        a.sf,
        start_gen.elapsed().as_secs_f64()
    );

    let catalog_url = format!("sqlite:{}", tmp.path().join("catalog.db").display());
    let catalog = colvault::catalog::open(&catalog_url).unwrap();
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
    for (name, batches) in &data {
        p.create_table_from(name, batches[0].schema(), batches.iter().cloned())
            .unwrap();
    }
    drop(data);
    let env = vec![
        ("COLVAULT_CATALOG", catalog_url.clone()),
        ("COLVAULT_KEYSTORE", kdir.join("keystore").display().to_string()),
        ("COLVAULT_PASSPHRASE", "bench passphrase".to_string()),
        ("COLVAULT_KMS", "local".to_string()),
        ("HOME", tmp.path().display().to_string()),
    ];

    // One process, for reference (and the answers every cluster run is checked against).
    let local = SqlSession::for_project(&p);
    let mut want = Vec::new();
    let mut local_times = Vec::new();
    for n in 1..=22 {
        let mut times = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..a.rounds {
            let t = Instant::now();
            let got = rt.block_on(tpch::answer(n, async |s| local.query(s).await)).unwrap();
            rows = tpch::canonical_rows(&got);
            times.push(t.elapsed());
        }
        want.push(rows);
        local_times.push(median(times));
    }

    let mut columns = vec![("1 process".to_string(), local_times, 0u64, 0u64)];
    for executors in [1usize, 2] {
        let cluster = start(&rt, tmp.path(), &env, executors);
        let session = SqlSession::for_project(&p);
        // As many partitions as the cluster has task slots (cores per executor).
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        session
            .context()
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = cores * executors;
        let remote = ClusterSession::new(session, &cluster.url).unwrap();
        remote
            .session()
            .context()
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .set("ballista.shuffle.force_remote_read", "true")
            .unwrap();
        let mut times = Vec::new();
        for n in 1..=22 {
            let mut t_n = Vec::new();
            for _ in 0..a.rounds {
                let t = Instant::now();
                let got = rt.block_on(tpch::answer(n, async |s| remote.query(s).await)).unwrap();
                let got = tpch::canonical_rows(&got);
                t_n.push(t.elapsed());
                assert_eq!(got, want[(n - 1) as usize], "Q{n} on {executors} executor(s) differs");
            }
            times.push(median(t_n));
        }
        let (d, c) = (
            cluster.data.load(Ordering::Relaxed),
            cluster.control.load(Ordering::Relaxed),
        );
        columns.push((format!("{executors} executor(s)"), times, d, c));
    }

    println!("\nTPC-H SF {} ({} rounds, medians; ms)", a.sf, a.rounds);
    print!("{:<6}", "query");
    for (name, ..) in &columns {
        print!(" {name:>14}");
    }
    println!();
    for n in 0..22 {
        print!("Q{:<5}", n + 1);
        for (_, times, ..) in &columns {
            print!(" {:>14.0}", times[n].as_secs_f64() * 1e3);
        }
        println!();
    }
    print!("{:<6}", "total");
    for (_, times, ..) in &columns {
        print!(" {:>14.0}", times.iter().sum::<Duration>().as_secs_f64() * 1e3);
    }
    println!();
    for (name, _, data, control) in columns.iter().skip(1) {
        println!(
            "{name}: network bytes over all rounds: data (Flight) {:.1} MB, control (gRPC) {:.1} MB",
            *data as f64 / 1e6,
            *control as f64 / 1e6
        );
    }
}
