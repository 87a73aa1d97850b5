//! `INSERT INTO` on a cluster: the sink one executor runs, committing once through the catalog.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, SendableRecordBatchStream};

use super::super::error::to_df;
use super::super::exec::ScanTarget;
use super::super::plan::blocking;
use super::super::sink::write_stream;
use super::source::ClusterEnv;
use crate::error::Error;
use crate::table::CommitTag;

/// The sink of `INSERT INTO` / `INSERT OVERWRITE` in a distributed plan. Ballista runs a
/// `DataSinkExec` as one task: that executor opens the table through its own catalog and keys
/// (checking it is the table, by id, the client planned for), encrypts and writes the rows, and
/// commits them in one compare-and-swap of the table's head after the last batch. A task that
/// fails (a KMS that refuses the executor, a lost input) commits nothing.
///
/// Ballista may run a task again (an executor lost after its commit, before it reported). The
/// commit therefore carries the statement's random id; a rerun that finds it in the table's
/// chain (after the version the table had when the client planned) commits nothing again.
pub(crate) struct ClusterSink {
    target: ScanTarget,
    schema: SchemaRef,
    overwrite: bool,
    tag: CommitTag,
    env: Option<Arc<ClusterEnv>>,
}

impl ClusterSink {
    pub(crate) fn new(
        target: ScanTarget,
        schema: SchemaRef,
        overwrite: bool,
        tag: CommitTag,
        env: Option<Arc<ClusterEnv>>,
    ) -> Self {
        ClusterSink {
            target,
            schema,
            overwrite,
            tag,
            env,
        }
    }

    pub(crate) fn tag(&self) -> &CommitTag {
        &self.tag
    }

    pub(crate) fn target(&self) -> &ScanTarget {
        &self.target
    }

    pub(crate) fn table_schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub(crate) fn overwrite(&self) -> bool {
        self.overwrite
    }
}

impl fmt::Debug for ClusterSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSink")
            .field("target", &self.target)
            .field("overwrite", &self.overwrite)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for ClusterSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let op = if self.overwrite { "overwrite" } else { "append" };
        write!(
            f,
            "ColvaultSink: table={}.{}, {op} (one commit)",
            self.target.project, self.target.table
        )
    }
}

#[async_trait]
impl DataSink for ClusterSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(&self, data: SendableRecordBatchStream, _context: &Arc<TaskContext>) -> DfResult<u64> {
        let Some(env) = self.env.clone() else {
            return Err(to_df(Error::InvalidArgument(format!(
                "this process cannot write colvault table {}.{}: it has no catalog and KMS of its own \
                 (run the executors as `colvault cluster executor`)",
                self.target.project, self.target.table
            ))));
        };
        let target = self.target.clone();
        let table = blocking(move || env.table(&target)).await.map_err(to_df)?;
        write_stream(table, self.overwrite, Some(self.tag.clone()), data).await
    }
}
