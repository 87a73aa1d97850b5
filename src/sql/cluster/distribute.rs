//! Turning a plan made by a client's [`SqlSession`](super::super::SqlSession) into one Ballista can
//! cut into tasks: each colvault scan becomes a `DataSourceExec` of its file slices, each colvault
//! sink a sink that executors resolve through their own catalog.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::ExecutionPlan;

use super::super::exec::{ColvaultScanExec, ScanTarget};
use super::super::sink::TableSink;
use super::sink::ClusterSink;
use super::source::{ColvaultFileSource, SliceRef};

/// `plan` with its colvault scans and sinks in their distributed form. The scans keep the
/// snapshot, the file slices and the partitioning the client planned (so every executor reads the
/// version the client saw); nothing of the client's keys goes into the plan.
pub fn distribute(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let any = node.as_ref() as &dyn std::any::Any;
        if let Some(scan) = any.downcast_ref::<ColvaultScanExec>() {
            return Ok(Transformed::yes(scan_of(scan)));
        }
        if let Some(exec) = any.downcast_ref::<DataSinkExec>() {
            if let Some(sink) = (exec.sink() as &dyn std::any::Any).downcast_ref::<TableSink>() {
                let sink = ClusterSink::new(
                    ScanTarget::of(sink.table()),
                    exec.sink().schema().clone(),
                    sink.overwrite(),
                    None,
                );
                let rebuilt = DataSinkExec::new(exec.input().clone(), Arc::new(sink), exec.sort_order().clone());
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
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
                    rows: s.rows,
                })
                .collect()
        })
        .collect();
    let source = ColvaultFileSource::new(scan.target().clone(), scan.version(), scan.schema(), None);
    super::codec::scan_exec(source, groups, scan.limit(), Some(scan.scan_statistics().clone()))
}
