//! A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` in a temporary directory,
//! listening on 127.0.0.1 only (a free port; its Unix socket in the temporary directory), trust
//! authentication, run as a non-root user (as root, through `runuser -u postgres`, since initdb
//! refuses root). One server per test binary, started on first use; a fresh database per test.
//!
//! Without the PostgreSQL binaries (or, as root, without a `postgres` user) a test prints why and
//! skips, unless `COLVAULT_REQUIRE_SERVICES=1`, then it fails. The server stops (`pg_ctl stop -m
//! immediate`) and its directory is removed when the test process exits (an `atexit` hook: a
//! `static` is never dropped) or when a [`PgServer`] owned elsewhere is dropped. A test process
//! killed by a signal leaves its server running (its directory is printed on start); PostgreSQL
//! shuts itself down within a minute of that directory's removal.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// A running PostgreSQL server.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    port: u16,
    stopped: AtomicBool,
}

/// Why the server is not there.
enum Unavailable {
    /// Prerequisites missing: skip unless services are required.
    Skip(String),
    /// It should have worked: fail.
    Fail(String),
}

static SERVER: OnceLock<Result<PgServer, Unavailable>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// Whether missing services fail tests instead of skipping them.
pub fn services_required() -> bool {
    std::env::var("COLVAULT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The binary directory holding `initdb`, `pg_ctl` and `postgres`: `COLVAULT_PG_BIN`, else the
/// directory of `initdb` on `PATH` (resolving symlinks), else the newest
/// `/usr/lib/postgresql/*/bin`.
fn find_bin() -> Option<PathBuf> {
    let has_all = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| d.join(b).is_file());
    if let Some(d) = std::env::var_os("COLVAULT_PG_BIN").map(PathBuf::from) {
        return has_all(&d).then_some(d);
    }
    for p in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if let Ok(real) = std::fs::canonicalize(p.join("initdb")) {
            if let Some(d) = real.parent().filter(|d| has_all(d)) {
                return Some(d.to_path_buf());
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `uid:gid` of `user`, through `id`.
fn ids_of(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    Some((id("-u")?, id("-g")?))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl PgServer {
    /// A command running `tool` from the server's binaries as the server's user.
    fn tool(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut c = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // The user may not be able to enter the caller's working directory.
        c.current_dir(&self.dir);
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Creates, configures and starts a server in a fresh temporary directory.
    fn start() -> Result<PgServer, Unavailable> {
        let bin = find_bin().ok_or_else(|| {
            Unavailable::Skip(
                "PostgreSQL's initdb, pg_ctl and postgres were not found (on PATH, in /usr/lib/postgresql/*/bin \
                 or COLVAULT_PG_BIN); install the Debian package postgresql"
                    .into(),
            )
        })?;
        let owner = if is_root() {
            let ids = ids_of("postgres").ok_or_else(|| {
                Unavailable::Skip("running as root and there is no `postgres` user to run initdb as".into())
            })?;
            Some(ids)
        } else {
            None
        };
        let tmp = tempfile::Builder::new()
            .prefix("colvault-pg-")
            .tempdir()
            .map_err(|e| Unavailable::Fail(format!("temporary directory: {e}")))?;
        let dir = tmp.keep();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| Unavailable::Fail(format!("chown {}: {e}", dir.display())))?;
        }
        let mut server = PgServer {
            dir,
            bin,
            run_as: owner.map(|_| "postgres".to_string()),
            port: 0,
            stopped: AtomicBool::new(true),
        };
        let fail = |what: &str, out: std::io::Result<Output>| -> Result<(), Unavailable> {
            match out {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(Unavailable::Fail(describe(what, &o))),
                Err(e) => Err(Unavailable::Fail(format!("{what}: {e}"))),
            }
        };
        let out = server
            .tool("initdb")
            .arg("-D")
            .arg(server.data())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output();
        if let Err(e) = fail("initdb", out) {
            server.remove_dir();
            return Err(e);
        }
        // A free port can be taken between the probe and the start: a few tries.
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port().map_err(|e| Unavailable::Fail(format!("free port: {e}")))?;
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                server.port,
                server.dir.display()
            );
            let out = server
                .tool("pg_ctl")
                .arg("-D")
                .arg(server.data())
                .arg("-l")
                .arg(server.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .output();
            match fail("pg_ctl start", out) {
                Ok(()) => {
                    server.stopped.store(false, Ordering::SeqCst);
                    eprintln!(
                        "PostgreSQL test server on 127.0.0.1:{} in {}",
                        server.port,
                        server.dir.display()
                    );
                    return Ok(server);
                }
                Err(Unavailable::Fail(e)) | Err(Unavailable::Skip(e)) => {
                    let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
                    last = Some(format!("{e}\nserver log:\n{log}"));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        server.remove_dir();
        Err(Unavailable::Fail(last.unwrap_or_default()))
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh, empty database named after `hint` (sanitised, made unique); its URL.
    pub fn database(&self, hint: &str) -> String {
        let clean: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!(
            "t{}_{}_{clean}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(&name)
    }

    /// Stops the server at once (idempotent) and removes its directory.
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            let _ = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
        self.remove_dir();
    }

    fn remove_dir(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

extern "C" fn stop_at_exit() {
    if let Some(Ok(server)) = SERVER.get() {
        server.stop();
    }
}

/// The shared server of this test binary, started on first use; `None` (after printing why) when
/// it cannot run here and services are not required. Panics when services are required, or when
/// the binaries are there but the server does not start.
pub fn server(test: &str) -> Option<&'static PgServer> {
    let s = SERVER.get_or_init(|| {
        let s = PgServer::start();
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
        Err(Unavailable::Skip(why)) if !services_required() => {
            eprintln!("SKIPPED {test} on PostgreSQL: {why} (COLVAULT_REQUIRE_SERVICES=1 makes this a failure)");
            None
        }
        Err(Unavailable::Skip(why)) => panic!("{test}: PostgreSQL is required (COLVAULT_REQUIRE_SERVICES=1): {why}"),
        Err(Unavailable::Fail(why)) => panic!("{test}: the PostgreSQL test server did not start: {why}"),
    }
}

/// A fresh database on the shared server for `test`, or `None` (skipped, see [`server`]).
pub fn database(test: &str) -> Option<String> {
    server(test).map(|s| s.database(test))
}
