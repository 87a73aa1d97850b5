//! The execution plan of a colvault table scan: one DataFusion partition per group of file
//! slices (whole row groups, or a range of rows of one), all of one snapshot version.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::stream::{BoxStream, StreamExt};

use super::error::to_df;
use super::plan::{FileSlice, ScanPlan};
use crate::error::Result;
use crate::table::{column_map, conform};

/// What a scan reads: a project's table, by name and by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ScanTarget {
    pub(crate) project: String,
    pub(crate) project_id: String,
    pub(crate) table: String,
    pub(crate) table_id: String,
}

impl ScanTarget {
    pub(crate) fn of(table: &crate::table::Table) -> Self {
        ScanTarget {
            project: table.project().name().to_string(),
            project_id: table.project().project_id().to_string(),
            table: table.name().to_string(),
            table_id: table.table_id().to_string(),
        }
    }
}

/// A scan of one version of a colvault table.
#[derive(Debug)]
pub struct ColvaultScanExec {
    target: ScanTarget,
    version: u64,
    /// The output schema (the projected table schema).
    schema: SchemaRef,
    partitions: Vec<Vec<FileSlice>>,
    /// Rows each partition emits at most (a limit pushed down with no filter).
    limit: Option<usize>,
    batch_size: usize,
    statistics: Arc<Statistics>,
    files: usize,
    row_groups: usize,
    predicates: Vec<String>,
    cache: Arc<PlanProperties>,
    /// What `EXPLAIN ANALYZE` shows: rows, batches and bytes out, scan time, row groups read.
    metrics: ExecutionPlanMetricsSet,
}

impl ColvaultScanExec {
    /// The plan of `table` at `version` reading `plan` with output `schema` (its statistics
    /// already projected to it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        target: ScanTarget,
        version: u64,
        schema: SchemaRef,
        plan: ScanPlan,
        statistics: Statistics,
        limit: Option<usize>,
        batch_size: usize,
        predicates: Vec<String>,
    ) -> Self {
        let n = plan.partitions.len().max(1);
        let cache = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ColvaultScanExec {
            target,
            version,
            schema,
            partitions: plan.partitions,
            limit,
            batch_size: batch_size.max(1),
            statistics: Arc::new(statistics),
            files: plan.files,
            row_groups: plan.row_groups,
            predicates,
            cache: Arc::new(cache),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The table version every partition reads.
    pub fn version(&self) -> u64 {
        self.version
    }

    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    pub(crate) fn target(&self) -> &ScanTarget {
        &self.target
    }

    /// The file slices of every partition.
    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    pub(crate) fn partitions(&self) -> &[Vec<FileSlice>] {
        &self.partitions
    }

    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    pub(crate) fn limit(&self) -> Option<usize> {
        self.limit
    }

    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    pub(crate) fn scan_statistics(&self) -> &Statistics {
        &self.statistics
    }
}

impl DisplayAs for ColvaultScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(
                    f,
                    "ColvaultScanExec: table={}, version={}, files={}, row_groups={}, partitions={}, projection=[{}]",
                    self.target.table,
                    self.version,
                    self.files,
                    self.row_groups,
                    self.partitions.len(),
                    columns.join(", ")
                )?;
                if !self.predicates.is_empty() {
                    write!(f, ", pruning=[{}]", self.predicates.join(" AND "))?;
                }
                if let Some(l) = self.limit {
                    write!(f, ", limit={l}")?;
                }
                Ok(())
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "table={}", self.target.table)?;
                writeln!(f, "version={}", self.version)?;
                write!(f, "files={}", self.files)
            }
        }
    }
}

impl ExecutionPlan for ColvaultScanExec {
    fn name(&self) -> &str {
        "ColvaultScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal("ColvaultScanExec has no children".into()));
        }
        Ok(self)
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let slices = match self.partitions.get(partition) {
            Some(s) => s.clone(),
            None if partition == 0 && self.partitions.is_empty() => Vec::new(),
            None => {
                return Err(DataFusionError::Internal(format!(
                    "ColvaultScanExec: partition {partition} of {}",
                    self.partitions.len()
                )))
            }
        };
        let metrics = ScanMetrics {
            baseline: BaselineMetrics::new(&self.metrics, partition),
            scan_time: MetricBuilder::new(&self.metrics).subset_time("time_elapsed_scanning_total", partition),
        };
        MetricBuilder::new(&self.metrics)
            .counter("row_groups_read", partition)
            .add(slices.iter().map(|s| s.row_groups.len()).sum());
        Ok(scan_stream(
            slices,
            self.schema.clone(),
            self.batch_size,
            self.limit,
            metrics,
        ))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        self.statistics_of(args.partition())
    }

    #[allow(deprecated)]
    fn partition_statistics(&self, partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        self.statistics_of(partition)
    }
}

impl ColvaultScanExec {
    /// The statistics of the whole scan, or of one partition (its row count only).
    fn statistics_of(&self, partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        match partition {
            None => Ok(self.statistics.clone()),
            Some(p) => {
                let rows: u64 = self.partitions.get(p).map_or(0, |s| s.iter().map(|s| s.rows).sum());
                let mut st = Statistics::new_unknown(&self.schema);
                st.num_rows = match self.limit {
                    Some(l) => Precision::Inexact(rows.min(l as u64) as usize),
                    None => Precision::Exact(rows as usize),
                };
                Ok(Arc::new(st))
            }
        }
    }
}

/// The metrics one partition of a scan records.
struct ScanMetrics {
    baseline: BaselineMetrics,
    /// Wall time spent producing batches: reading, decrypting and decoding.
    scan_time: Time,
}

/// The batches of `slices`, in order, as an async stream of `schema` (columns a file lacks, added
/// to the table after it was written, read as null), at most `limit` rows. Each slice's reader is
/// built when the one before it is done; its bytes are awaited, then each batch is decoded on the
/// polling thread ([`BatchReader::into_inline_stream`](crate::read::BatchReader::into_inline_stream)),
/// as DataFusion's own Parquet scan decodes: DataFusion already runs a partition per core, and
/// handing every batch to rayon and back cost 20% (TPC-H SF1, `benches/sql_tpch.rs`). A failure ends the stream with colvault's error inside
/// `DataFusionError::External`; dropping the stream stops the decoders.
fn scan_stream(
    slices: Vec<FileSlice>,
    schema: SchemaRef,
    batch_size: usize,
    limit: Option<usize>,
    metrics: ScanMetrics,
) -> SendableRecordBatchStream {
    let per_slice = schema.clone();
    let batches = futures::stream::iter(slices)
        .map(move |slice| slice_stream(slice, per_slice.clone(), batch_size))
        .flatten();
    let left = limit.unwrap_or(usize::MAX);
    let limited = futures::stream::unfold(
        (Box::pin(batches), left, metrics),
        |(mut batches, left, metrics)| async move {
            if left == 0 {
                metrics.baseline.try_done();
                return None;
            }
            let started = Instant::now();
            let item = batches.next().await;
            metrics.scan_time.add_duration(started.elapsed());
            let Some(item) = item else {
                metrics.baseline.try_done();
                return None;
            };
            let (item, left) = match item {
                Ok(b) if b.num_rows() > left => (Ok(b.slice(0, left)), 0),
                Ok(b) => {
                    let rows = b.num_rows();
                    (Ok(b), left - rows)
                }
                // Nothing after an error.
                Err(e) => (Err(to_df(e)), 0),
            };
            if let Ok(b) = &item {
                metrics.baseline.record_output(b.num_rows());
            }
            Some((item, (batches, left, metrics)))
        },
    );
    Box::pin(RecordBatchStreamAdapter::new(schema, limited))
}

/// The batches of one file slice, filled out to `schema`.
pub(crate) fn slice_stream(
    slice: FileSlice,
    schema: SchemaRef,
    batch_size: usize,
) -> BoxStream<'static, Result<RecordBatch>> {
    let file_schema = slice.reader.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let (present, map) = column_map(&names, &file_schema);
    if present.is_empty() {
        // Nothing to decrypt: batches of the row groups' row counts (all columns null here).
        let counts: Vec<usize> = slice
            .row_groups
            .iter()
            .flat_map(|&rg| {
                let rows = match &slice.row_range {
                    Some(r) => r.end - r.start,
                    None => slice.reader.row_group_rows(rg).unwrap_or(0),
                } as usize;
                (0..rows.div_ceil(batch_size)).map(move |i| (rows - i * batch_size).min(batch_size))
            })
            .collect();
        return futures::stream::iter(counts)
            .map(move |n| conform(&schema, &[], &[], n))
            .boxed();
    }
    let mut scan = slice
        .reader
        .scan()
        .project(present)
        .row_groups(slice.row_groups.clone())
        .batch_size(batch_size);
    if let Some(range) = slice.row_range.clone() {
        scan = scan.rows(range);
    }
    let built = scan.build();
    match built {
        Ok(reader) => reader
            .into_inline_stream()
            .map(move |b| b.and_then(|b| conform(&schema, &map, b.columns(), b.num_rows())))
            .boxed(),
        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
    }
}
