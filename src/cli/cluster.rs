//! `colvault cluster`: the processes of a Ballista cluster running colvault SQL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use colvault::sql::cluster::{run_executor, run_scheduler, ClusterEnv, ExecutorOptions, SchedulerOptions};

use super::context::KeyOpts;
use super::error::{io_err, CliResult};

#[derive(Subcommand, Debug)]
#[command(after_help = "A cluster on one machine (each in its own terminal):\n  \
    colvault cluster scheduler --bind 127.0.0.1:50050\n  \
    colvault cluster executor --scheduler 127.0.0.1:50050 --flight-port 50051 --grpc-port 50052\n  \
    colvault cluster executor --scheduler 127.0.0.1:50050 --flight-port 50061 --grpc-port 50062\n  \
    colvault sql sales \"SELECT count(*) FROM orders\" --cluster 127.0.0.1:50050\n\n\
    Executors take the catalog and the KMS from --catalog / --kms (or COLVAULT_CATALOG, COLVAULT_KMS,\n\
    the configuration file) and S3 from AWS_*, as every colvault command does. The scheduler needs none.")]
pub enum ClusterCmd {
    /// Run a Ballista scheduler: it cuts plans into tasks and hands them to executors; it opens no
    /// table and holds no key
    Scheduler {
        /// Where to listen for clients and executors
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        bind: SocketAddr,
        /// Failures of one task (I/O, a lost executor) before its job fails; colvault's own errors
        /// (a refused key, a plan that does not match the catalog) fail the job at once
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=100))]
        task_max_failures: u64,
    },
    /// Run an executor: it reads and writes tables through this process's catalog, KMS and object
    /// store, proving every plan it is given against the catalog
    Executor {
        /// The scheduler's address
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        scheduler: SocketAddr,
        /// The host to listen on
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The host the scheduler, other executors and clients reach this executor at, when not
        /// --host (behind a proxy or NAT)
        #[arg(long, value_name = "HOST")]
        advertise_host: Option<String>,
        /// The Arrow Flight port (other executors fetch shuffle data from it)
        #[arg(long, default_value_t = 50051)]
        flight_port: u16,
        /// The gRPC port (the scheduler sends tasks to it)
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks run at once [default: this machine's cores]
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        concurrent_tasks: Option<u64>,
        /// Where shuffle files are written [default: a temporary directory]
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
    },
}

pub fn run(cmd: ClusterCmd, opts: &KeyOpts) -> CliResult {
    // Ballista's log on stderr: RUST_LOG (error, warn, info, debug, trace) selects, default warn.
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Warn);
    if log::set_logger(&STDERR_LOG).is_ok() {
        log::set_max_level(level);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| io_err("starting the cluster runtime", e))?;
    match cmd {
        ClusterCmd::Scheduler {
            bind,
            task_max_failures,
        } => {
            let mut options = SchedulerOptions::new(bind);
            options.task_max_failures = task_max_failures as usize;
            rt.block_on(run_scheduler(options))?;
        }
        ClusterCmd::Executor {
            scheduler,
            host,
            advertise_host,
            flight_port,
            grpc_port,
            concurrent_tasks,
            work_dir,
        } => {
            let ctx = opts.open_existing()?;
            let env = Arc::new(ClusterEnv::new(ctx.catalog.clone(), ctx.keys.clone()));
            let options = ExecutorOptions {
                scheduler,
                host,
                advertise_host,
                flight_port,
                grpc_port,
                concurrent_tasks: concurrent_tasks.map(|n| n as usize),
                work_dir,
            };
            rt.block_on(run_executor(options, env))?;
        }
    }
    Ok(())
}

/// Log records on stderr, one line each: the level, where, and the message (never key material:
/// colvault logs none, and Ballista's records are about jobs, tasks and plans).
struct StderrLog;

static STDERR_LOG: StderrLog = StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("{:<5} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}
