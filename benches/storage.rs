//! Object storage (issue 16): requests and bytes per read, throughput on S3 against the local
//! path, and the one-column read under injected latency, in one run.
//!
//! ```sh
//! cargo bench --bench storage --profile release --features s3                  # starts moto itself
//! cargo bench --bench storage --profile release --features s3 -- --rows 2000000
//! cargo bench --bench storage --profile release -- --no-s3                       # local and memory only
//! ```
//!
//! The sample table (`colvault::sample`, 12 columns, `--rows` rows, default 1,000,000, one file,
//! the default row groups of 1 Mi rows) is written encrypted (aes256) to:
//!
//! 1. a local directory (positioned reads on the file);
//! 2. S3: moto's server on loopback (`/root/.cache/colvault-venv/bin/moto_server`, or
//!    `COLVAULT_MOTO_SERVER`), behind a counting wrapper;
//! 3. an in-memory store behind the same wrapper with 20 ms added to every request.
//!
//! For each it reports the time of the write, of a whole-table read and of a one-column read
//! (`quantity`), and for the stores behind the wrapper the GET requests and bytes of each read,
//! against what the read needs: the column's sealed chunks plus the footer. The same in-memory
//! store also runs without the latency: the difference of the two one-column reads, divided by
//! 20 ms, is the round trips the read waits for; the issue's bound is 3 (the head manifest, the
//! file's magic and tail, the column's chunks).

mod common;

#[cfg(feature = "s3")]
use std::net::TcpListener;
#[cfg(feature = "s3")]
use std::path::PathBuf;
#[cfg(feature = "s3")]
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sample::SampleTable;
use colvault::storage::{register_store, Instrumented, RequestCounts};
use colvault::table::Table;
use colvault::{Algorithm, FileReader};

const LATENCY: Duration = Duration::from_millis(20);

struct Args {
    rows: usize,
    s3: bool,
}

fn args() -> Args {
    let mut a = Args {
        rows: 1_000_000,
        s3: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--rows" => a.rows = it.next().and_then(|v| v.parse().ok()).expect("--rows N"),
            "--no-s3" => a.s3 = false,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

#[cfg(feature = "s3")]
struct Moto(Child);
#[cfg(feature = "s3")]
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "s3")]
fn start_moto() -> Option<(Moto, String)> {
    let program = std::env::var_os("COLVAULT_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/colvault-venv/bin/moto_server"));
    if !program.is_file() {
        eprintln!("no moto_server at {}: S3 skipped", program.display());
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    // The bucket, through a raw request (moto checks no signature).
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    Some((moto, endpoint))
}

#[cfg(feature = "s3")]
fn s3_store(endpoint: &str) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name("bench")
            .with_access_key_id("bench")
            .with_secret_access_key("bench")
            .with_region("us-east-1")
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

fn rows(batches: Vec<arrow::array::RecordBatch>) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Bytes a one-column read needs: the column's sealed chunks in every row group, plus the footer
/// (envelope, sealed body, trailer).
fn needed_bytes(t: &Table, column: usize) -> (u64, u64) {
    let head = t.head().unwrap();
    let f = &head.files[0];
    let src = t
        .storage()
        .reader(&format!("data/{}", f.name), Some(f.len))
        .unwrap()
        .unwrap();
    let r = FileReader::open_shared(src, t.reader_options(f, &head).unwrap()).unwrap();
    let chunks: u64 = (0..r.num_row_groups()).map(|rg| r.chunk_lengths(rg)[column]).sum();
    let all_chunks: u64 = (0..r.num_row_groups())
        .map(|rg| r.chunk_lengths(rg).iter().sum::<u64>())
        .sum();
    (chunks, r.file_len() - 4 - all_chunks)
}

struct Run {
    name: &'static str,
    write: Duration,
    whole: Duration,
    whole_async: Duration,
    one: Duration,
    counts: Option<(RequestCounts, RequestCounts)>,
    file_len: u64,
}

fn run(
    name: &'static str,
    dir: &std::path::Path,
    location: &str,
    rows_n: usize,
    counter: Option<&Instrumented>,
) -> Run {
    let catalog = colvault::catalog::open(&format!("sqlite:{}", dir.join(format!("{name}.db")).display())).unwrap();
    let p = Project::create(
        &catalog,
        location,
        name,
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        {
            let kdir = dir.join(format!("{name}-keys"));
            std::fs::create_dir_all(&kdir).unwrap();
            common::local_keys(&kdir)
        },
    )
    .unwrap();
    let sample = SampleTable::new(rows_n, 7);
    let start = Instant::now();
    let (t, _) = p
        .create_table_from("orders", SampleTable::schema(), sample.batches(64 * 1024))
        .unwrap();
    let write = start.elapsed();
    let file_len = t.head().unwrap().files[0].len;
    // Reads on a fresh handle of the table, as a new reader's: the head manifest is fetched.
    let fresh = || {
        Project::open(&catalog, name, p.keys().clone())
            .unwrap()
            .table("orders")
            .unwrap()
    };
    let t1 = fresh();
    if let Some(c) = counter {
        c.reset();
    }
    let start = Instant::now();
    assert_eq!(rows(t1.scan().build().unwrap().read_all().unwrap()), rows_n);
    let whole = start.elapsed();
    let whole_counts = counter.map(|c| c.counts());
    // The same read through the async API (TableScan::stream) on a two-thread runtime.
    let t3 = fresh();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let streamed: Vec<arrow::array::RecordBatch> = rt.block_on(async {
        use futures::TryStreamExt;
        t3.scan().stream().await.unwrap().try_collect().await.unwrap()
    });
    assert_eq!(rows(streamed), rows_n);
    let whole_async = start.elapsed();
    let t2 = fresh();
    if let Some(c) = counter {
        c.reset();
    }
    let start = Instant::now();
    assert_eq!(
        rows(t2.scan().columns(["quantity"]).build().unwrap().read_all().unwrap()),
        rows_n
    );
    let one = start.elapsed();
    let one_counts = counter.map(|c| c.counts());
    if counter.is_some() {
        let (chunks, footer) = needed_bytes(&t2, 2);
        println!(
            "  {name}: one-column read needs {chunks} bytes of chunks + {footer} bytes of footer = {}",
            chunks + footer
        );
    }
    Run {
        name,
        write,
        whole,
        whole_async,
        one,
        counts: whole_counts.zip(one_counts),
        file_len,
    }
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    println!("sample table: {} rows, 12 columns, aes256, one file", a.rows);
    let mut runs = Vec::new();
    runs.push(run(
        "local",
        tmp.path(),
        &tmp.path().join("local").display().to_string(),
        a.rows,
        None,
    ));

    #[cfg(feature = "s3")]
    let _moto = if a.s3 {
        start_moto().map(|(moto, endpoint)| {
            let s3 = Instrumented::new(s3_store(&endpoint), Duration::ZERO);
            register_store("s3://bench", Arc::new(s3.clone()));
            runs.push(run("s3_moto", tmp.path(), "s3://bench/sales", a.rows, Some(&s3)));
            moto
        })
    } else {
        None
    };
    #[cfg(not(feature = "s3"))]
    let _ = a.s3;

    let mem = Instrumented::new(Arc::new(object_store::memory::InMemory::new()), Duration::ZERO);
    register_store("mem0://bench", Arc::new(mem.clone()));
    runs.push(run("memory", tmp.path(), "mem0://bench/sales", a.rows, Some(&mem)));
    let slow = Instrumented::new(Arc::new(object_store::memory::InMemory::new()), LATENCY);
    register_store("slow://bench", Arc::new(slow.clone()));
    runs.push(run(
        "latency20ms",
        tmp.path(),
        "slow://bench/sales",
        a.rows,
        Some(&slow),
    ));

    let mb = |d: Duration, bytes: f64| bytes / 1e6 / d.as_secs_f64();
    let file_bytes = runs[0].file_len as f64;
    println!("\nfile: {:.1} MB", file_bytes / 1e6);
    println!(
        "{:<12} {:>10} {:>12} {:>12} {:>14} {:>12} {:>12} {:>14} {:>14}",
        "backend",
        "write s",
        "whole s",
        "whole MB/s",
        "async MB/s",
        "one-col s",
        "whole GETs",
        "whole bytes",
        "one-col GETs/bytes"
    );
    for r in &runs {
        let (wg, wb, og) = match &r.counts {
            Some((w, o)) => (
                w.gets.to_string(),
                w.get_bytes.to_string(),
                format!("{} / {}", o.gets, o.get_bytes),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<12} {:>10.3} {:>12.3} {:>12.1} {:>14.1} {:>12.3} {:>12} {:>14} {:>14}",
            r.name,
            r.write.as_secs_f64(),
            r.whole.as_secs_f64(),
            mb(r.whole, file_bytes),
            mb(r.whole_async, file_bytes),
            r.one.as_secs_f64(),
            wg,
            wb,
            og
        );
    }
    let find = |n: &str| runs.iter().find(|r| r.name == n);
    if let (Some(slow), Some(fast)) = (find("latency20ms"), find("memory")) {
        // The same read on the same in-memory store without the latency: what remains is the
        // latency's share, in round trips.
        let extra = slow.one.saturating_sub(fast.one);
        // One request's real round trip on this store (the timer rounds the 20 ms up a little).
        let storage = colvault::storage::Storage::open("slow://bench/sales", false).unwrap();
        let name = storage
            .list("")
            .unwrap()
            .into_iter()
            .find(|e| e.name.starts_with("project-"))
            .unwrap()
            .name;
        let start = Instant::now();
        for _ in 0..10 {
            storage.get(&name).unwrap();
        }
        let rtt = start.elapsed() / 10;
        let trips = extra.as_secs_f64() / rtt.as_secs_f64();
        println!(
            "\none-column read with {} ms per request: {:.3} s, without: {:.3} s; the latency added {:.3} s; \
             one request takes {:.1} ms there: {:.2} round trips (bound: 3; the read waits on 3 in sequence: \
             the head manifest, the file's magic and tail in parallel, the column's chunks coalesced)",
            LATENCY.as_millis(),
            slow.one.as_secs_f64(),
            fast.one.as_secs_f64(),
            extra.as_secs_f64(),
            rtt.as_secs_f64() * 1e3,
            trips
        );
    }
}
