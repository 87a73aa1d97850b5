//! The `colvault` command line: a thin layer over the library.

mod catalog;
#[cfg(feature = "ballista")]
mod cluster;
mod context;
mod dataio;
mod error;
mod inspect;
mod kms;
mod output;
mod project;
mod quickstart;
mod speed;
#[cfg(feature = "datafusion")]
mod sql;
mod table;
mod table_import;
mod table_partitions;
mod table_read;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use context::KeyOpts;

const AFTER_HELP: &str = "\
Getting started:
  colvault quickstart                                  # a demo: an encrypted table of a million rows
  colvault project create ./sales --name sales --encrypt
  colvault table import ./sales orders orders.csv      # creates the table from the file's schema
  colvault table count ./sales orders
  colvault table head ./sales orders -n 5
  colvault kms list

Bring your own key (grants name the project's id, not its name):
  colvault kms create-key --alias hr-key
  colvault project create ./payroll --name payroll --encrypt --key hr-key
                                                       # refused, creates nothing, prints the id ID to grant
  colvault kms grant hr-key ID
  colvault project create ./payroll --name payroll --encrypt --key hr-key --id ID

Keys and secrets:
  The keystore (--keystore, COLVAULT_KEYSTORE, default ~/.colvault/keystore) is created when missing
  by `kms` commands, `project create`, `project migrate --encrypt` and `quickstart` only; other
  commands never create it.
  It is sealed under COLVAULT_PASSPHRASE if set, else under the root key file (--root-key-file,
  COLVAULT_ROOT_KEY_FILE, default ~/.colvault/root.key, created with mode 0600 with a new keystore);
  for an existing passphrase keystore colvault asks for the passphrase when run on a terminal.
  Secrets are never given on the command line.
  COLVAULT_KEY_CACHE_SECONDS sets how long unwrapped key-encryption keys are cached (0: no caching).
  --kms URL (COLVAULT_KMS, or `kms = \"URL\"` in ~/.colvault/config.toml or $COLVAULT_CONFIG) picks the KMS:
  local (the keystore, default), pkcs11:module=PATH;token=LABEL, or aws-kms: (AWS_ENDPOINT_URL, AWS_REGION,
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); a project only opens with the KMS that holds its keys.

Exit codes:
  0 success   1 other error   2 usage error   3 key error (disabled, pending deletion, deleted,
  not granted, unknown key, wrong root secret)   4 data error (corrupt, tampered, not colvault,
  schema or format mismatch)";

/// colvault: a columnar table format with encryption built in.
///
/// Projects are directories of tables; an encrypted project's data is protected by a key held in a
/// key management service (the embedded local keystore), with AES-256-GCM, AES-256-CTR or legacy RC4.
#[derive(Parser, Debug)]
#[command(name = "colvault", version, about, long_about, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    keys: KeyOpts,
    /// The AES implementation: aws-lc-rs (the default; wipes its key schedules) or ring (faster
    /// AES-GCM on x86-64 CPUs with VAES but no AVX-512; does not wipe its AES-GCM key schedule).
    /// Both read and write the same files; `colvault speed` compares them on this machine
    #[arg(long, global = true, env = "COLVAULT_CIPHER_PROVIDER", value_name = "NAME", default_value = "aws-lc-rs",
          value_parser = ["aws-lc-rs", "ring"])]
    cipher_provider: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Try it: create an encrypted demo project, write and read a million rows, disable and enable its key
    Quickstart(quickstart::QuickstartArgs),
    /// Manage keys: create, list, describe, enable, disable, delete, rotate, grant, revoke, audit
    Kms {
        #[command(subcommand)]
        cmd: kms::KmsCmd,
    },
    /// What the catalog (the trust anchor) records: projects, tables and their heads
    Catalog {
        #[command(subcommand)]
        cmd: catalog::CatalogCmd,
    },
    /// Manage projects: create, register, show, migrate, rewrap, reencrypt, verify, vacuum
    Project {
        #[command(subcommand)]
        cmd: project::ProjectCmd,
    },
    /// Manage tables: create, list, drop, import, export, head, count, verify, schema, add-column, compact,
    /// history, expire-snapshots
    Table {
        #[command(subcommand)]
        cmd: table::TableCmd,
    },
    /// Run SQL over a project's tables (DataFusion): a query, INSERT INTO, CREATE TABLE ... AS SELECT,
    /// DROP TABLE; without a statement, a prompt reading statements from stdin
    #[cfg(feature = "datafusion")]
    Sql(sql::SqlArgs),
    /// Run the processes of a Ballista cluster for SQL: a scheduler, or an executor
    #[cfg(feature = "ballista")]
    Cluster {
        #[command(subcommand)]
        cmd: cluster::ClusterCmd,
    },
    /// Show a data file's envelope without any key; with --project, also its row groups and statistics
    Inspect(inspect::InspectArgs),
    /// Measure seal and open throughput of every algorithm and cipher provider on this machine (all
    /// threads)
    Speed {
        /// Size of the chunk sealed and opened, in MiB
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
        mib: u32,
        /// How many times each measurement runs; the best run is reported
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
    },
}

/// Runs the command line and gives the process's exit code.
pub fn main() -> ExitCode {
    // A panic in a decoder that the library contains becomes a typed error with its own message:
    // printing the panic too would only confuse. Any other panic prints as usual.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !colvault::error::panic_is_contained() {
            default_hook(info);
        }
    }));
    let cli = Cli::parse();
    let provider = colvault::crypto::providers()
        .into_iter()
        .find(|p| p.name() == cli.cipher_provider)
        .expect("clap allows only the providers' names");
    if colvault::crypto::install_default_provider(provider).is_err() {
        unreachable!("nothing used a cipher provider before the command line was parsed");
    }
    let result = match cli.command {
        Command::Quickstart(args) => quickstart::run(args, &cli.keys),
        Command::Kms { cmd } => kms::run(cmd, &cli.keys),
        Command::Catalog { cmd } => catalog::run(cmd, &cli.keys),
        Command::Project { cmd } => project::run(cmd, &cli.keys),
        Command::Table { cmd } => table::run(cmd, &cli.keys),
        #[cfg(feature = "datafusion")]
        Command::Sql(args) => sql::run(args, &cli.keys),
        #[cfg(feature = "ballista")]
        Command::Cluster { cmd } => cluster::run(cmd, &cli.keys),
        Command::Inspect(args) => inspect::run(args, &cli.keys),
        Command::Speed { mib, runs } => speed::speed(mib, runs).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
