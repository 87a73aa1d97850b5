//! Scans of a [`FileReader`]: projection, row-group selection and statistics pruning.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Scalar};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::arrow::ProjectionMask;

use super::batches::{BatchReader, Lane, ScanShared};
use super::chunks::{ChunkLayout, VirtualFile};
use super::{pq_err, FileReader};
use crate::crypto::{ChunkOpener, SecretKey};
use crate::error::{Error, Result};

/// A comparison for row-group pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `IS NULL`
    IsNull,
}

/// A simple predicate on a top-level primitive or string column, used to skip row groups whose
/// statistics prove that no row matches. Pruning is conservative: kept row groups are returned
/// whole, so apply the predicate to the rows as well if you need exact results.
#[derive(Clone, Debug)]
pub struct Predicate {
    column: String,
    op: CmpOp,
    value: Option<ArrayRef>,
}

impl Predicate {
    /// `column op value`, where `value` is a one-element array (cast to the column's type).
    pub fn compare(column: impl Into<String>, op: CmpOp, value: ArrayRef) -> Self {
        Predicate {
            column: column.into(),
            op,
            value: Some(value),
        }
    }
    /// The column the predicate is on.
    pub fn column(&self) -> &str {
        &self.column
    }
    /// `column IS NULL`.
    pub fn is_null(column: impl Into<String>) -> Self {
        Predicate {
            column: column.into(),
            op: CmpOp::IsNull,
            value: None,
        }
    }

    /// Whether a column whose every row holds `value` (a one-element array of the column's type,
    /// maybe null) can match: a partitioned table's file is skipped when this is false for its
    /// partition value.
    pub fn matches_value(&self, value: &ArrayRef) -> Result<bool> {
        if value.len() != 1 {
            return Err(Error::InvalidArgument(
                "a partition value is a one-element array".into(),
            ));
        }
        if self.op == CmpOp::IsNull {
            return Ok(value.is_null(0));
        }
        if value.is_null(0) {
            // A comparison with null is never true.
            return Ok(false);
        }
        let literal = self
            .value
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("predicate without a value".into()))?;
        let literal = arrow::compute::cast(literal, value.data_type()).map_err(|e| Error::Arrow(e.to_string()))?;
        if literal.len() != 1 || literal.is_null(0) {
            return Err(Error::InvalidArgument(format!(
                "the predicate's value does not convert to the type of {:?}",
                self.column
            )));
        }
        let v = Scalar::new(literal);
        use arrow::compute::kernels::cmp;
        let r = match self.op {
            CmpOp::Eq => cmp::eq(value, &v),
            CmpOp::Lt => cmp::lt(value, &v),
            CmpOp::LtEq => cmp::lt_eq(value, &v),
            CmpOp::Gt => cmp::gt(value, &v),
            CmpOp::GtEq => cmp::gt_eq(value, &v),
            CmpOp::IsNull => unreachable!("handled above"),
        }
        .map_err(|e| Error::Arrow(e.to_string()))?;
        Ok(r.value(0))
    }

    /// Which row groups may hold a match. Statistics are decoded by `parquet` from the footer (for
    /// `none` files, bytes only a checksum protects), so a panic there is contained.
    fn keep(&self, reader: &FileReader) -> Result<Vec<bool>> {
        crate::error::contain("statistics", || self.keep_inner(reader))
    }

    fn keep_inner(&self, reader: &FileReader) -> Result<Vec<bool>> {
        let meta = reader.parquet_metadata();
        let n = meta.num_row_groups();
        let schema = reader.schema();
        let conv = StatisticsConverter::try_new(&self.column, &schema, meta.file_metadata().schema_descr())
            .map_err(|e| Error::InvalidArgument(format!("predicate on {:?}: {e}", self.column)))?;
        if self.op == CmpOp::IsNull {
            let nulls = conv.row_group_null_counts(meta.row_groups().iter()).map_err(pq_err)?;
            return Ok((0..n).map(|i| nulls.is_null(i) || nulls.value(i) > 0).collect());
        }
        let value = self
            .value
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("predicate without a value".into()))?;
        if value.len() != 1 {
            return Err(Error::InvalidArgument(
                "a predicate value is a one-element array".into(),
            ));
        }
        let field_type = schema
            .field_with_name(&self.column)
            .map_err(|e| Error::Arrow(e.to_string()))?
            .data_type()
            .clone();
        let value = arrow::compute::cast(value, &field_type).map_err(|e| Error::Arrow(e.to_string()))?;
        let v = Scalar::new(value);
        let mins = conv.row_group_mins(meta.row_groups().iter()).map_err(pq_err)?;
        let maxes = conv.row_group_maxes(meta.row_groups().iter()).map_err(pq_err)?;
        use arrow::compute::kernels::cmp;
        let a = |r: std::result::Result<BooleanArray, ArrowError>| r.map_err(|e| Error::Arrow(e.to_string()));
        // prune[i] is true when statistics prove no row of group i matches.
        let prune: BooleanArray = match self.op {
            CmpOp::Eq => {
                let gt = a(cmp::gt(&mins, &v))?;
                let lt = a(cmp::lt(&maxes, &v))?;
                arrow::compute::or(&gt, &lt).map_err(|e| Error::Arrow(e.to_string()))?
            }
            CmpOp::Lt => a(cmp::gt_eq(&mins, &v))?,
            CmpOp::LtEq => a(cmp::gt(&mins, &v))?,
            CmpOp::Gt => a(cmp::lt_eq(&maxes, &v))?,
            CmpOp::GtEq => a(cmp::lt(&maxes, &v))?,
            CmpOp::IsNull => unreachable!(),
        };
        Ok((0..n).map(|i| prune.is_null(i) || !prune.value(i)).collect())
    }
}

/// Builds a scan: projection, row groups, batch size and pruning predicates.
pub struct ScanBuilder<'a> {
    reader: &'a FileReader,
    projection: Option<Vec<usize>>,
    row_groups: Option<Vec<usize>>,
    rows: Option<std::ops::Range<u64>>,
    batch_size: usize,
    predicates: Vec<Predicate>,
}

impl<'a> ScanBuilder<'a> {
    pub(super) fn new(reader: &'a FileReader) -> Self {
        ScanBuilder {
            reader,
            projection: None,
            row_groups: None,
            rows: None,
            batch_size: 8192,
            predicates: Vec::new(),
        }
    }

    /// Reads only these top-level fields, by index.
    pub fn project(mut self, fields: Vec<usize>) -> Self {
        self.projection = Some(fields);
        self
    }
    /// Reads only these top-level fields, by name.
    pub fn project_names<S: AsRef<str>>(mut self, names: &[S]) -> Result<Self> {
        let schema = self.reader.schema();
        let idx = names
            .iter()
            .map(|n| {
                schema
                    .index_of(n.as_ref())
                    .map_err(|_| Error::InvalidArgument(format!("no column named {:?}", n.as_ref())))
            })
            .collect::<Result<_>>()?;
        self.projection = Some(idx);
        Ok(self)
    }
    /// Reads only these row groups.
    pub fn row_groups(mut self, rgs: Vec<usize>) -> Self {
        self.row_groups = Some(rgs);
        self
    }
    /// Reads only rows `range` (counted from 0) of the one row group the scan selects, so that
    /// several readers can share a big row group. Pages wholly before the range are skipped
    /// undecoded (their headers are still read, so their segments are opened), and reading stops
    /// at its end. [`build`](Self::build) refuses a range unless exactly one row group is asked
    /// for ([`row_groups`](Self::row_groups), or a file of one) and the range is non-empty and
    /// inside it; when a [`filter`](Self::filter) prunes that row group, the scan reads no rows.
    pub fn rows(mut self, range: std::ops::Range<u64>) -> Self {
        self.rows = Some(range);
        self
    }
    /// Rows per batch (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    /// Skips row groups whose statistics rule out `p`.
    pub fn filter(mut self, p: Predicate) -> Self {
        self.predicates.push(p);
        self
    }

    /// The row groups this scan will read, after selection and pruning.
    pub fn selected_row_groups(&self) -> Result<Vec<usize>> {
        let n = self.reader.num_row_groups();
        let mut keep = vec![true; n];
        if let Some(rgs) = &self.row_groups {
            keep = vec![false; n];
            for &r in rgs {
                *keep
                    .get_mut(r)
                    .ok_or_else(|| Error::InvalidArgument(format!("row group {r} of {n}")))? = true;
            }
        }
        for p in &self.predicates {
            for (k, p) in keep.iter_mut().zip(p.keep(self.reader)?) {
                *k &= p;
            }
        }
        Ok((0..n).filter(|&i| keep[i]).collect())
    }

    /// The reader of record batches.
    pub fn build(self) -> Result<BatchReader> {
        let reader = self.reader;
        let fields = reader.schema().fields().len();
        let projection: Vec<usize> = match &self.projection {
            Some(p) => {
                if let Some(bad) = p.iter().find(|&&i| i >= fields) {
                    return Err(Error::InvalidArgument(format!("column {bad} of {fields}")));
                }
                p.clone()
            }
            None => (0..fields).collect(),
        };
        let row_groups = self.selected_row_groups()?;
        let selection = match &self.rows {
            None => None,
            Some(range) => {
                // Checked against the row groups asked for: a row group that pruning then
                // removes is read as no rows.
                let asked = match &self.row_groups {
                    Some(rgs) => rgs.clone(),
                    None => (0..reader.num_row_groups()).collect(),
                };
                Some(row_selection(reader, &asked, range)?)
            }
        };
        let wanted_leaves: Vec<usize> = (0..reader.leaf_field.len())
            .filter(|l| projection.contains(&reader.leaf_field[*l]))
            .collect();
        // Keys first: a projection of a column whose key is unavailable fails here, by name.
        let mut openers: HashMap<usize, Arc<ChunkOpener>> = HashMap::new();
        let none_key = SecretKey::from_slice(&[0u8; 32])?;
        for &leaf in &wanted_leaves {
            let dek = reader.leaf_dek(leaf)?;
            let opener = ChunkOpener::with_provider(
                reader.opts.provider(),
                reader.algorithm(),
                dek.as_ref().unwrap_or(&none_key),
                reader.envelope.file_id,
                leaf as u32,
            )?;
            openers.insert(leaf, Arc::new(opener));
        }
        let meta = reader.parquet_metadata();
        // Every sealed chunk the scan will read, so a remote source fetches them ahead,
        // coalesced and concurrently (local sources ignore this).
        let leaves = reader.body.leaves as usize;
        let ranges: Vec<Vec<std::ops::Range<u64>>> = row_groups
            .iter()
            .map(|&rg| {
                wanted_leaves
                    .iter()
                    .filter_map(|&l| reader.body.chunks.get(rg * leaves + l))
                    .map(|c| c.offset..c.offset + c.len)
                    .collect()
            })
            .collect();
        reader.source.prefetch(&ranges.concat());
        let layout = ChunkLayout::of(reader);
        let mut fields: Vec<usize> = projection.clone();
        fields.sort_unstable();
        fields.dedup();
        // One lane per row group and projected field when there are several fields, so that fields
        // decode (and their chunks open) in parallel; per row group otherwise.
        let groups: Vec<Vec<usize>> = if fields.len() > 1 {
            fields.iter().map(|&f| vec![f]).collect()
        } else {
            vec![fields.clone()]
        };
        let schema_descr = meta.file_metadata().schema_descr();
        let shared = ScanShared::new(reader.metadata.clone(), self.batch_size);
        let masks: Vec<(ProjectionMask, Vec<usize>)> = groups
            .iter()
            .map(|group| {
                let group_leaves = wanted_leaves
                    .iter()
                    .copied()
                    .filter(|l| group.contains(&reader.leaf_field[*l]))
                    .collect();
                Ok((
                    crate::error::contain("footer", || {
                        Ok(ProjectionMask::roots(schema_descr, group.iter().copied()))
                    })?,
                    group_leaves,
                ))
            })
            .collect::<Result<_>>()?;
        let lanes = row_groups
            .iter()
            .enumerate()
            .map(|(ordinal, &rg)| {
                masks
                    .iter()
                    .map(|(mask, group_leaves)| {
                        let file = VirtualFile::new(
                            layout.clone(),
                            group_leaves.iter().map(|l| (*l, openers[l].clone())).collect(),
                        );
                        Lane::new(shared.clone(), file, mask.clone(), rg, ordinal, selection.clone())
                    })
                    .collect()
            })
            .collect();
        let schema = Arc::new(
            reader
                .schema()
                .project(&fields)
                .map_err(|e| Error::Arrow(e.to_string()))?,
        );
        Ok(BatchReader::new(lanes, schema, shared, reader.source.clone(), ranges))
    }
}

/// Whether `range` names rows of one row group: `row_groups` is one row group of the file, and
/// the range is non-empty and inside it. A scan refuses any other range ([`ScanBuilder::rows`]),
/// and a cluster executor refuses a plan that ships one.
pub(crate) fn row_range_fits(reader: &FileReader, row_groups: &[usize], range: &std::ops::Range<u64>) -> bool {
    match row_groups {
        [rg] => reader
            .row_group_rows(*rg)
            .is_some_and(|rows| range.start < range.end && range.end <= rows),
        _ => false,
    }
}

/// The selection of rows `range` of the one row group in `row_groups` (those the scan asked for).
fn row_selection(reader: &FileReader, row_groups: &[usize], range: &std::ops::Range<u64>) -> Result<RowSelection> {
    if !row_range_fits(reader, row_groups, range) {
        return Err(Error::InvalidArgument(match row_groups {
            [rg] => format!(
                "rows {}..{} of row group {rg}, which has {} (a row range is non-empty and inside its row group)",
                range.start,
                range.end,
                reader.row_group_rows(*rg).unwrap_or(0)
            ),
            _ => format!(
                "a row range reads one row group, and the scan asks for {}",
                row_groups.len()
            ),
        }));
    }
    let n = |v: u64| usize::try_from(v).map_err(|_| Error::InvalidArgument(format!("row {v}")));
    let mut selectors = Vec::with_capacity(2);
    if range.start > 0 {
        selectors.push(RowSelector::skip(n(range.start)?));
    }
    selectors.push(RowSelector::select(n(range.end - range.start)?));
    Ok(RowSelection::from(selectors))
}
