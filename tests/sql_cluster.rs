//! SQL on a Ballista cluster (issue 19): PostgreSQL (the catalog), moto for S3, moto for the KMS
//! API (with IAM enforced, so that each process acts as an IAM user of its own), a scheduler and
//! two executors, each a separate `colvault` process on 127.0.0.1.
//!
//! - TPC-H at SF 0.01 is loaded into an encrypted project on S3.
//! - The 22 queries on the cluster return what the single-process engine returns.
//! - An `INSERT INTO ... SELECT` through the cluster commits once.
//! - With one executor's KMS access revoked, a query fails with the KMS's access error, and an
//!   INSERT commits nothing.
#![cfg(all(feature = "ballista", feature = "postgres", feature = "aws-kms"))]

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, UInt64Array};
use colvault::kms::{AwsKms, AwsKmsOptions, CacheOptions, KeyCache};
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::sql::cluster::ClusterSession;
use colvault::sql::SqlSession;
use colvault::Algorithm;
use common::moto_iam::{Credentials, IamMoto};
use common::tpch;

const SF: f64 = 0.01;
const TEST: &str = "sql_cluster";

/// A child process killed when dropped; its output goes to a log file shown on failure.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The end of the process's log.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `port` accepts connections (the process serves), or panics with its log.
fn wait_listening(p: &mut Proc, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(p.alive(), "{} exited:\n{}", p.name, p.tail());
        assert!(
            Instant::now() < deadline,
            "{} does not listen on {port}:\n{}",
            p.name,
            p.tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `colvault` with nothing of this process's colvault or AWS environment, a HOME of its own, and
/// `env` set.
fn colvault(dir: &Path, env: &[(&str, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_colvault"));
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    c.current_dir(dir).env("HOME", home);
    for (k, _) in std::env::vars() {
        if k.starts_with("COLVAULT_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    // Ballista's own account of jobs and tasks, for the logs shown on failure.
    c.env("RUST_LOG", "info");
    c
}

/// A scheduler and two executors.
struct Cluster {
    scheduler: Proc,
    executors: Vec<Proc>,
    url: String,
}

impl Cluster {
    /// Executor `i` acts as `users[i]` (its own AWS identity) with the catalog at `catalog`.
    fn start(
        dir: &Path,
        s3: &[(&'static str, String)],
        kms: &IamMoto,
        catalog: &str,
        users: &[&Credentials],
    ) -> Cluster {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        // A task that fails fails its job: a revoked executor's failure is not retried elsewhere.
        let mut cmd = colvault(dir, &[]);
        cmd.args(["cluster", "scheduler", "--bind", &bind, "--task-max-failures", "1"]);
        let mut scheduler = Proc::spawn("scheduler", cmd, dir);
        wait_listening(&mut scheduler, port);
        let mut executors = Vec::new();
        for (i, who) in users.iter().enumerate() {
            let (flight, grpc) = (free_port(), free_port());
            let mut env = s3.to_vec();
            env.extend(kms.kms_env(who));
            env.push(("COLVAULT_CATALOG", catalog.to_string()));
            env.push(("COLVAULT_KMS", "aws-kms:".to_string()));
            // Unwrapped keys are kept one second, so a revocation bites at once.
            env.push(("COLVAULT_KEY_CACHE_SECONDS", "1".to_string()));
            let work = dir.join(format!("executor{i}"));
            std::fs::create_dir_all(&work).unwrap();
            let mut cmd = colvault(dir, &env);
            cmd.args([
                "cluster",
                "executor",
                "--scheduler",
                &bind,
                "--flight-port",
                &flight.to_string(),
                "--grpc-port",
                &grpc.to_string(),
                "--concurrent-tasks",
                "1",
                "--work-dir",
                work.to_str().unwrap(),
            ]);
            let mut p = Proc::spawn(&format!("executor{i}"), cmd, dir);
            wait_listening(&mut p, flight);
            executors.push(p);
        }
        // Executors register with the scheduler when they start; give it the moment it takes.
        std::thread::sleep(Duration::from_secs(2));
        Cluster {
            scheduler,
            executors,
            url: format!("http://{bind}"),
        }
    }

    fn logs(&self) -> String {
        let mut out = format!("--- scheduler\n{}\n", self.scheduler.tail());
        for e in &self.executors {
            out.push_str(&format!("--- {}\n{}\n", e.name, e.tail()));
        }
        out
    }
}

/// A statement on the cluster, failing (instead of waiting forever) after two minutes.
async fn on_cluster(session: &ClusterSession, sql: &str) -> colvault::Result<Vec<RecordBatch>> {
    match tokio::time::timeout(Duration::from_secs(120), session.query(sql)).await {
        Ok(r) => r,
        Err(_) => Err(colvault::Error::InvalidArgument(format!(
            "no answer from the cluster within 120 s: {sql}"
        ))),
    }
}

/// `err` is the KMS's access error (as moto's IAM words it, or as colvault maps it).
fn assert_access_error(err: &colvault::Error, cluster: &Cluster) {
    let text = err.to_string();
    assert!(
        text.contains("access denied") || text.contains("AccessDenied") || text.contains("not authorized"),
        "the access error: {text}\n{}",
        cluster.logs()
    );
}

fn count(batches: &[RecordBatch]) -> u64 {
    let c = batches[0].column(0);
    if let Some(a) = c.as_any().downcast_ref::<Int64Array>() {
        return a.value(0) as u64;
    }
    c.as_any().downcast_ref::<UInt64Array>().unwrap().value(0)
}

#[test]
fn tpch_on_a_cluster_matches_one_process_and_a_revoked_executor_commits_nothing() {
    let Some(db) = common::pg::database(TEST) else {
        return;
    };
    let Some(s3) = common::moto::server(TEST) else {
        return;
    };
    let Some(moto) = IamMoto::start(TEST, &["admin", "executor_a", "executor_b"]) else {
        return;
    };
    // COLVAULT_KEEP_TEST_DIR=1 keeps the processes' logs (and their work directories).
    let dir = tempfile::Builder::new()
        .disable_cleanup(std::env::var_os("COLVAULT_KEEP_TEST_DIR").is_some())
        .tempdir()
        .unwrap();
    println!("cluster logs in {}", dir.path().display());
    let bucket = s3.bucket(TEST);
    let admin = moto.user("admin");

    // The client: this process, as the KMS administrator.
    common::stores::register_s3(s3, &bucket);
    let kms = Arc::new(
        AwsKms::open(AwsKmsOptions::new(
            Some(moto.server.endpoint()),
            common::moto::REGION.to_string(),
            admin.access_key_id.clone(),
            zeroize::Zeroizing::new(admin.secret_access_key.clone()),
        ))
        .unwrap(),
    );
    let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default()).unwrap());
    let keys = Keys { kms, cache };
    let catalog = colvault::catalog::open(&db).unwrap();
    let settings = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault);
    let project = Project::create(&catalog, format!("s3://{bucket}/tpch"), "tpch", settings, keys).unwrap();
    let data: Vec<(&str, Vec<RecordBatch>)> = tpch::TABLES.iter().map(|&t| (t, tpch::generate(t, SF, 8192))).collect();
    tpch::load(&project, &data);

    let s3_env: Vec<(&'static str, String)> = s3
        .env()
        .into_iter()
        .filter(|(k, _)| matches!(*k, "AWS_ENDPOINT_URL" | "AWS_ALLOW_HTTP"))
        .collect();
    let cluster = Cluster::start(
        dir.path(),
        &s3_env,
        &moto,
        &db,
        &[moto.user("executor_a"), moto.user("executor_b")],
    );
    let rt = common::rt();
    let local = SqlSession::for_project(&project);
    let remote = ClusterSession::new(SqlSession::for_project(&project), &cluster.url).unwrap();

    // The 22 queries: the cluster's answers are the single process's.
    for n in 1..=22 {
        let want = rt
            .block_on(tpch::answer(n, async |s| local.query(s).await))
            .unwrap_or_else(|e| panic!("in one process: {e}"));
        let want = tpch::canonical_rows(&want);
        let got = rt
            .block_on(tpch::answer(n, async |s| on_cluster(&remote, s).await))
            .unwrap_or_else(|e| panic!("Q{n} on the cluster: {e}\n{}", cluster.logs()));
        let got = tpch::canonical_rows(&got);
        assert_eq!(
            got.len(),
            want.len(),
            "Q{n}: {} rows on the cluster, {} in one process",
            got.len(),
            want.len()
        );
        assert_eq!(got, want, "Q{n} on the cluster differs from one process");
    }
    // The plan the scheduler got reads through colvault file sources, and holds no key.
    let plan = rt
        .block_on(remote.plan("SELECT sum(l_quantity) FROM lineitem"))
        .unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    assert!(shown.contains("file_type=colvault"), "{shown}");

    // INSERT INTO ... SELECT through the cluster: one commit.
    let nation = project.table("nation").unwrap();
    let before = nation.head().unwrap();
    let inserted = rt
        .block_on(on_cluster(
            &remote,
            "INSERT INTO nation SELECT * FROM nation WHERE n_regionkey = 1",
        ))
        .unwrap_or_else(|e| panic!("INSERT on the cluster: {e}\n{}", cluster.logs()));
    assert_eq!(count(&inserted), 5, "five nations are in region 1");
    let after = nation.head().unwrap();
    assert_eq!(after.version, before.version + 1, "one commit");
    assert_eq!(after.rows(), before.rows() + 5);

    // Executor B loses KMS access (its IAM policy now allows S3 only).
    moto.revoke_kms("executor_b");
    std::thread::sleep(Duration::from_secs(2)); // past B's one-second KEK cache
                                                // Enough partitions that both executors (one task at a time each) get some.
    let state = remote.session().context().state_ref();
    state.write().config_mut().options_mut().execution.target_partitions = 8;
    let err = rt
        .block_on(on_cluster(
            &remote,
            "SELECT l_returnflag, sum(l_quantity) FROM lineitem GROUP BY l_returnflag",
        ))
        .expect_err("a query with tasks on the revoked executor fails");
    assert_access_error(&err, &cluster);
    // An INSERT whose scan has several tasks (lineitem spans three files), so both executors,
    // one task slot each, get one in the first round; a one-task statement could land on A alone.
    let before = project.table("lineitem").unwrap().head().unwrap();
    let failed = rt.block_on(on_cluster(&remote, "INSERT INTO lineitem SELECT * FROM lineitem"));
    let err = failed.expect_err("an INSERT reading through the revoked executor fails");
    assert_access_error(&err, &cluster);
    let after = project.table("lineitem").unwrap().head().unwrap();
    assert_eq!(after.version, before.version, "nothing is committed");
    assert_eq!(after.rows(), before.rows());
    // This process's own access is intact: the data is there.
    let n = count(&rt.block_on(local.query("SELECT count(*) FROM lineitem")).unwrap());
    assert_eq!(n, before.rows());
}

/// Malformed addresses are usage errors, before anything starts.
#[test]
fn cluster_commands_refuse_malformed_addresses() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["cluster", "scheduler", "--bind", "localhost"][..],
        &[
            "cluster",
            "scheduler",
            "--bind",
            "127.0.0.1:50050",
            "--task-max-failures",
            "0",
        ][..],
        &["cluster", "executor", "--scheduler", "127.0.0.1"][..],
        &["cluster", "executor", "--flight-port", "70000"][..],
    ] {
        let out = colvault(dir.path(), &[]).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A scheduler URL that is not HOST:PORT is refused with what to give.
    let e = ClusterSession::new(
        SqlSession::new(
            colvault::catalog::open(&format!("sqlite:{}", dir.path().join("c.db").display())).unwrap(),
            common::keys(&common::Fixture::new()),
        ),
        "localhost",
    )
    .unwrap_err();
    assert!(e.to_string().contains("HOST:PORT"), "{e}");
}
