//! `colvault project ...`: create, show, migrate, rewrap, re-encrypt, verify, vacuum.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::table::lifecycle::LifecycleReport;
use colvault::Algorithm;
use serde_json::{json, Value};

use super::context::{Ctx, KeyOpts};
use super::error::{CliError, CliResult};
use super::output::{bar, lib_progress, print_json, size, thousands, time_ms};

/// Parses an algorithm name for an encrypted project.
pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    match s.parse::<Algorithm>() {
        Ok(Algorithm::None) | Err(_) => Err(format!(
            "unknown algorithm {s:?}: expected one of aes256 (AES-256-GCM, recommended), aesctr (AES-256-CTR with \
             a MAC), rc4 (legacy, needs --allow-legacy-rc4)"
        )),
        Ok(a) => Ok(a),
    }
}

/// The encryption options of `create` and `migrate`.
#[derive(Args, Debug, Clone)]
pub struct EncryptionArgs {
    /// Encrypt the project's data
    #[arg(long)]
    pub encrypt: bool,
    /// Do not encrypt (checksums only): the default of `create`; `migrate` needs it to turn encryption off
    #[arg(long, conflicts_with = "encrypt")]
    pub plaintext: bool,
    /// The key: `default` (a key created for the project) or a key id or alias (BYOK; grant it first)
    #[arg(long, value_name = "default|KEY_ID", requires = "encrypt", default_value = "default")]
    pub key: String,
    /// The algorithm: aes256 (AES-256-GCM), aesctr (AES-256-CTR + MAC), rc4 (legacy)
    #[arg(long, value_name = "ALGORITHM", requires = "encrypt", default_value = "aes256",
          value_parser = parse_algorithm)]
    pub algorithm: Algorithm,
    /// Allow writing RC4 (legacy, prohibited in TLS by RFC 7465); needed for --algorithm rc4
    #[arg(long, requires = "encrypt")]
    pub allow_legacy_rc4: bool,
}

impl EncryptionArgs {
    fn settings(&self, ctx: &Ctx) -> CliResult<ProjectSettings> {
        if !self.encrypt {
            return Ok(ProjectSettings::plaintext());
        }
        if self.algorithm.is_legacy() && !self.allow_legacy_rc4 {
            return Err(CliError::usage(
                "RC4 is a legacy cipher (RFC 7465): pass --allow-legacy-rc4 to write it anyway, or choose aes256",
            ));
        }
        let key = if self.key == "default" {
            KeyChoice::ProjectDefault
        } else {
            KeyChoice::Byok(ctx.resolve_key(&self.key)?)
        };
        let mut s = ProjectSettings::encrypted(self.algorithm, key);
        if self.allow_legacy_rc4 {
            s = s.allow_legacy_rc4();
        }
        Ok(s)
    }
}

#[derive(Subcommand, Debug)]
pub enum ProjectCmd {
    /// Create a project: a directory of tables with its encryption settings
    #[command(
        after_help = "Examples:\n  colvault project create ./sales --name sales --encrypt\n  \
                            colvault project create ./plain --name plain\n  \
                            colvault project create ./payroll --name payroll --encrypt --key KEY_ID   # BYOK: prints the id to grant\n  \
                            colvault kms grant KEY_ID ID && colvault project create ./payroll --name payroll --encrypt --key \
                            KEY_ID --algorithm aesctr --id ID"
    )]
    Create {
        /// The project's directory (created; must be empty or missing)
        path: PathBuf,
        /// The project's name, its principal in the KMS: 3 to 27 letters, digits or underscores, a letter
        /// first [default: the directory's name]
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        encryption: EncryptionArgs,
        /// The project's immutable id (32 hex digits), when a bring-your-own key was granted to it
        /// before creation [default: a fresh random id]
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Adopt an existing project directory into the catalog (trust on first use): its settings, every
    /// table's manifest chain and its files' footers are verified first
    Register {
        /// The project's directory
        path: PathBuf,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Show a project's settings, its key and its tables
    Show {
        path: PathBuf,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Change the encryption settings: every file of every table is rewritten, old snapshots expire
    #[command(
        after_help = "Examples:\n  colvault project migrate ./plain --encrypt                # turn encryption on\n  \
                            colvault project migrate ./sales --encrypt --algorithm aesctr\n  \
                            colvault project migrate ./sales --encrypt --key KEY_ID   # move to a BYOK key\n  \
                            colvault project migrate ./sales --plaintext              # turn encryption off"
    )]
    Migrate {
        path: PathBuf,
        #[command(flatten)]
        encryption: EncryptionArgs,
    },
    /// Move every file to the key's current version (after `kms rotate`): chunks copied, footers re-sealed
    Rewrap { path: PathBuf },
    /// Give every file a fresh data key (for a data key that may have leaked): data re-encrypted
    Reencrypt { path: PathBuf },
    /// Read every column of every file of every table and check it (`table verify` checks one table)
    Verify {
        path: PathBuf,
        /// Also read every retained older snapshot, not only the current one
        #[arg(long)]
        all_versions: bool,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Delete data files no retained snapshot needs, and stale temporary files
    Vacuum {
        path: PathBuf,
        /// Keep unreferenced files younger than this (a concurrent writer's files not yet committed)
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        grace_seconds: u64,
    },
    /// Destroy an old version of the project's key, once nothing retained needs it
    #[command(
        after_help = "Example (after `colvault kms rotate KEY_ID`):\n  colvault project rewrap ./sales\n  \
                            colvault table expire-snapshots ./sales orders --older-than 0\n  \
                            colvault project destroy-key-version ./sales 1"
    )]
    DestroyKeyVersion { path: PathBuf, version: u32 },
}

fn settings_json(p: &Project) -> Value {
    let s = p.settings();
    json!({
        "path": p.dir().display().to_string(),
        "name": s.name,
        "project_id": s.project_id,
        "encrypted": s.cmk.is_some(),
        "algorithm": s.algorithm.name(),
        "kms": if s.kms.is_empty() { None } else { Some(&s.kms) },
        "key_id": s.cmk.as_ref().map(|k| k.as_str()),
        "default_key": s.default_key,
        "allow_legacy_rc4": s.allow_legacy_rc4,
        "created": time_ms(s.created_ms),
        "generation": s.generation,
        "migrating_from": s.migrating_from.as_ref().map(|(a, k)| json!({
            "algorithm": a.name(), "key_id": k.as_ref().map(|k| k.as_str())
        })),
    })
}

fn report_lifecycle(what: &str, reports: &[(String, LifecycleReport)]) {
    for (table, r) in reports {
        match r.version {
            Some(v) => println!(
                "table {table}: {what} {} file(s), {} of column data, committed as version {v}",
                r.files,
                size(r.bytes)
            ),
            None => println!("table {table}: nothing to do"),
        }
    }
    if reports.is_empty() {
        println!("the project has no tables");
    }
}

pub fn run(cmd: ProjectCmd, opts: &KeyOpts) -> CliResult {
    // Only creating a project (or migrating one to encryption) may create the keystore and its root
    // key; every other project command opens an existing keystore or none.
    let ctx = match &cmd {
        ProjectCmd::Create { path, .. } => {
            // Refused before the keystore is opened (or created), so a refusal creates nothing.
            if std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some()) {
                return Err(CliError::usage(format!(
                    "{} is not empty: a project is created in an empty or missing directory",
                    path.display()
                ))
                .hint("choose a new directory, e.g. `colvault project create ./NAME --name NAME`"));
            }
            opts.open()?
        }
        ProjectCmd::Migrate { encryption, .. } if encryption.encrypt => opts.open()?,
        _ => opts.open_existing()?,
    };
    match cmd {
        ProjectCmd::Create {
            path,
            name,
            encryption,
            id,
            json,
        } => {
            let name = match name {
                Some(n) => n,
                None => path
                    .canonicalize()
                    .unwrap_or_else(|_| path.clone())
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| CliError::usage("give the project a name with --name NAME"))?,
            };
            let settings = encryption.settings(&ctx)?;
            // The library writes nothing until the key is usable and registers the project last, so
            // a refusal leaves nothing behind.
            let id = match id {
                Some(id) => id,
                None => colvault::project::new_project_id()?,
            };
            let p = Project::create_with_id(&ctx.catalog, &path, &name, settings, ctx.keys.clone(), id.clone())
                .map_err(|e| match e {
                    colvault::Error::AccessDenied { ref key, .. } => {
                        let key = key.clone();
                        CliError::from(e).hint(format!(
                            "grants name the project's id: once the key's owner has granted {key} to it, run the same \
                         command again with --id {id}"
                        ))
                    }
                    e => e.into(),
                })?;
            if json {
                print_json(&settings_json(&p))?;
            } else {
                let s = p.settings();
                match &s.cmk {
                    Some(k) => println!(
                        "created project {} in {}: encrypted with {} under {} key {}",
                        s.name,
                        path.display(),
                        s.algorithm,
                        if s.default_key { "its default" } else { "the BYOK" },
                        k.as_str()
                    ),
                    None => println!(
                        "created project {} in {}: not encrypted (checksums only)",
                        s.name,
                        path.display()
                    ),
                }
                eprintln!("next: colvault table import {} TABLE data.csv", path.display());
            }
        }
        ProjectCmd::Register { path, json } => {
            let (p, report) = Project::register(&ctx.catalog, &path, ctx.keys.clone())?;
            if json {
                let mut v = settings_json(&p);
                v["tables"] = report
                    .tables
                    .iter()
                    .map(|(n, v, f)| json!({"name": n, "version": v, "files": f}))
                    .collect();
                v["trust"] = json!("first use");
                print_json(&v)?;
            } else {
                println!(
                    "registered project {} (id {}) from {} in catalog {}",
                    report.name,
                    report.project_id,
                    p.dir().display(),
                    ctx.catalog.describe()
                );
                for (n, v, f) in &report.tables {
                    println!("  table {n}: version {v}, {f} file(s) verified");
                }
                println!(
                    "trust on first use: what storage held now is the reference; from now on the catalog refuses \
                     older, forged or swapped settings and manifests"
                );
            }
        }
        ProjectCmd::Show { path, json } => {
            let p = ctx.project(&path)?;
            let key = p.settings().cmk.as_ref().map(|k| ctx.kms.describe(k)).transpose()?;
            let mut tables = Vec::new();
            for name in p.list_tables()? {
                let head = p.table(&name)?.head()?;
                tables.push((name, head.version, head.files.len(), head.rows()));
            }
            if json {
                let mut v = settings_json(&p);
                v["key"] = key.as_ref().map(super::kms::key_json).unwrap_or(Value::Null);
                v["tables"] = tables
                    .iter()
                    .map(|(n, v, f, r)| json!({"name": n, "version": v, "files": f, "rows": r}))
                    .collect();
                print_json(&v)?;
            } else {
                let s = p.settings();
                println!("project     {} ({})", s.name, p.dir().display());
                println!("project id  {}", s.project_id);
                println!("created     {}", time_ms(s.created_ms));
                println!(
                    "encryption  {}",
                    if s.cmk.is_some() {
                        format!(
                            "{}{}",
                            s.algorithm,
                            if s.allow_legacy_rc4 {
                                " (legacy RC4 allowed)"
                            } else {
                                ""
                            }
                        )
                    } else {
                        "off (checksums only)".into()
                    }
                );
                if let (Some(k), Some(m)) = (&s.cmk, &key) {
                    println!(
                        "key         {} ({}, kms {}, {}, primary version {})",
                        k.as_str(),
                        if s.default_key { "project default" } else { "BYOK" },
                        s.kms,
                        match m.state {
                            colvault::kms::KeyState::Enabled => "enabled".to_string(),
                            other => format!("{other:?}").to_lowercase(),
                        },
                        m.primary_version
                    );
                }
                println!("generation  {}", s.generation);
                if let Some((a, k)) = &s.migrating_from {
                    println!(
                        "MIGRATING   from {a} / {}: run `colvault project migrate` again to finish",
                        k.as_ref().map_or("no key", |k| k.as_str())
                    );
                }
                println!("tables      {}", tables.len());
                for (n, v, f, r) in &tables {
                    println!("  {n:<24} version {v:<6} {f:>4} file(s) {:>14} rows", thousands(*r));
                }
            }
        }
        ProjectCmd::Migrate { path, encryption } => {
            if !encryption.encrypt && !encryption.plaintext {
                return Err(CliError::usage(
                    "say what to migrate to: --encrypt [--key ...] [--algorithm ...], or --plaintext to turn encryption off",
                ));
            }
            let p = ctx.project(&path)?;
            let target = encryption.settings(&ctx)?;
            let pb = bar(0, "migrate", false);
            let done = p.migrate(target, &lib_progress(&pb));
            pb.finish_and_clear();
            let done = done?;
            let s = done.settings();
            println!(
                "project {} migrated: {} (generation {}); every table rewritten, older snapshots expired",
                s.name,
                match &s.cmk {
                    Some(k) => format!("encrypted with {} under key {}", s.algorithm, k.as_str()),
                    None => "not encrypted".into(),
                },
                s.generation
            );
        }
        ProjectCmd::Rewrap { path } => {
            let p = ctx.project(&path)?;
            let pb = bar(0, "rewrap", false);
            let r = p.rewrap(&lib_progress(&pb));
            pb.finish_and_clear();
            report_lifecycle("rewrapped", &r?);
            println!("project settings re-sealed under the key's current version");
        }
        ProjectCmd::Reencrypt { path } => {
            let p = ctx.project(&path)?;
            let pb = bar(0, "reencrypt", false);
            let r = p.reencrypt(&lib_progress(&pb));
            pb.finish_and_clear();
            report_lifecycle("re-encrypted", &r?);
        }
        ProjectCmd::Verify {
            path,
            all_versions,
            json,
        } => verify(&ctx, &path, all_versions, json)?,
        ProjectCmd::Vacuum { path, grace_seconds } => {
            let p = ctx.project(&path)?;
            let n = p.vacuum(Duration::from_secs(grace_seconds))?;
            println!("removed {n} file(s) no retained snapshot needs");
        }
        ProjectCmd::DestroyKeyVersion { path, version } => {
            let p = ctx.project(&path)?;
            p.destroy_key_version(version)?;
            println!(
                "version {version} of key {} is destroyed; nothing retained needed it",
                p.settings().cmk.as_ref().map_or("-", |k| k.as_str())
            );
        }
    }
    Ok(())
}

/// Reads every column of every file of every table (each retained version with `all_versions`).
fn verify(ctx: &Ctx, path: &Path, all_versions: bool, json: bool) -> CliResult {
    let p = ctx.project(path)?;
    let checked = checked_word(&p);
    let mut results = Vec::new();
    for name in p.list_tables()? {
        results.extend(verify_table(&p, &name, all_versions, json)?);
    }
    if json {
        print_json(&json!({"ok": true, "tables": results}))?;
    } else {
        println!(
            "project {} verified: {} table snapshot(s), every chunk read and {checked}",
            p.settings().name,
            results.len()
        );
    }
    Ok(())
}

/// What a full read proves of a project's data: authenticated when encrypted, only checksummed
/// (accidental damage caught, not tampering) for `none`.
pub fn checked_word(p: &Project) -> &'static str {
    if p.settings().cmk.is_some() {
        "authenticated"
    } else {
        "checksummed"
    }
}

/// Reads every column of every file of table `name` (each retained version with `all_versions`),
/// printing a line per snapshot unless `json`; gives the JSON of each snapshot checked.
pub fn verify_table(p: &Project, name: &str, all_versions: bool, json: bool) -> CliResult<Vec<Value>> {
    let checked = checked_word(p);
    let mut results = Vec::new();
    let t = p.table(name)?;
    let head = t.head()?;
    let versions: Vec<u64> = if all_versions {
        (head.oldest_retained.max(1)..=head.version).collect()
    } else {
        vec![head.version]
    };
    for v in versions {
        let m = t.snapshot(v)?;
        let expected = m.rows();
        let pb = bar(expected, &format!("verify {name}"), false);
        let mut rows = 0u64;
        let read = (|| -> CliResult {
            // No column list: every column of every file is read and checked.
            let mut reader = t.scan().version(v).batch_size(65_536).build()?;
            while let Some(b) = reader.next_batch()? {
                rows += b.num_rows() as u64;
                pb.set_position(rows);
            }
            Ok(())
        })();
        pb.finish_and_clear();
        read.map_err(|e| {
            let msg = format!("table {name} version {v}: {}", e.message);
            CliError { message: msg, ..e }
        })?;
        if rows != expected {
            return Err(CliError::data(format!(
                "table {name} version {v}: read {rows} rows, the manifest lists {expected}"
            )));
        }
        let bytes: u64 = m.files.iter().map(|f| f.len).sum();
        if !json {
            println!(
                "table {name} version {v}: ok, {} file(s), {} rows, {} column(s), {} read and {checked}",
                m.files.len(),
                thousands(rows),
                m.schema.fields().len(),
                size(bytes)
            );
        }
        results.push(
            json!({"table": name, "version": v, "files": m.files.len(), "columns": m.schema.fields().len(),
                            "rows": rows, "bytes": bytes, "checked": checked}),
        );
    }
    Ok(results)
}
