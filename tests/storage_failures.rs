//! Failed and throttled requests: a request the store throttles is retried with backoff and the
//! operation succeeds; one that finally fails is a typed, retriable `Error::Storage` and leaves
//! no visible change (the table head, the catalog and the listing stay as they were).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::Int64Array;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::storage::Storage;
use colvault::table::Table;
use colvault::{Algorithm, Error};
use common::faulty::Faulty;
use common::{id_batch, keys, Fixture};

fn encrypted() -> ProjectSettings {
    ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault)
}

fn ids(t: &Table) -> Result<Vec<i64>, Error> {
    let mut out = Vec::new();
    for b in t.scan().build()?.read_all()? {
        let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend(a.values().iter().copied());
    }
    out.sort_unstable();
    Ok(out)
}

fn names(s: &Storage) -> Vec<String> {
    let mut n: Vec<String> = s.list("").unwrap().into_iter().map(|e| e.name).collect();
    n.sort();
    n
}

fn assert_retriable(r: Result<impl std::fmt::Debug, Error>, what: &str) {
    match r {
        Err(Error::Storage { retriable: true, .. }) => {}
        other => panic!("{what}: expected a retriable Error::Storage, got {other:?}"),
    }
}

#[test]
fn a_request_that_finally_fails_is_retriable_and_changes_nothing() {
    let fx = Fixture::new();
    let store = Faulty::new(Arc::new(object_store::memory::InMemory::new()));
    let root = format!("faulty{}://a", std::process::id());
    colvault::storage::register_store(&root, store.clone());
    let p = Project::create(&fx.catalog, format!("{root}/p"), "sales", encrypted(), keys(&fx)).unwrap();
    let t = p.create_table("t", id_batch(0, 1).schema()).unwrap();
    t.append([id_batch(0, 100)]).unwrap();
    t.append([id_batch(100, 100)]).unwrap();
    let before = names(p.storage());
    let version = t.head().unwrap().version;

    // Writes fail: append, compaction and table creation report it and change nothing.
    store.fail_puts.store(true, Ordering::SeqCst);
    assert_retriable(t.append([id_batch(200, 100)]), "append");
    assert_retriable(t.compact(), "compact");
    assert_retriable(p.create_table("u", id_batch(0, 1).schema()), "create table");
    assert!(store.failed.load(Ordering::SeqCst) >= 3, "the failures were injected");
    assert_eq!(t.head().unwrap().version, version, "a failed write moved the head");
    assert_eq!(names(p.storage()), before, "a failed write left objects behind");
    assert!(
        matches!(p.table("u"), Err(Error::NotRegistered { .. })),
        "a failed creation registered the table"
    );

    // Reads fail: a fresh reader gets the typed error, and nothing changes.
    store.fail_puts.store(false, Ordering::SeqCst);
    store.fail_gets.store(true, Ordering::SeqCst);
    let fresh = Project::open(&fx.catalog, "sales", keys(&fx));
    assert_retriable(fresh.and_then(|p| p.table("t")).and_then(|t| ids(&t)), "scan");

    // The store recovers: everything works, and nothing was lost.
    store.fail_gets.store(false, Ordering::SeqCst);
    let t = Project::open(&fx.catalog, "sales", keys(&fx))
        .unwrap()
        .table("t")
        .unwrap();
    assert_eq!(ids(&t).unwrap(), (0..200).collect::<Vec<_>>());
    t.append([id_batch(200, 100)]).unwrap();
    assert_eq!(t.head().unwrap().version, version + 1);
    assert_eq!(ids(&t).unwrap(), (0..300).collect::<Vec<_>>());
}

#[cfg(feature = "s3")]
mod throttled {
    //! S3 behind a proxy that answers `503 Slow Down` to as many requests as the test asks.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use arrow::array::RecordBatch;

    struct Proxy {
        port: u16,
        /// Requests still to be throttled.
        throttle: AtomicUsize,
        /// Requests throttled so far.
        throttled: AtomicUsize,
    }

    /// One request per connection: reads it, then throttles it or forwards it to `upstream` with
    /// `Connection: close` and relays the whole response.
    fn serve(proxy: &Proxy, upstream: u16, client: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(client.try_clone()?);
        let mut head = Vec::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
            if !line.to_ascii_lowercase().starts_with("connection:") {
                head.extend_from_slice(line.as_bytes());
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let mut client = client;
        let take = proxy
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if take {
            proxy.throttled.fetch_add(1, Ordering::SeqCst);
            let msg = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                msg.len()
            )?;
            return client.flush();
        }
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        up.write_all(&head)?;
        up.write_all(b"Connection: close\r\n\r\n")?;
        up.write_all(&body)?;
        let mut response = Vec::new();
        up.read_to_end(&mut response)?;
        client.write_all(&response)?;
        client.flush()
    }

    fn start(upstream: u16) -> Arc<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Arc::new(Proxy {
            port: listener.local_addr().unwrap().port(),
            throttle: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
        });
        let p = proxy.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let p = p.clone();
                std::thread::spawn(move || {
                    let _ = serve(&p, upstream, conn);
                });
            }
        });
        proxy
    }

    #[test]
    fn throttled_requests_are_retried_with_backoff() {
        let Some(server) = common::moto::server("throttled_requests_are_retried_with_backoff") else {
            return;
        };
        let bucket = server.bucket("throttled");
        let proxy = start(server.port());
        use object_store::aws::AmazonS3Builder;
        use object_store::{BackoffConfig, RetryConfig};
        let s3 = AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", proxy.port))
            .with_bucket_name(&bucket)
            .with_access_key_id(common::moto::ACCESS_KEY_ID)
            .with_secret_access_key(common::moto::SECRET_ACCESS_KEY)
            .with_region(common::moto::REGION)
            .with_allow_http(true)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(100),
                    base: 2.0,
                },
                max_retries: 4,
                retry_timeout: Duration::from_secs(20),
            })
            .build()
            .unwrap();
        colvault::storage::register_store(&format!("s3://{bucket}"), Arc::new(s3));
        let fx = Fixture::new();
        let p = Project::create(&fx.catalog, format!("s3://{bucket}/p"), "sales", encrypted(), keys(&fx)).unwrap();
        let t = p.create_table("t", id_batch(0, 1).schema()).unwrap();

        // A few throttled requests are retried: the append and the scan succeed.
        proxy.throttle.store(3, Ordering::SeqCst);
        t.append([id_batch(0, 1000)]).unwrap();
        assert_eq!(proxy.throttled.load(Ordering::SeqCst), 3, "the store was throttled");
        proxy.throttle.store(3, Ordering::SeqCst);
        let fresh = Project::open(&fx.catalog, "sales", keys(&fx))
            .unwrap()
            .table("t")
            .unwrap();
        assert_eq!(ids(&fresh).unwrap(), (0..1000).collect::<Vec<_>>());
        assert_eq!(proxy.throttled.load(Ordering::SeqCst), 6);

        // Throttled for good: after the retries, a retriable error, and nothing changed.
        let before = names(p.storage());
        proxy.throttle.store(usize::MAX, Ordering::SeqCst);
        let batch: RecordBatch = id_batch(1000, 1000);
        assert_retriable(t.append([batch]), "append on a store that throttles everything");
        let attempts = proxy.throttled.load(Ordering::SeqCst) - 6;
        assert!(attempts >= 5, "one request and its 4 retries were sent, saw {attempts}");
        proxy.throttle.store(0, Ordering::SeqCst);
        assert_eq!(names(p.storage()), before, "the failed append left objects behind");
        assert_eq!(t.head().unwrap().version, 2);
        assert_eq!(ids(&t).unwrap(), (0..1000).collect::<Vec<_>>());
    }
}
