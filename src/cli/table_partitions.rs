//! `colvault table partitions` and `table drop-partition`, and the `--partition-by` option of
//! `table create` and `table import`.

use colvault::table::Table;
use serde_json::json;

use super::error::CliResult;
use super::output::{print_json, size, thousands};

/// `--partition-by ds,region`: the columns, comma-separated, in partition order.
pub fn partition_by_arg(s: &str) -> Result<String, String> {
    let c = s.trim();
    if c.is_empty() {
        return Err("a partition column's name is missing (e.g. --partition-by ds,region)".into());
    }
    Ok(c.to_string())
}

/// Lists the partitions of `t`'s current version: each with its files, rows and bytes.
pub fn partitions(t: &Table, json: bool) -> CliResult {
    let parts = t.partitions()?;
    if json {
        return print_json(&json!({
            "table": t.name(),
            "partition_by": t.partition_by(),
            "partitions": parts.iter().map(|p| json!({
                "partition": p.partition.to_string(),
                "values": p.partition.values().iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                "files": p.files,
                "rows": p.rows,
                "bytes": p.bytes,
            })).collect::<Vec<_>>(),
        }));
    }
    if t.partition_by().is_empty() {
        println!("table {} is not partitioned", t.name());
        return Ok(());
    }
    if parts.is_empty() {
        println!(
            "table {} (partitioned by {}) has no partitions yet",
            t.name(),
            t.partition_by().join(", ")
        );
        return Ok(());
    }
    println!("{:<40} {:>6} {:>14} {:>10}", "PARTITION", "FILES", "ROWS", "SIZE");
    for p in &parts {
        println!(
            "{:<40} {:>6} {:>14} {:>10}",
            p.partition.to_string(),
            p.files,
            thousands(p.rows),
            size(p.bytes)
        );
    }
    Ok(())
}

/// Drops partition `spec` (`ds=2024-01-01/region=eu`) of `t` in one commit.
pub fn drop_partition(t: &Table, spec: &str) -> CliResult {
    let partition = t.parse_partition(spec)?;
    let d = t.drop_partition(&partition)?;
    println!(
        "dropped partition {} of table {}: {} file(s), {} rows; version {}",
        d.dropped.partition,
        t.name(),
        d.dropped.files,
        thousands(d.dropped.rows),
        d.version
    );
    Ok(())
}
