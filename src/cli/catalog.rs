//! `colvault catalog ...`: what the control plane records (projects, tables and their heads).

use std::path::PathBuf;

use clap::Subcommand;
use colvault::catalog::{ProjectRecord, TableRecord};
use serde_json::{json, Value};

use super::context::KeyOpts;
use super::error::CliResult;
use super::output::print_json;

#[derive(Subcommand, Debug)]
pub enum CatalogCmd {
    /// List the projects and their tables with the heads the catalog records
    List {
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Show one project's record: id, location, encryption policy, settings generation, tables
    Show {
        /// The project's name or directory
        project: PathBuf,
        /// Print the result as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
}

use colvault::codec::hex;

fn project_json(p: &ProjectRecord, tables: &[TableRecord]) -> Value {
    json!({
        "name": p.name,
        "project_id": p.project_id,
        "location": p.location,
        "kms": p.kms,
        "algorithm": p.policy.algorithm.to_string(),
        "key_id": p.policy.cmk.as_ref().map(|k| k.as_str()),
        "migrating_from": p.policy.migrating_from.as_ref().map(|(a, k)| json!({
            "algorithm": a.to_string(), "key_id": k.as_ref().map(|k| k.as_str())})),
        "settings_generation": p.generation,
        "settings_digest": hex(&p.settings_digest),
        "tables": tables.iter().map(|t| json!({
            "name": t.name, "table_id": t.table_id, "location": t.location,
            "head_version": t.head.version, "head_digest": hex(&t.head.digest),
            "column_keys": t.column_keys.iter().map(|k| json!({"column": k.column, "key_id": k.cmk.as_str()}))
                .collect::<Vec<_>>()})).collect::<Vec<_>>(),
    })
}

fn print_project(p: &ProjectRecord, tables: &[TableRecord]) {
    println!(
        "project {} (id {}) at {}: {}, settings generation {}",
        p.name,
        p.project_id,
        p.location,
        p.policy.describe(),
        p.generation
    );
    for t in tables {
        println!(
            "  table {:<24} id {}  head version {:>6}  digest {}…",
            t.name,
            t.table_id,
            t.head.version,
            &hex(&t.head.digest)[..16]
        );
        if !t.column_keys.is_empty() {
            println!(
                "        column keys: {}",
                super::table::describe_column_keys(&t.column_keys)
            );
        }
    }
}

pub fn run(cmd: CatalogCmd, opts: &KeyOpts) -> CliResult {
    // Reading the catalog needs no key: it holds ids, policies and digests, never key material.
    let catalog = opts.open_catalog()?;
    match cmd {
        CatalogCmd::List { json } => {
            let mut all = Vec::new();
            for p in catalog.list_projects()? {
                let tables = catalog.list_tables(&p.project_id)?;
                all.push((p, tables));
            }
            if json {
                print_json(&Value::Array(all.iter().map(|(p, t)| project_json(p, t)).collect()))?;
            } else if all.is_empty() {
                println!("catalog {} holds no project", catalog.describe());
            } else {
                for (p, t) in &all {
                    print_project(p, t);
                }
            }
        }
        CatalogCmd::Show { project, json } => {
            let rec = colvault::catalog::find_project(catalog.as_ref(), &project)?.ok_or_else(|| {
                colvault::Error::NotRegistered {
                    kind: "project",
                    name: project.to_string_lossy().to_string(),
                    hint: format!(" in catalog {}", catalog.describe()),
                }
            })?;
            let tables = catalog.list_tables(&rec.project_id)?;
            if json {
                print_json(&project_json(&rec, &tables))?;
            } else {
                print_project(&rec, &tables);
            }
        }
    }
    Ok(())
}
