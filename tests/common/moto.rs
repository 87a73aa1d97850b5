//! A throwaway moto server (PyPI `moto[server]`) for tests: the S3 and KMS APIs on 127.0.0.1, on a
//! free port. One server per test binary, started on first use and killed when the test process
//! exits (an `atexit` hook); a fresh bucket per test.
//!
//! The `moto_server` program is taken from `COLVAULT_MOTO_SERVER`, else `moto_server` on `PATH`,
//! else the virtual environment `.ci/run` makes (`/root/.cache/colvault-venv/bin/moto_server`, or
//! `$COLVAULT_VENV/bin/moto_server`). Without it a test prints why and skips, unless
//! `COLVAULT_REQUIRE_SERVICES=1`, then it fails.
//!
//! moto does not check request signatures, so any static credentials work; the tests still pass
//! the ones below, as a user's environment would.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Whether missing services fail tests instead of skipping them (`COLVAULT_REQUIRE_SERVICES=1`).
fn services_required() -> bool {
    std::env::var("COLVAULT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The static test credentials and region (moto accepts any).
pub const ACCESS_KEY_ID: &str = "colvault-test";
pub const SECRET_ACCESS_KEY: &str = "colvault-test-secret";
pub const REGION: &str = "us-east-1";

/// A running moto server.
pub struct MotoServer {
    port: u16,
    child: Mutex<Option<Child>>,
}

static SERVER: OnceLock<Result<MotoServer, (bool, String)>> = OnceLock::new();
static NEXT_BUCKET: AtomicUsize = AtomicUsize::new(0);

fn find_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COLVAULT_MOTO_SERVER").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("moto_server");
        if p.is_file() {
            return Some(p);
        }
    }
    let venv = std::env::var_os("COLVAULT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/colvault-venv"));
    Some(venv.join("bin/moto_server")).filter(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One raw HTTP/1.1 request to the server (moto needs no signature); the status code and body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

impl MotoServer {
    fn start() -> Result<MotoServer, (bool, String)> {
        Self::start_with(&[])
    }

    /// A server of its own, with `env` set for it (for example `INITIAL_NO_AUTH_ACTION_COUNT`);
    /// `None` (after printing why) when moto cannot run here and services are not required.
    pub fn start_own(test: &str, env: &[(&str, &str)]) -> Option<MotoServer> {
        match Self::start_with(env) {
            Ok(s) => Some(s),
            Err((true, why)) if !services_required() => {
                eprintln!("SKIPPED {test} on moto: {why} (COLVAULT_REQUIRE_SERVICES=1 makes this a failure)");
                None
            }
            Err((true, why)) => panic!("{test}: moto is required (COLVAULT_REQUIRE_SERVICES=1): {why}"),
            Err((false, why)) => panic!("{test}: the moto test server did not start: {why}"),
        }
    }

    /// The moto program (for its virtual environment's Python).
    pub fn program() -> Option<PathBuf> {
        find_program()
    }

    fn start_with(env: &[(&str, &str)]) -> Result<MotoServer, (bool, String)> {
        let program = find_program().ok_or_else(|| {
            (
                true,
                "moto_server was not found (COLVAULT_MOTO_SERVER, PATH, or the virtual environment \
                 /root/.cache/colvault-venv that .ci/run makes with `pip install 'moto[server]'`)"
                    .to_string(),
            )
        })?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| (false, format!("free port: {e}")))?;
            let mut child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| (false, format!("starting {}: {e}", program.display())))?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok((200, _)) = http(port, "GET", "/moto-api/data.json", b"") {
                    eprintln!("moto server on 127.0.0.1:{port}");
                    return Ok(MotoServer {
                        port,
                        child: Mutex::new(Some(child)),
                    });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("{} exited with {status} on port {port}", program.display());
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("{} did not answer on port {port} within 60 s", program.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Err((false, last))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A fresh, empty bucket named after `hint` (sanitised, made unique); its name.
    pub fn bucket(&self, hint: &str) -> String {
        let clean: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(30)
            .collect();
        let name = format!(
            "t{}-{}-{}",
            std::process::id(),
            NEXT_BUCKET.fetch_add(1, Ordering::SeqCst),
            clean.trim_matches('-')
        );
        let (status, body) =
            http(self.port, "PUT", &format!("/{name}"), b"").unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        assert_eq!(
            status,
            200,
            "creating bucket {name}: {}",
            String::from_utf8_lossy(&body)
        );
        name
    }

    /// Incomplete multipart uploads in `bucket` (parts uploaded, never completed or aborted).
    pub fn incomplete_uploads(&self, bucket: &str) -> usize {
        let (status, body) = http(self.port, "GET", &format!("/{bucket}?uploads"), b"")
            .unwrap_or_else(|e| panic!("listing uploads of {bucket}: {e}"));
        assert_eq!(status, 200, "listing uploads of {bucket}");
        String::from_utf8_lossy(&body).matches("<UploadId>").count()
    }

    /// The environment a user would set for colvault to reach this server (`AWS_*`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// Kills the server (idempotent).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

extern "C" fn stop_at_exit() {
    if let Some(Ok(server)) = SERVER.get() {
        server.stop();
    }
}

/// The shared moto server of this test binary, started on first use; `None` (after printing why)
/// when it cannot run here and services are not required. Panics when services are required, or
/// when the program is there but the server does not start.
pub fn server(test: &str) -> Option<&'static MotoServer> {
    let s = SERVER.get_or_init(|| {
        let s = MotoServer::start();
        if s.is_ok() {
            // SAFETY: registers a plain `extern "C"` function; it only reads the static.
            unsafe {
                libc::atexit(stop_at_exit);
            }
        }
        s
    });
    match s {
        Ok(server) => Some(server),
        Err((true, why)) if !services_required() => {
            eprintln!("SKIPPED {test} on moto: {why} (COLVAULT_REQUIRE_SERVICES=1 makes this a failure)");
            None
        }
        Err((true, why)) => panic!("{test}: moto is required (COLVAULT_REQUIRE_SERVICES=1): {why}"),
        Err((false, why)) => panic!("{test}: the moto test server did not start: {why}"),
    }
}
