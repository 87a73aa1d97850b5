//! The cluster's processes: a Ballista scheduler that needs no catalog and no keys, and executors
//! that read and write colvault tables through their own catalog, KMS and object store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;

use super::codec::ClusterCodec;
use super::source::ClusterEnv;
use crate::error::{Error, Result};

/// How a scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Where it listens for clients and executors.
    pub bind: SocketAddr,
    /// How many times a task may fail before its job fails (Ballista's `task_max_failures`).
    /// Colvault's errors (a refused key, a plan that does not match the catalog) are never
    /// retried; this counts failures Ballista deems passing (I/O).
    pub task_max_failures: usize,
}

impl SchedulerOptions {
    /// A scheduler on `bind`, with Ballista's default retries.
    pub fn new(bind: SocketAddr) -> Self {
        SchedulerOptions {
            bind,
            task_max_failures: 4,
        }
    }
}

/// Runs a scheduler until the process is stopped. It decodes and cuts plans with
/// [`ClusterCodec::planner`]: it opens no table and holds no key.
pub async fn run_scheduler(opts: SchedulerOptions) -> Result<()> {
    let config = SchedulerConfig {
        bind_host: opts.bind.ip().to_string(),
        bind_port: opts.bind.port(),
        external_host: opts.bind.ip().to_string(),
        task_max_failures: opts.task_max_failures.max(1),
        override_physical_codec: Some(Arc::new(ClusterCodec::planner())),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ballista_error("starting the scheduler", e))?;
    start_server(cluster, opts.bind, Arc::new(config))
        .await
        .map_err(|e| ballista_error("running the scheduler", e))
}

/// How an executor runs.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// The scheduler's address.
    pub scheduler: SocketAddr,
    /// The host this executor listens on.
    pub host: String,
    /// The host the scheduler, other executors and clients reach it at [default: `host`] (behind
    /// a proxy or NAT).
    pub advertise_host: Option<String>,
    /// The Arrow Flight port (shuffle data is fetched from it).
    pub flight_port: u16,
    /// The gRPC port (the scheduler pushes tasks to it).
    pub grpc_port: u16,
    /// Tasks run at once [default: the machine's cores].
    pub concurrent_tasks: Option<usize>,
    /// Where shuffle files go [default: a temporary directory].
    pub work_dir: Option<PathBuf>,
}

/// Runs an executor until the process is stopped. Its tasks read and write through `env` (this
/// process's own catalog client, KMS and KEK cache; object stores are opened from each project's
/// location with this process's configuration).
pub async fn run_executor(opts: ExecutorOptions, env: Arc<ClusterEnv>) -> Result<()> {
    let defaults = ExecutorProcessConfig::default();
    let config = ExecutorProcessConfig {
        bind_host: opts.host.clone(),
        external_host: Some(opts.advertise_host.clone().unwrap_or_else(|| opts.host.clone())),
        port: opts.flight_port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.ip().to_string(),
        scheduler_port: opts.scheduler.port(),
        vcores: opts.concurrent_tasks.unwrap_or(defaults.vcores).max(1),
        work_dir: opts.work_dir.map(|d| d.display().to_string()),
        override_physical_codec: Some(Arc::new(ClusterCodec::executor(env))),
        ..defaults
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ballista_error("running the executor", e))
}

fn ballista_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{what}: {e}"))
}
