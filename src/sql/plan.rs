//! Planning a scan of one table snapshot: which files and row groups it reads (after statistics
//! pruning), how they are cut into DataFusion partitions, and the statistics reported to the
//! planner.
//!
//! Every file of the snapshot is opened once here (its footer authenticated against the manifest;
//! on an object store, one round trip each, several at a time): the open readers go into the plan,
//! so execution reads exactly the planned snapshot and never opens a footer twice.

use std::ops::Range;
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
/// Fewest rows on either side of a cut through a row group: a row group is cut only where both
/// parts are worth a reader of their own (each reads the column chunks' dictionaries, and the
/// later part the page headers before its rows).
const MIN_CUT_ROWS: u64 = 64 * 1024;

/// Part of one file that one partition reads: some of its row groups, or some rows of one.
#[derive(Clone)]
pub(crate) struct FileSlice {
    /// The data file's name, as the manifest records it.
    pub(crate) name: String,
    pub(crate) reader: Arc<FileReader>,
    pub(crate) row_groups: Vec<usize>,
    /// Rows start..end of the one row group in `row_groups`, when the slice is not all of it.
    pub(crate) row_range: Option<Range<u64>>,
    pub(crate) rows: u64,
}

impl std::fmt::Debug for FileSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSlice")
            .field("name", &self.name)
            .field("row_groups", &self.row_groups)
            .field("row_range", &self.row_range)
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

/// The rows of row group `rg` of `r`, one the plan selected (so one the file has).
fn rg_rows(r: &FileReader, rg: usize) -> u64 {
    r.row_group_rows(rg).unwrap_or(0)
}

/// Cuts the selected row groups into at most `n` partitions of about equal rows, in table order.
/// A partition holds whole row groups, except that a row group on which an even share of rows
/// ends is cut there, so that each side reads its rows of it ([`FileSlice::row_range`]) when both
/// sides have at least [`MIN_CUT_ROWS`] and the cut is more than an eighth of a share from the
/// row group's ends (nearer, the partition ends at that end instead). So a table of one big row
/// group, or of a big and a small one, still runs on every core: DataFusion's Parquet scan reads
/// a row group in one partition, and TPC-H's part, partsupp and customer (one row group each at
/// scale factor 1) ran on one core of two.
fn partition(opened: &[OpenedFile], n: usize) -> Vec<Vec<FileSlice>> {
    let groups: Vec<Vec<u64>> = opened
        .iter()
        .map(|o| o.row_groups.iter().map(|&rg| rg_rows(&o.reader, rg)).collect())
        .collect();
    cut(&groups, n)
        .into_iter()
        .map(|part| {
            part.into_iter()
                .map(|p| {
                    let o = &opened[p.file];
                    FileSlice {
                        name: o.name.clone(),
                        reader: o.reader.clone(),
                        row_groups: p.row_groups.iter().map(|&i| o.row_groups[i]).collect(),
                        row_range: p.row_range,
                        rows: p.rows,
                    }
                })
                .collect()
        })
        .collect()
}

/// A [`FileSlice`] by position: file `file` of the planned ones, its selected row groups
/// `row_groups` (by position among them).
#[derive(Debug, PartialEq, Eq)]
struct Piece {
    file: usize,
    row_groups: Vec<usize>,
    row_range: Option<Range<u64>>,
    rows: u64,
}

/// [`partition`] over row counts: `files[f][g]` is the rows of file f's g-th selected row group.
fn cut(files: &[Vec<u64>], n: usize) -> Vec<Vec<Piece>> {
    let total: u64 = files.iter().flatten().sum();
    let n = n.max(1) as u64;
    let per = total.div_ceil(n).max(1);
    let slack = per / 8;
    let mut parts: Vec<Vec<Piece>> = Vec::new();
    let mut current: Vec<Piece> = Vec::new();
    let mut current_rows = 0u64;
    for (file, groups) in files.iter().enumerate() {
        // Whole row groups of this file, gathered into one piece.
        let mut whole: Option<Piece> = None;
        for (g, &rows) in groups.iter().enumerate() {
            let mut start = 0;
            while start < rows {
                let last = parts.len() as u64 + 1 >= n;
                let room = if last { u64::MAX } else { per - current_rows };
                let left = rows - start;
                let take = if left <= room {
                    left
                } else {
                    let after = left - room;
                    if room < MIN_CUT_ROWS || after < MIN_CUT_ROWS || after <= slack {
                        left
                    } else if room <= slack && start == 0 && current_rows > 0 {
                        // The share is nearly full: end the partition before this row group.
                        current.extend(whole.take());
                        parts.push(std::mem::take(&mut current));
                        current_rows = 0;
                        continue;
                    } else {
                        room
                    }
                };
                if start == 0 && take == rows {
                    let w = whole.get_or_insert_with(|| Piece {
                        file,
                        row_groups: Vec::new(),
                        row_range: None,
                        rows: 0,
                    });
                    w.row_groups.push(g);
                    w.rows += rows;
                } else {
                    current.extend(whole.take());
                    current.push(Piece {
                        file,
                        row_groups: vec![g],
                        row_range: Some(start..start + take),
                        rows: take,
                    });
                }
                start += take;
                current_rows += take;
                if !last && current_rows >= per {
                    current.extend(whole.take());
                    parts.push(std::mem::take(&mut current));
                    current_rows = 0;
                }
            }
        }
        current.extend(whole);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// (file, row groups by position, row range) of every piece, partition by partition.
    type Shape = Vec<Vec<(usize, Vec<usize>, Option<Range<u64>>)>>;

    fn shape(files: &[Vec<u64>], n: usize) -> Shape {
        let parts = cut(files, n);
        // Every row is read exactly once, and each piece's count is its rows.
        for (f, groups) in files.iter().enumerate() {
            for (g, &rows) in groups.iter().enumerate() {
                let mut covered: Vec<Range<u64>> = parts
                    .iter()
                    .flatten()
                    .filter(|p| p.file == f && p.row_groups.contains(&g))
                    .map(|p| p.row_range.clone().unwrap_or(0..rows))
                    .collect();
                covered.sort_by_key(|r| r.start);
                let mut at = 0;
                for r in covered {
                    assert_eq!(r.start, at, "file {f} row group {g}: {parts:?}");
                    at = r.end;
                }
                assert_eq!(at, rows, "file {f} row group {g}: {parts:?}");
            }
        }
        for p in parts.iter().flatten() {
            let rows: u64 = match &p.row_range {
                Some(r) => r.end - r.start,
                None => p.row_groups.iter().map(|&g| files[p.file][g]).sum(),
            };
            assert_eq!(p.rows, rows, "{p:?}");
        }
        parts
            .into_iter()
            .map(|part| part.into_iter().map(|p| (p.file, p.row_groups, p.row_range)).collect())
            .collect()
    }

    const M: u64 = 1 << 20;

    #[test]
    fn one_big_row_group_is_cut_in_even_shares() {
        // TPC-H SF 1 partsupp: 800,000 rows in one row group.
        assert_eq!(
            shape(&[vec![800_000]], 2),
            vec![
                vec![(0, vec![0], Some(0..400_000))],
                vec![(0, vec![0], Some(400_000..800_000))]
            ]
        );
        assert_eq!(shape(&[vec![800_000]], 3).len(), 3);
    }

    #[test]
    fn a_big_and_a_small_row_group_share_evenly() {
        // TPC-H SF 1 orders: 1,500,000 rows as a full row group and a part one.
        assert_eq!(
            shape(&[vec![M, 1_500_000 - M]], 2),
            vec![
                vec![(0, vec![0], Some(0..750_000))],
                vec![(0, vec![0], Some(750_000..M)), (0, vec![1], None)]
            ]
        );
    }

    #[test]
    fn cuts_near_a_row_group_end_keep_it_whole() {
        // TPC-H SF 1 lineitem: 6 row groups; the even share ends 145,120 rows before the end of
        // the third, within an eighth of a share, so the third stays whole.
        let lineitem = vec![M, M, M, M, M, 6_001_215 - 5 * M];
        assert_eq!(
            shape(&[lineitem], 2),
            vec![vec![(0, vec![0, 1, 2], None)], vec![(0, vec![3, 4, 5], None)]]
        );
        // Ends just past a row group's start: the partition ends before it.
        assert_eq!(
            shape(&[vec![M], vec![M + 200_000]], 2),
            vec![vec![(0, vec![0], None)], vec![(1, vec![0], None)]]
        );
    }

    #[test]
    fn small_row_groups_are_never_cut() {
        // Parts under MIN_CUT_ROWS: whole row groups, as many partitions as asked.
        assert_eq!(
            shape(&[vec![100; 11]], 4),
            vec![
                vec![(0, vec![0, 1, 2], None)],
                vec![(0, vec![3, 4, 5], None)],
                vec![(0, vec![6, 7, 8], None)],
                vec![(0, vec![9, 10], None)]
            ]
        );
        assert_eq!(shape(&[vec![100_000]], 2), vec![vec![(0, vec![0], None)]]);
        assert_eq!(shape(&[vec![25]], 2), vec![vec![(0, vec![0], None)]]);
        assert_eq!(shape(&[], 2), vec![vec![]]);
    }
}
