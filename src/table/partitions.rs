//! A partitioned table's partitions: the catalog's partition columns checked against every
//! manifest, listing and dropping partitions, and skipping a scan's files by their partition values
//! (see [`super::partition`]).

use std::collections::BTreeMap;

use super::partition::{Partition, PartitionInfo, PartitionValue};
use super::{FileRef, Manifest, Table};
use crate::error::{Error, Result};
use crate::read::Predicate;

/// What [`Table::drop_partition`] committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedPartition {
    /// The version committed.
    pub version: u64,
    /// The partition dropped: its files, rows and bytes.
    pub dropped: PartitionInfo,
}

impl Table {
    /// The columns partitioning this table, in partition order, as the catalog records them (empty
    /// for a table that is not partitioned).
    pub fn partition_by(&self) -> &[String] {
        self.columns.partition_by.as_deref().unwrap_or(&[])
    }

    /// Checks a manifest read from storage against the catalog's partition columns (the values'
    /// types were checked when it was decoded).
    pub(super) fn check_manifest_partitions(&self, m: &Manifest) -> Result<()> {
        let Some(expected) = &self.columns.partition_by else {
            return Ok(());
        };
        if &m.partition_by != expected {
            return Err(Error::integrity(format!(
                "manifest version {} of table {} (it records the partition columns [{}]; the catalog records [{}])",
                m.version,
                self.name,
                m.partition_by.join(", "),
                expected.join(", ")
            )));
        }
        Ok(())
    }

    /// The partitions of the current version, sorted by their values, with what each holds.
    pub fn partitions(&self) -> Result<Vec<PartitionInfo>> {
        let head = self.head()?;
        Ok(partitions_of(&head))
    }

    /// Parses a partition spec of this table (`ds=2024-01-01/region=eu`; see [`Partition::parse`]).
    pub fn parse_partition(&self, spec: &str) -> Result<Partition> {
        if self.partition_by().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "table {} is not partitioned",
                self.name
            )));
        }
        let head = self.head()?;
        Partition::parse(spec, self.partition_by(), &head.schema)
    }

    /// Drops one partition: one commit that removes every file of it (a partition that holds no
    /// file is [`Error::NotRegistered`]). Older versions keep reading it until they are expired.
    pub fn drop_partition(&self, partition: &Partition) -> Result<DroppedPartition> {
        if partition.columns() != self.partition_by() {
            return Err(Error::InvalidArgument(format!(
                "partition {partition} does not name the partition columns of table {} ([{}])",
                self.name,
                self.partition_by().join(", ")
            )));
        }
        let mut dropped = None;
        let m = self.commit("drop partition", |head| {
            let mut next = head.clone();
            let (gone, kept): (Vec<FileRef>, Vec<FileRef>) = head
                .files
                .iter()
                .cloned()
                .partition(|f| f.partition == partition.values());
            if gone.is_empty() {
                return Err(Error::NotRegistered {
                    kind: "partition",
                    name: partition.to_string(),
                    hint: format!(" in table {} (version {})", self.name, head.version),
                });
            }
            dropped = Some(PartitionInfo {
                partition: partition.clone(),
                files: gone.len(),
                rows: gone.iter().map(|f| f.rows).sum(),
                bytes: gone.iter().map(|f| f.len).sum(),
            });
            next.files = kept;
            Ok(next)
        })?;
        Ok(DroppedPartition {
            version: m.version,
            dropped: dropped.expect("a committed drop found its files"),
        })
    }
}

/// The partitions of snapshot `m`, sorted by their values.
pub(crate) fn partitions_of(m: &Manifest) -> Vec<PartitionInfo> {
    let mut by: BTreeMap<&[PartitionValue], PartitionInfo> = BTreeMap::new();
    for f in &m.files {
        let Some(p) = m.partition_of(f) else {
            continue;
        };
        let e = by.entry(&f.partition).or_insert_with(|| PartitionInfo {
            partition: p,
            files: 0,
            rows: 0,
            bytes: 0,
        });
        e.files += 1;
        e.rows += f.rows;
        e.bytes += f.len;
    }
    by.into_values().collect()
}

/// Whether file `f` of snapshot `m` may hold rows matching every predicate, judged by its
/// partition values alone (the file is not opened). A predicate on a column that is not a
/// partition column, or one its value cannot be compared with, keeps the file.
pub(crate) fn file_may_match(m: &Manifest, f: &FileRef, predicates: &[Predicate]) -> bool {
    if m.partition_by.is_empty() {
        return true;
    }
    predicates.iter().all(|p| {
        let Some(k) = m.partition_by.iter().position(|c| c == p.column()) else {
            return true;
        };
        let (Some(value), Ok(field)) = (f.partition.get(k), m.schema.field_with_name(p.column())) else {
            return true;
        };
        match value.to_array(field.data_type()) {
            Ok(a) => p.matches_value(&a).unwrap_or(true),
            Err(_) => true,
        }
    })
}
