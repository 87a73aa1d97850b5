//! Planning a scan of one table snapshot: which files and row groups it reads (after statistics
//! pruning), how they are cut into DataFusion partitions, and the statistics reported to the
//! planner.
//!
//! Every file of the snapshot is opened once here (its footer authenticated against the manifest;
//! on an object store, one round trip each, several at a time): the open readers go into the plan,
//! so execution reads exactly the planned snapshot and never opens a footer twice.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::scalar::ScalarValue;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;

use crate::error::{Error, Result};
use crate::format::ReadAt;
use crate::read::{FileReader, Predicate};
use crate::table::{FileRef, Manifest, Table};

/// Files opened at once while planning (each open is one round trip on an object store).
const OPEN_CONCURRENCY: usize = 16;

/// Part of one file that one partition reads: some of its row groups.
#[derive(Clone)]
pub(crate) struct FileSlice {
    /// The data file's name, as the manifest records it.
    pub(crate) name: String,
    pub(crate) reader: Arc<FileReader>,
    pub(crate) row_groups: Vec<usize>,
    pub(crate) rows: u64,
}

impl std::fmt::Debug for FileSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSlice")
            .field("name", &self.name)
            .field("row_groups", &self.row_groups)
            .finish()
    }
}

/// A planned scan: its partitions (each a list of file slices, in table order) and statistics.
#[derive(Debug)]
pub(crate) struct ScanPlan {
    pub(crate) partitions: Vec<Vec<FileSlice>>,
    /// Statistics of the whole table schema over what the scan reads.
    pub(crate) statistics: Statistics,
    pub(crate) files: usize,
    pub(crate) row_groups: usize,
}

/// A file opened while planning, with the row groups its statistics did not rule out.
struct OpenedFile {
    name: String,
    reader: Arc<FileReader>,
    row_groups: Vec<usize>,
}

/// Opens committed file `f` of snapshot `m` from `source` (its object, when storage has it),
/// checking it is the file the manifest committed.
pub(crate) fn open_file(
    table: &Table,
    f: &FileRef,
    m: &Manifest,
    source: Option<Arc<dyn ReadAt>>,
) -> Result<FileReader> {
    table.open_source(f, m, source)
}

/// Runs blocking colvault work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::InvalidArgument(format!("a colvault task did not finish: {e}")))?
}

/// Plans a scan of `files` of snapshot `m` (after partition pruning): opens them (only the first
/// ones covering `limit` rows when a limit applies), prunes row groups with `predicates`, cuts what
/// remains into at most `target_partitions` partitions of about equal rows.
pub(crate) async fn plan(
    table: &Table,
    m: Arc<Manifest>,
    mut files: Vec<FileRef>,
    predicates: Vec<Predicate>,
    limit: Option<usize>,
    target_partitions: usize,
) -> Result<ScanPlan> {
    if let Some(limit) = limit {
        let mut rows = 0u64;
        let keep = files
            .iter()
            .take_while(|f| {
                let before = rows;
                rows += f.rows;
                before < limit as u64
            })
            .count();
        files.truncate(keep);
    }
    let predicates = Arc::new(predicates);
    let opened: Vec<OpenedFile> = futures::stream::iter(files)
        .map(|f| {
            let (table, m, predicates) = (table.clone(), m.clone(), predicates.clone());
            async move {
                // The object's magic and tail in one awaited round trip; then the footer is
                // authenticated and its keys unwrapped (maybe asking the KMS) off the async threads.
                let source = table
                    .storage()
                    .reader_async(&format!("data/{}", f.name), Some(f.len))
                    .await?;
                blocking(move || open_and_select(&table, &f, &m, source, &predicates)).await
            }
        })
        .buffered(OPEN_CONCURRENCY)
        .try_collect()
        .await?;
    let statistics = statistics(&m, &opened);
    let files = opened.iter().filter(|o| !o.row_groups.is_empty()).count();
    let row_groups = opened.iter().map(|o| o.row_groups.len()).sum();
    Ok(ScanPlan {
        partitions: partition(&opened, target_partitions),
        statistics,
        files,
        row_groups,
    })
}

/// Opens file `f` and selects the row groups whose statistics do not rule out `predicates`.
fn open_and_select(
    table: &Table,
    f: &FileRef,
    m: &Manifest,
    source: Option<Arc<dyn ReadAt>>,
    predicates: &[Predicate],
) -> Result<OpenedFile> {
    let r = open_file(table, f, m, source)?;
    let schema = r.schema();
    let rgs = {
        let mut scan = r.scan();
        for p in predicates.iter() {
            if schema.index_of(p.column()).is_ok() {
                scan = scan.filter(p.clone());
            }
        }
        scan.selected_row_groups()?
    };
    Ok(OpenedFile {
        name: f.name.clone(),
        reader: Arc::new(r),
        row_groups: rgs,
    })
}

fn rg_rows(r: &FileReader, rg: usize) -> u64 {
    r.parquet_metadata().row_group(rg).num_rows().max(0) as u64
}

/// Cuts the selected row groups into at most `n` partitions of about equal rows, in table order
/// (a partition holds whole row groups, of one file or several).
fn partition(opened: &[OpenedFile], n: usize) -> Vec<Vec<FileSlice>> {
    let total: u64 = opened
        .iter()
        .flat_map(|o| o.row_groups.iter().map(|&rg| rg_rows(&o.reader, rg)))
        .sum();
    let per = total.div_ceil(n.max(1) as u64).max(1);
    let mut parts: Vec<Vec<FileSlice>> = Vec::new();
    let mut current: Vec<FileSlice> = Vec::new();
    let mut current_rows = 0u64;
    for o in opened {
        let mut slice: Option<FileSlice> = None;
        for &rg in &o.row_groups {
            let rows = rg_rows(&o.reader, rg);
            let s = slice.get_or_insert_with(|| FileSlice {
                name: o.name.clone(),
                reader: o.reader.clone(),
                row_groups: Vec::new(),
                rows: 0,
            });
            s.row_groups.push(rg);
            s.rows += rows;
            current_rows += rows;
            if current_rows >= per && parts.len() + 1 < n {
                current.extend(slice.take());
                parts.push(std::mem::take(&mut current));
                current_rows = 0;
            }
        }
        current.extend(slice);
    }
    if !current.is_empty() || parts.is_empty() {
        parts.push(current);
    }
    parts
}

/// Row counts, null counts and (inexact) min/max of every column of the table schema over the
/// selected row groups, from the footers' statistics where the caller's keys opened them.
fn statistics(m: &Manifest, opened: &[OpenedFile]) -> Statistics {
    let schema = &m.schema;
    let rows: u64 = opened
        .iter()
        .flat_map(|o| o.row_groups.iter().map(|&rg| rg_rows(&o.reader, rg)))
        .sum();
    let bytes: i64 = opened
        .iter()
        .flat_map(|o| {
            o.row_groups
                .iter()
                .map(|&rg| o.reader.parquet_metadata().row_group(rg).total_byte_size())
        })
        .sum();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            crate::error::contain("statistics", || Ok(column_statistics(field.name(), opened)))
                .unwrap_or_else(|_| ColumnStatistics::new_unknown())
        })
        .collect();
    Statistics {
        num_rows: Precision::Exact(rows as usize),
        total_byte_size: Precision::Inexact(bytes.max(0) as usize),
        column_statistics: columns,
    }
}

fn column_statistics(name: &str, opened: &[OpenedFile]) -> ColumnStatistics {
    let mut nulls: Option<u64> = Some(0);
    let mut min: Option<Option<ScalarValue>> = Some(None);
    let mut max: Option<Option<ScalarValue>> = Some(None);
    for OpenedFile {
        reader: r,
        row_groups: rgs,
        ..
    } in opened
    {
        if rgs.is_empty() {
            continue;
        }
        let schema = r.schema();
        if schema.index_of(name).is_err() {
            // A column added after this file was written: all null here.
            nulls = nulls.map(|n| n + rgs.iter().map(|&rg| rg_rows(r, rg)).sum::<u64>());
            continue;
        }
        let meta = r.parquet_metadata();
        let Ok(conv) = StatisticsConverter::try_new(name, &schema, meta.file_metadata().schema_descr()) else {
            return ColumnStatistics::new_unknown();
        };
        let groups = || rgs.iter().map(|&rg| meta.row_group(rg));
        match conv.row_group_null_counts(groups()) {
            Ok(a) if a.null_count() == 0 => nulls = nulls.map(|n| n + a.values().iter().sum::<u64>()),
            _ => nulls = None,
        }
        fold(&mut min, conv.row_group_mins(groups()).ok(), std::cmp::Ordering::Less);
        fold(
            &mut max,
            conv.row_group_maxes(groups()).ok(),
            std::cmp::Ordering::Greater,
        );
    }
    let bound = |b: Option<Option<ScalarValue>>| match b {
        Some(Some(v)) => Precision::Inexact(v),
        _ => Precision::Absent,
    };
    ColumnStatistics {
        null_count: nulls.map_or(Precision::Absent, |n| Precision::Exact(n as usize)),
        min_value: bound(min),
        max_value: bound(max),
        ..ColumnStatistics::new_unknown()
    }
}

/// Folds row-group bounds into `acc` (keeping the one that is `better`); a missing bound makes the
/// whole bound unknown (`None`).
fn fold(
    acc: &mut Option<Option<ScalarValue>>,
    values: Option<datafusion::arrow::array::ArrayRef>,
    better: std::cmp::Ordering,
) {
    let Some(current) = acc.as_mut() else {
        return;
    };
    let Some(values) = values else {
        *acc = None;
        return;
    };
    for i in 0..values.len() {
        if values.is_null(i) {
            *acc = None;
            return;
        }
        let Ok(v) = ScalarValue::try_from_array(&values, i) else {
            *acc = None;
            return;
        };
        match current {
            None => *current = Some(v),
            Some(c) => match v.partial_cmp(c) {
                Some(o) if o == better => *c = v,
                Some(_) => {}
                None => {
                    *acc = None;
                    return;
                }
            },
        }
    }
}
