//! A colvault [`Table`] as a DataFusion [`TableProvider`]: scans with projection, partition
//! pruning (exact), statistics pruning and limit, statistics for the planner, and `INSERT INTO`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::Statistics;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::error::to_df;
use super::exec::{ColvaultScanExec, ScanTarget};
use super::partitions::{files_to_read, is_partition_filter};
use super::plan::{blocking, plan};
use super::sink::TableSink;
use crate::error::{Error, Result};
use crate::table::Table;

/// A colvault table as a DataFusion table.
///
/// Its schema is the table's at the time the provider was made. Every scan reads the table's
/// current head once, while planning, and every partition of the plan reads that version; an
/// `INSERT INTO` is one atomic commit, encrypted per the project's settings.
#[derive(Debug)]
pub struct ColvaultTable {
    table: Table,
    schema: SchemaRef,
    rows: u64,
    /// The partition columns (empty when the table is not partitioned).
    partition_by: Vec<String>,
}

impl ColvaultTable {
    /// The provider of `table` (reads its head for the schema: blocking).
    pub fn try_new(table: Table) -> Result<Self> {
        let head = table.head()?;
        Ok(ColvaultTable {
            schema: head.schema.clone(),
            rows: head.rows(),
            partition_by: table.partition_by().to_vec(),
            table,
        })
    }

    /// The colvault table.
    pub fn table(&self) -> &Table {
        &self.table
    }
}

#[async_trait]
impl TableProvider for ColvaultTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let table = self.table.clone();
        // The snapshot this plan reads, whatever commits come after.
        let head = Arc::new(blocking(move || table.head()).await.map_err(to_df)?);
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let mut head_indices = Vec::with_capacity(indices.len());
        for &i in &indices {
            let name = self
                .schema
                .fields()
                .get(i)
                .ok_or_else(|| DataFusionError::Internal(format!("projection index {i} out of the schema")))?
                .name();
            let at = head.schema.index_of(name).map_err(|_| {
                to_df(Error::SchemaMismatch(format!(
                    "table {} no longer has column {name:?}",
                    self.table.name()
                )))
            })?;
            head_indices.push(at);
        }
        let schema = Arc::new(self.schema.project(&indices)?);
        let predicates: Vec<_> = filters
            .iter()
            .flat_map(|f| super::filter::predicates(f, &self.schema))
            .collect();
        let exact = |f: &Expr| is_partition_filter(f, &self.partition_by);
        let shown = filters
            .iter()
            .filter(|f| exact(f) || !super::filter::predicates(f, &self.schema).is_empty())
            .map(|f| f.to_string())
            .collect();
        // Kept row groups are returned whole: a limit holds only when every filter was decided
        // exactly (on partition values).
        let limit = if filters.iter().all(exact) { limit } else { None };
        let target = state.config().target_partitions();
        let files = files_to_read(state, &head, filters).map_err(to_df)?;
        let planned = plan(&self.table, head.clone(), files, predicates, limit, target)
            .await
            .map_err(to_df)?;
        let mut statistics = planned.statistics.clone().project(Some(&head_indices));
        // The bytes of the projected columns, as DataFusion's Parquet scan reports them (the
        // footers' sizes are of whole row groups): join selection broadcasts a small build side
        // by this figure, and a whole-row size made TPC-H Q5 repartition its biggest join.
        statistics.calculate_total_byte_size(&schema);
        if let Some(l) = limit {
            if let Precision::Exact(n) = statistics.num_rows {
                statistics.num_rows = Precision::Inexact(n.min(l));
            }
        }
        Ok(Arc::new(ColvaultScanExec::new(
            ScanTarget::of(&self.table),
            head.version,
            schema,
            planned,
            statistics,
            limit,
            state.config().batch_size(),
            shown,
        )))
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if is_partition_filter(f, &self.partition_by) {
                    TableProviderFilterPushDown::Exact
                } else if super::filter::predicates(f, &self.schema).is_empty() {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        // The head when the provider was made: the table may have moved since.
        let mut st = Statistics::new_unknown(&self.schema);
        st.num_rows = Precision::Inexact(self.rows as usize);
        Some(st)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let overwrite = match insert_op {
            InsertOp::Append => false,
            InsertOp::Overwrite => true,
            InsertOp::Replace => {
                return Err(to_df(Error::InvalidArgument(format!(
                    "REPLACE INTO is not supported for colvault table {}: use INSERT INTO or INSERT OVERWRITE",
                    self.table.name()
                ))))
            }
        };
        let sink = TableSink::new(self.table.clone(), self.schema.clone(), overwrite);
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}
