//! The execution plan of a colvault table scan: one DataFusion partition per group of file
//! slices (whole files, or row-group ranges of big ones), all of one snapshot version.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use tokio::sync::mpsc;

use super::error::to_df;
use super::plan::{FileSlice, ScanPlan};
use crate::error::{Error, Result};

/// A scan of one version of a colvault table.
#[derive(Debug)]
pub struct ColvaultScanExec {
    table: String,
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
}

impl ColvaultScanExec {
    /// The plan of `table` at `version` reading `plan` with output `schema` (its statistics
    /// already projected to it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        table: &str,
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
            table: table.to_string(),
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
        }
    }

    /// The table version every partition reads.
    pub fn version(&self) -> u64 {
        self.version
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
                    self.table,
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
                writeln!(f, "table={}", self.table)?;
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
        let schema = self.schema.clone();
        let (batch_size, limit) = (self.batch_size, self.limit);
        Ok(scan_stream(schema.clone(), move |emit| {
            read_slices(&slices, &schema, batch_size, limit, emit)
        }))
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

/// Where a blocking producer puts its batches; `false` when the consumer is gone.
type Emit<'a> = &'a mut dyn FnMut(RecordBatch) -> bool;

/// A stream of the batches `produce` emits, run on tokio's blocking threads and handed over a
/// bounded channel (two batches ahead); a failure ends the stream with colvault's error inside
/// `DataFusionError::External`. Dropping the stream stops the producer at its next batch.
///
/// This is the one place that turns colvault's blocking reads into an async stream: when
/// colvault gains an async scan of file slices, it replaces this function.
fn scan_stream(
    schema: SchemaRef,
    produce: impl FnOnce(Emit<'_>) -> Result<()> + Send + 'static,
) -> SendableRecordBatchStream {
    let (tx, rx) = mpsc::channel::<DfResult<RecordBatch>>(2);
    let run = move || {
        let sender = tx.clone();
        let mut emit = move |b: RecordBatch| sender.blocking_send(Ok(b)).is_ok();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| produce(&mut emit)));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(to_df(e)),
            Err(_) => Some(DataFusionError::Execution(
                "the colvault scan failed unexpectedly (a panic); no rows were lost silently".into(),
            )),
        };
        if let Some(e) = failure {
            let _ = tx.blocking_send(Err(e));
        }
    };
    let stream = futures::stream::unfold((rx, Some(run)), |(mut rx, run)| async move {
        if let Some(run) = run {
            tokio::task::spawn_blocking(run);
        }
        rx.recv().await.map(|item| (item, (rx, None)))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Reads `slices` in order into batches of `schema` (columns a file lacks, added to the table
/// after it was written, read as null), at most `limit` rows.
fn read_slices(
    slices: &[FileSlice],
    schema: &SchemaRef,
    batch_size: usize,
    limit: Option<usize>,
    emit: Emit<'_>,
) -> Result<()> {
    let mut left = limit.unwrap_or(usize::MAX);
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut send = |b: RecordBatch, left: &mut usize| -> bool {
        let b = if b.num_rows() > *left { b.slice(0, *left) } else { b };
        *left -= b.num_rows();
        emit(b) && *left > 0
    };
    for slice in slices {
        if left == 0 {
            return Ok(());
        }
        let file_schema = slice.reader.schema();
        let present: Vec<usize> = names.iter().filter_map(|n| file_schema.index_of(n).ok()).collect();
        if present.is_empty() {
            // Nothing to decrypt: batches of the row groups' row counts (all columns null here).
            for &rg in &slice.row_groups {
                let mut rows = slice.reader.parquet_metadata().row_group(rg).num_rows().max(0) as usize;
                while rows > 0 {
                    let n = rows.min(batch_size);
                    rows -= n;
                    if !send(fill(schema, &[], &[], n)?, &mut left) {
                        return Ok(());
                    }
                }
            }
            continue;
        }
        // Where each output column comes from in this file's (projected, schema-ordered) batches.
        let mut sorted = present.clone();
        sorted.sort_unstable();
        let map: Vec<Option<usize>> = names
            .iter()
            .map(|n| {
                file_schema
                    .index_of(n)
                    .ok()
                    .and_then(|i| sorted.iter().position(|&s| s == i))
            })
            .collect();
        let mut batches = slice
            .reader
            .scan()
            .project(present)
            .row_groups(slice.row_groups.clone())
            .batch_size(batch_size)
            .build()?;
        while let Some(b) = batches.next_batch()? {
            let rows = b.num_rows();
            if !send(fill(schema, b.columns(), &map, rows)?, &mut left) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A batch of `schema` from `columns` placed by `map` (`None`, or no map entry: all null).
fn fill(schema: &SchemaRef, columns: &[ArrayRef], map: &[Option<usize>], rows: usize) -> Result<RecordBatch> {
    let out = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| match map.get(i).copied().flatten() {
            Some(src) => columns[src].clone(),
            None => new_null_array(field.data_type(), rows),
        })
        .collect();
    let opts = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema.clone(), out, &opts).map_err(|e| Error::Arrow(e.to_string()))
}
