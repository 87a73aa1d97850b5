//! Turning a plan made by a client's [`SqlSession`](super::super::SqlSession) into one Ballista can
//! cut into tasks: each colvault scan becomes a `DataSourceExec` of its file slices, each colvault
//! sink a sink that executors resolve through their own catalog.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::ExecutionPlan;

use super::super::error::to_df;
use super::super::exec::{ColvaultScanExec, ScanTarget};
use super::super::sink::TableSink;
use super::sink::ClusterSink;
use super::source::{ColvaultFileSource, SliceRef};
use crate::table::{CommitTag, Table};

/// `plan` with its colvault scans and sinks in their distributed form. The scans keep the
/// snapshot, the file slices and the partitioning the client planned (so every executor reads the
/// version the client saw); nothing of the client's keys goes into the plan.
pub fn distribute(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    distribute_at(plan, &HashMap::new())
}

/// [`distribute`], each INSERT's statement marked as planned at its table's version in `versions`
/// (by table id; 0 where absent), after which a rerun of its task looks for its commit.
pub(crate) fn distribute_at(
    plan: Arc<dyn ExecutionPlan>,
    versions: &HashMap<String, u64>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if let Some(scan) = (node.as_ref() as &dyn std::any::Any).downcast_ref::<ColvaultScanExec>() {
            return Ok(Transformed::yes(scan_of(scan)));
        }
        if let Some((exec, sink)) = sink_of::<TableSink>(node.as_ref()) {
            let tag = CommitTag {
                statement: super::random_id().map_err(to_df)?,
                since_version: versions.get(sink.table().table_id()).copied().unwrap_or(0),
            };
            let sink = ClusterSink::new(
                ScanTarget::of(sink.table()),
                exec.sink().schema().clone(),
                sink.overwrite(),
                tag,
                None,
            );
            let rebuilt = DataSinkExec::new(exec.input().clone(), Arc::new(sink), exec.sort_order().clone());
            return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// The tables the colvault sinks of `plan` (a local plan) write.
pub(crate) fn sink_tables(plan: &Arc<dyn ExecutionPlan>) -> Vec<Table> {
    let mut out = Vec::new();
    let mut stack = vec![plan.clone()];
    while let Some(p) = stack.pop() {
        if let Some((_, sink)) = sink_of::<TableSink>(p.as_ref()) {
            out.push(sink.table().clone());
        }
        stack.extend(p.children().into_iter().cloned());
    }
    out
}

/// The `DataSinkExec` `plan` is, and its sink, if that is a `T`.
pub(crate) fn sink_of<T: 'static>(plan: &dyn ExecutionPlan) -> Option<(&DataSinkExec, &T)> {
    let exec = (plan as &dyn std::any::Any).downcast_ref::<DataSinkExec>()?;
    let sink = (exec.sink() as &dyn std::any::Any).downcast_ref::<T>()?;
    Some((exec, sink))
}

fn scan_of(scan: &ColvaultScanExec) -> Arc<dyn ExecutionPlan> {
    let groups = scan
        .partitions()
        .iter()
        .map(|slices| {
            slices
                .iter()
                .map(|s| SliceRef {
                    name: s.name.clone(),
                    row_groups: s.row_groups.clone(),
                    row_range: s.row_range.clone(),
                    rows: s.rows,
                })
                .collect()
        })
        .collect();
    let source = ColvaultFileSource::new(scan.target().clone(), scan.version(), scan.schema(), None);
    super::codec::scan_exec(source, groups, scan.limit(), Some(scan.scan_statistics().clone()))
}
