//! `colvault kms ...`: the key management service's administration.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use colvault::crypto::SecretKey;
use colvault::kms::{
    AuditOutcome, AuditRecord, CreateKeyRequest, KeyMetadata, KeyOrigin, KeyState, KeyVersionState, KmsAdmin,
    Principal, RootSecret,
};
use serde_json::{json, Value};

use super::context::{env_passphrase, prompt_passphrase, Ctx, KeyOpts, NEW_PASSPHRASE_ENV, PASSPHRASE_ENV};
use super::error::{io_err, CliError, CliResult};
use super::output::{print_json, time, unix_secs};

#[derive(Subcommand, Debug)]
pub enum KmsCmd {
    /// Create a customer master key (bring your own key): generated, or imported with --import
    #[command(after_help = "Examples:\n  colvault kms create-key --alias sales-key --json\n  \
                            head -c 32 /dev/urandom > my.key && colvault kms create-key --import my.key --grant sales")]
    CreateKey {
        /// A human-readable alias, unique in the keystore
        #[arg(long)]
        alias: Option<String>,
        /// Import this key material: a file of exactly 32 bytes, or of 64 hex digits
        #[arg(long, value_name = "FILE")]
        import: Option<PathBuf>,
        /// Grant a project (its name, its directory, or the id of a project to be created with --id) use of
        /// the key; may be repeated
        #[arg(long, value_name = "PROJECT")]
        grant: Vec<String>,
        /// Print the key's metadata as JSON (an object with "key_id")
        #[arg(long)]
        json: bool,
    },
    /// List every key of the keystore
    List {
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Show a key: state, versions, grants
    Describe {
        /// Key id or alias
        key: String,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled key
    Enable { key: String },
    /// Disable a key: all use stops (processes holding it in their KEK cache stop within its lifetime)
    Disable { key: String },
    /// Schedule a key for deletion after a window of 7 to 30 days; cancel-deletion undoes it
    ScheduleDeletion {
        key: String,
        /// Days until the key's material may be destroyed
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(7..=30))]
        days: u32,
    },
    /// Cancel a scheduled deletion: the key returns to the state it had
    CancelDeletion { key: String },
    /// Delete a key whose deletion window has passed: its material is destroyed (crypto-shredding)
    Delete { key: String },
    /// Add a new key version and make it primary; older versions still decrypt
    Rotate { key: String },
    /// Destroy the material of an old (non-primary) key version; data only it protects is lost.
    /// For a project's key, prefer `colvault project destroy-key-version`, which checks first
    DestroyVersion { key: String, version: u32 },
    /// Let a project use a key (PROJECT: the project's name or directory, or the id of a project to be
    /// created with `project create --id`); grants name the project's immutable id
    #[command(after_help = "Example (a project that does not exist yet):\n  \
                      colvault project create ./sales --name sales --encrypt --key KEY_ID   # refused: prints the id to grant\n  \
                      colvault kms grant KEY_ID ID\n  \
                      colvault project create ./sales --name sales --encrypt --key KEY_ID --id ID")]
    Grant { key: String, project: String },
    /// Stop a project from using a key (PROJECT: the project's name, directory or id)
    Revoke { key: String, project: String },
    /// Show the audit log of the keystore, after verifying its hash chain
    Audit {
        /// Only records about this key (id or alias)
        #[arg(long)]
        key: Option<String>,
        /// Only the last N records
        #[arg(long, value_name = "N")]
        last: Option<usize>,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Re-seal the keystore under a new root secret (a passphrase or a new root key file)
    #[command(
        after_help = "The current root secret opens the keystore as usual (COLVAULT_PASSPHRASE or the root key \
                            file).\nA new passphrase is read from COLVAULT_NEW_PASSPHRASE, or asked for twice on a \
                            terminal.\n\nExamples:\n  COLVAULT_NEW_PASSPHRASE=... colvault kms change-root-secret --to \
                            passphrase\n  colvault kms change-root-secret --to key-file   # replaces ~/.colvault/root.key"
    )]
    ChangeRootSecret {
        /// What seals the keystore from now on
        #[arg(long, value_enum)]
        to: RootKind,
        /// Where to create the new root key file [default: the current root key file's path, replaced]
        #[arg(long, value_name = "PATH")]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RootKind {
    /// A passphrase (stretched with Argon2id)
    Passphrase,
    /// A file of 32 random bytes, created with mode 0600
    KeyFile,
}

fn state_name(s: &KeyState) -> &'static str {
    match s {
        KeyState::Enabled => "enabled",
        KeyState::Disabled => "disabled",
        KeyState::PendingDeletion { .. } => "pending_deletion",
        KeyState::Deleted => "deleted",
    }
}

fn state_text(s: &KeyState) -> String {
    match s {
        KeyState::PendingDeletion { until } => format!("pending deletion (until {})", time(*until)),
        other => state_name(other).to_string(),
    }
}

/// The JSON form of a key's metadata.
pub fn key_json(m: &KeyMetadata) -> Value {
    let (origin, project) = match &m.origin {
        KeyOrigin::ProjectDefault { project } => ("project_default", Some(project.as_str().to_string())),
        KeyOrigin::Byok => ("byok", None),
    };
    json!({
        "key_id": m.id.as_str(),
        "alias": m.alias,
        "origin": origin,
        "project": project,
        "state": state_name(&m.state),
        "deletion_date": match m.state { KeyState::PendingDeletion { until } => Some(time(until)), _ => None },
        "deletion_date_unix": match m.state { KeyState::PendingDeletion { until } => Some(unix_secs(until)), _ => None },
        "primary_version": m.primary_version,
        "versions": m.versions.iter().map(|v| json!({
            "version": v.version,
            "state": match v.state { KeyVersionState::Enabled => "enabled", KeyVersionState::Destroyed => "destroyed" },
            "created": time(v.created),
        })).collect::<Vec<_>>(),
        "grants": m.grants.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "created": time(m.created),
    })
}

fn origin_text(m: &KeyMetadata) -> String {
    match &m.origin {
        KeyOrigin::ProjectDefault { project } => format!("project default key of {}", project.as_str()),
        KeyOrigin::Byok => "bring your own key".into(),
    }
}

/// Prints a key's metadata as text.
pub fn print_key(m: &KeyMetadata) {
    println!("key id           {}", m.id.as_str());
    if let Some(a) = &m.alias {
        println!("alias            {a}");
    }
    println!("origin           {}", origin_text(m));
    println!("state            {}", state_text(&m.state));
    println!("created          {}", time(m.created));
    println!("primary version  {}", m.primary_version);
    for v in &m.versions {
        let st = match v.state {
            KeyVersionState::Enabled => "enabled",
            KeyVersionState::Destroyed => "destroyed",
        };
        println!("  version {:<6} {st:<10} created {}", v.version, time(v.created));
    }
    let grants: Vec<&str> = m.grants.iter().map(|g| g.as_str()).collect();
    println!(
        "grants           {}",
        if grants.is_empty() {
            "(none)".to_string()
        } else {
            grants.join(", ")
        }
    );
}

/// The principal a project argument names: a registered project (by name or directory) is its
/// immutable id; a bare 32-hex-digit id names a project about to be created with `--id`.
pub fn project_principal(ctx: &Ctx, arg: &str) -> CliResult<Principal> {
    let is_id = arg.len() == 32 && arg.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if is_id {
        return Ok(Principal::new(arg)?);
    }
    let rec = ctx.find_project(Path::new(arg))?;
    Ok(Principal::new(rec.project_id)?)
}

fn read_import(path: &Path) -> CliResult<SecretKey> {
    let raw =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| io_err(format!("reading {}", path.display()), e))?);
    if raw.len() == 32 {
        return Ok(SecretKey::from_slice(&raw)?);
    }
    let text = std::str::from_utf8(&raw).unwrap_or("").trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits");
        }
        return Ok(SecretKey::from_slice(&bytes[..])?);
    }
    Err(CliError::usage(format!(
        "{} must hold exactly 32 bytes of key material, or 64 hex digits",
        path.display()
    )))
}

fn audit_json(r: &AuditRecord) -> Value {
    json!({
        "seq": r.seq,
        "time": time(r.time),
        "action": format!("{:?}", r.action),
        "key_id": r.key.as_ref().map(|k| k.as_str()),
        "version": r.version,
        "principal": r.principal.as_ref().map(|p| p.as_str()),
        "detail": r.detail,
        "outcome": match &r.outcome { AuditOutcome::Success => "success".to_string(), AuditOutcome::Failure(m) => format!("failure: {m}"), AuditOutcome::Intent { generation } => format!("intent: generation {generation}") },
    })
}

pub fn run(cmd: KmsCmd, opts: &KeyOpts) -> CliResult {
    let ctx = opts.open()?;
    let kms = ctx.local()?.clone();
    match cmd {
        KmsCmd::CreateKey {
            alias,
            import,
            grant,
            json,
        } => {
            let mut req = CreateKeyRequest::byok();
            if let Some(a) = alias {
                req = req.with_alias(a);
            }
            if let Some(path) = import {
                req = req.with_import(read_import(&path)?);
            }
            for g in &grant {
                req = req.with_grant(project_principal(&ctx, g)?);
            }
            let m = kms.create_key(req)?;
            if json {
                print_json(&key_json(&m))?;
            } else {
                print_key(&m);
                eprintln!(
                    "next: grant a project use of it (colvault kms grant {} PROJECT), then create the project with \
                     --encrypt --key {}",
                    m.id.as_str(),
                    m.id.as_str()
                );
            }
        }
        KmsCmd::List { json } => {
            let keys = kms.list()?;
            if json {
                print_json(&Value::Array(keys.iter().map(key_json).collect()))?;
            } else if keys.is_empty() {
                println!("no keys in keystore {}", ctx.keystore.display());
            } else {
                println!(
                    "{:<36} {:<16} {:<20} {:<16} {:>7}  GRANTS",
                    "KEY ID", "ALIAS", "ORIGIN", "STATE", "VERSION"
                );
                for m in &keys {
                    let origin = match &m.origin {
                        KeyOrigin::ProjectDefault { project } => format!("default:{}", project.as_str()),
                        KeyOrigin::Byok => "byok".into(),
                    };
                    let grants: Vec<&str> = m.grants.iter().map(|g| g.as_str()).collect();
                    println!(
                        "{:<36} {:<16} {:<20} {:<16} {:>7}  {}",
                        m.id.as_str(),
                        m.alias.as_deref().unwrap_or("-"),
                        origin,
                        state_name(&m.state),
                        m.primary_version,
                        grants.join(",")
                    );
                }
            }
        }
        KmsCmd::Describe { key, json } => {
            let m = kms.describe(&ctx.resolve_key(&key)?)?;
            if json {
                print_json(&key_json(&m))?;
            } else {
                print_key(&m);
            }
        }
        KmsCmd::Enable { key } => {
            let m = kms.enable(&ctx.resolve_key(&key)?)?;
            println!("key {} is enabled", m.id.as_str());
        }
        KmsCmd::Disable { key } => {
            let m = kms.disable(&ctx.resolve_key(&key)?)?;
            println!(
                "key {} is disabled: reading or writing data under it now fails (a running process that cached \
                 the key stops within its KEK cache lifetime); `colvault kms enable {}` undoes this",
                m.id.as_str(),
                m.id.as_str()
            );
        }
        KmsCmd::ScheduleDeletion { key, days } => {
            let m = kms.schedule_deletion(&ctx.resolve_key(&key)?, days)?;
            println!(
                "key {} is {}; until then `colvault kms cancel-deletion {}` undoes this",
                m.id.as_str(),
                state_text(&m.state),
                m.id.as_str()
            );
        }
        KmsCmd::CancelDeletion { key } => {
            let m = kms.cancel_deletion(&ctx.resolve_key(&key)?)?;
            println!(
                "deletion of key {} cancelled; it is {}",
                m.id.as_str(),
                state_text(&m.state)
            );
        }
        KmsCmd::Delete { key } => {
            let m = kms.delete_key(&ctx.resolve_key(&key)?)?;
            println!(
                "key {} is deleted: its material is destroyed and the data it protected can no longer be decrypted",
                m.id.as_str()
            );
        }
        KmsCmd::Rotate { key } => {
            let m = kms.rotate(&ctx.resolve_key(&key)?)?;
            println!(
                "key {} rotated: version {} is primary; new files use it, older files still read. \
                 `colvault project rewrap PROJECT` moves existing files to it",
                m.id.as_str(),
                m.primary_version
            );
        }
        KmsCmd::DestroyVersion { key, version } => {
            // Every project the catalog knows is checked first: nothing retained may need the version.
            let id = ctx.resolve_key(&key)?;
            colvault::table::lifecycle::destroy_key_version(&ctx.catalog, &ctx.keys, &id, version)?;
            println!(
                "version {version} of key {} is destroyed; no project in the catalog needed it",
                id.as_str()
            );
        }
        KmsCmd::Grant { key, project } => {
            let p = project_principal(&ctx, &project)?;
            let m = kms.grant(&ctx.resolve_key(&key)?, &p)?;
            println!("project {project} (id {}) may use key {}", p.as_str(), m.id.as_str());
        }
        KmsCmd::Revoke { key, project } => {
            let p = project_principal(&ctx, &project)?;
            let m = kms.revoke(&ctx.resolve_key(&key)?, &p)?;
            println!(
                "project {project} (id {}) may no longer use key {}",
                p.as_str(),
                m.id.as_str()
            );
        }
        KmsCmd::Audit { key, last, json } => {
            let filter = key.map(|k| ctx.resolve_key(&k)).transpose()?;
            let log = kms.audit_log()?;
            let total = log.len();
            let mut records: Vec<&AuditRecord> = log.iter().filter(|r| filter.is_none() || r.key == filter).collect();
            if let Some(n) = last {
                records = records.split_off(records.len().saturating_sub(n));
            }
            if json {
                print_json(&json!({
                    "verified": true,
                    "records_total": total,
                    "records": records.iter().map(|r| audit_json(r)).collect::<Vec<_>>(),
                }))?;
            } else {
                for r in &records {
                    let outcome = match &r.outcome {
                        AuditOutcome::Success => "ok".to_string(),
                        AuditOutcome::Failure(m) => format!("FAILED: {m}"),
                        AuditOutcome::Intent { generation } => format!("intent (generation {generation})"),
                    };
                    let mut line = format!("{:>6} {} {:<17}", r.seq, time(r.time), format!("{:?}", r.action));
                    if let Some(k) = &r.key {
                        line.push_str(&format!(" key={}", k.as_str()));
                    }
                    if let Some(v) = r.version {
                        line.push_str(&format!(" v{v}"));
                    }
                    if let Some(p) = &r.principal {
                        line.push_str(&format!(" principal={}", p.as_str()));
                    }
                    if !r.detail.is_empty() {
                        line.push_str(&format!(" ({})", r.detail));
                    }
                    println!("{line} {outcome}");
                }
                println!(
                    "audit log {} verified: {total} records, hash chain intact",
                    kms.audit_path().display()
                );
            }
        }
        KmsCmd::ChangeRootSecret { to, new_key_file } => change_root_secret(&ctx, opts, to, new_key_file)?,
    }
    // The keystore's new generation becomes the catalog's high-water mark: an older copy of the
    // keystore is refused from now on.
    colvault::catalog::anchor_kms(ctx.catalog.as_ref(), ctx.kms.as_ref())?;
    Ok(())
}

fn change_root_secret(
    ctx: &super::context::Ctx,
    opts: &KeyOpts,
    to: RootKind,
    new_key_file: Option<PathBuf>,
) -> CliResult {
    match to {
        RootKind::Passphrase => {
            let p = match env_passphrase(NEW_PASSPHRASE_ENV)? {
                Some(p) => p,
                None => {
                    let Some(a) = prompt_passphrase("New passphrase: ")? else {
                        return Err(CliError::usage(format!(
                            "no new passphrase: set {NEW_PASSPHRASE_ENV}, or run this on a terminal to be asked"
                        )));
                    };
                    let b = prompt_passphrase("Repeat the new passphrase: ")?.unwrap_or_default();
                    if a != b {
                        return Err(CliError::usage("the two passphrases differ; nothing was changed"));
                    }
                    a
                }
            };
            // The library's one minimum (NIST SP 800-63B), checked here too so nothing is tried.
            if p.chars().count() < colvault::kms::MIN_PASSPHRASE_CHARS {
                return Err(CliError::usage(format!(
                    "a passphrase has at least {} characters; nothing was changed",
                    colvault::kms::MIN_PASSPHRASE_CHARS
                )));
            }
            ctx.local()?.change_root_secret(RootSecret::passphrase(p))?;
            println!(
                "keystore {} is sealed under the new passphrase: set {PASSPHRASE_ENV} to it from now on",
                ctx.keystore.display()
            );
            let old = opts.root_key_path()?;
            if old.exists() {
                println!(
                    "the root key file {} no longer opens the keystore (only older copies of it): delete it, or \
                     keep it with those backups",
                    old.display()
                );
            }
        }
        RootKind::KeyFile => {
            let current = opts.root_key_path()?;
            let target = new_key_file.unwrap_or_else(|| current.clone());
            if target.exists() && target != current {
                return Err(CliError::usage(format!(
                    "{} already exists; choose another --new-key-file",
                    target.display()
                )));
            }
            let replacing = target.exists();
            let staged = if replacing {
                let mut s = target.clone().into_os_string();
                s.push(".new");
                PathBuf::from(s)
            } else {
                target.clone()
            };
            if let Some(parent) = staged.parent() {
                super::context::create_private_dir(parent)?;
            }
            let root = RootSecret::create_key_file(&staged)?;
            if let Err(e) = ctx.local()?.change_root_secret(root) {
                let _ = std::fs::remove_file(&staged);
                return Err(e.into());
            }
            if replacing {
                std::fs::rename(&staged, &target).map_err(|e| {
                    io_err(
                        format!(
                            "moving the new root key file into place (the keystore is sealed under {} now)",
                            staged.display()
                        ),
                        e,
                    )
                })?;
            }
            println!(
                "keystore {} is sealed under the new root key file {} (mode 0600); back it up",
                ctx.keystore.display(),
                target.display()
            );
            if std::env::var_os(PASSPHRASE_ENV).is_some() {
                println!("unset {PASSPHRASE_ENV}: it would be tried first and no longer opens the keystore");
            }
            if target != current {
                println!(
                    "point --root-key-file or COLVAULT_ROOT_KEY_FILE at {} from now on",
                    target.display()
                );
            }
        }
    }
    Ok(())
}
