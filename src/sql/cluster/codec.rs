//! The physical plan codec of a colvault cluster: colvault scans and sinks to and from bytes, every
//! other node through Ballista's own codec.
//!
//! A scan is encoded as what it selects, never as trust or keys: the project and table (name and
//! id), the version planned against, the output schema, the limit, and each partition's file slices
//! (data file names and row groups). An executor proves each of these against its catalog before it
//! reads a byte ([`super::source`]); the scheduler only decodes and re-encodes them. A sink is
//! encoded as its table, its schema and whether it overwrites.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;

use super::super::exec::ScanTarget;
use super::sink::ClusterSink;
use super::source::{ClusterEnv, ColvaultFileSource, SliceRef};
use crate::table::CommitTag;

/// What starts colvault's own nodes (a zero byte cannot start a protobuf message, so these never
/// collide with Ballista's).
const SCAN_MAGIC: &[u8] = b"\0colvault-scan\x01";
const SINK_MAGIC: &[u8] = b"\0colvault-sink\x01";

#[derive(Clone, PartialEq, prost::Message)]
struct TargetNode {
    #[prost(string, tag = "1")]
    project: String,
    #[prost(string, tag = "2")]
    project_id: String,
    #[prost(string, tag = "3")]
    table: String,
    #[prost(string, tag = "4")]
    table_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SliceNode {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, repeated, tag = "2")]
    row_groups: Vec<u64>,
    #[prost(uint64, tag = "3")]
    rows: u64,
    /// Rows start..end of its one row group, when the slice is not all of it.
    #[prost(uint64, optional, tag = "4")]
    row_start: Option<u64>,
    #[prost(uint64, optional, tag = "5")]
    row_end: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GroupNode {
    #[prost(message, repeated, tag = "1")]
    slices: Vec<SliceNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScanNode {
    #[prost(message, optional, tag = "1")]
    target: Option<TargetNode>,
    #[prost(uint64, tag = "2")]
    version: u64,
    #[prost(message, optional, tag = "3")]
    schema: Option<datafusion_proto::protobuf::Schema>,
    #[prost(uint64, optional, tag = "4")]
    limit: Option<u64>,
    #[prost(message, repeated, tag = "5")]
    groups: Vec<GroupNode>,
    /// The statistics the client planned with (row counts, min/max, nulls), so the scheduler's
    /// stage planner (which re-checks each stage's distribution requirements) takes the
    /// decisions the client took. Without them it hash-repartitioned a small join input the
    /// client had left whole, above a sort of it; Ballista then had each of the stage's tasks
    /// read the whole input, and the join's rows came back doubled (TPC-H Q11 gave twice its
    /// sums). They steer planning only: executors read what the catalog proves.
    #[prost(message, optional, tag = "6")]
    statistics: Option<datafusion_proto_common::Statistics>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SinkNode {
    #[prost(message, optional, tag = "1")]
    target: Option<TargetNode>,
    #[prost(message, optional, tag = "2")]
    schema: Option<datafusion_proto::protobuf::Schema>,
    #[prost(bool, tag = "3")]
    overwrite: bool,
    /// The statement's random id, which its commit carries.
    #[prost(string, tag = "4")]
    statement: String,
    /// The table's version when the statement was planned.
    #[prost(uint64, tag = "5")]
    since_version: u64,
}

/// The physical extension codec of clients, the scheduler and executors: colvault scans and sinks,
/// then Ballista's nodes.
#[derive(Debug)]
pub struct ClusterCodec {
    ballista: BallistaPhysicalExtensionCodec,
    /// An executor's environment, given to the scans and sinks it decodes.
    env: Option<Arc<ClusterEnv>>,
}

impl ClusterCodec {
    /// The codec of a client or the scheduler: plans decoded here can be shown and cut into
    /// tasks, never run.
    pub fn planner() -> Self {
        ClusterCodec {
            ballista: BallistaPhysicalExtensionCodec::default(),
            env: None,
        }
    }

    /// The codec of an executor, whose scans and sinks read and write through `env`.
    pub fn executor(env: Arc<ClusterEnv>) -> Self {
        ClusterCodec {
            ballista: BallistaPhysicalExtensionCodec::default(),
            env: Some(env),
        }
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("colvault plan codec: {what}: {e}"))
}

fn encode_target(t: &ScanTarget) -> TargetNode {
    TargetNode {
        project: t.project.clone(),
        project_id: t.project_id.clone(),
        table: t.table.clone(),
        table_id: t.table_id.clone(),
    }
}

fn decode_target(t: Option<TargetNode>) -> DfResult<ScanTarget> {
    let t = t.ok_or_else(|| bad("decoding", "a node without its table"))?;
    Ok(ScanTarget {
        project: t.project,
        project_id: t.project_id,
        table: t.table,
        table_id: t.table_id,
    })
}

fn encode_schema(schema: &SchemaRef) -> DfResult<datafusion_proto::protobuf::Schema> {
    datafusion_proto::protobuf::Schema::try_from(schema.as_ref()).map_err(|e| bad("encoding a schema", e))
}

fn decode_schema(s: Option<datafusion_proto::protobuf::Schema>) -> DfResult<SchemaRef> {
    let s = s.ok_or_else(|| bad("decoding", "a node without its schema"))?;
    Ok(Arc::new(Schema::try_from(&s).map_err(|e| bad("decoding a schema", e))?))
}

/// The colvault scan `plan` is, if it is one.
pub(crate) fn as_scan(plan: &dyn ExecutionPlan) -> Option<(&FileScanConfig, &ColvaultFileSource)> {
    let exec = (plan as &dyn std::any::Any).downcast_ref::<DataSourceExec>()?;
    let config = (exec.data_source().as_ref() as &dyn std::any::Any).downcast_ref::<FileScanConfig>()?;
    let source = config.file_source().downcast_ref::<ColvaultFileSource>()?;
    Some((config, source))
}

/// The `DataSourceExec` scanning `groups` (each one task's file slices) of `source`.
pub(crate) fn scan_exec(
    source: ColvaultFileSource,
    groups: Vec<Vec<SliceRef>>,
    limit: Option<usize>,
    statistics: Option<datafusion::common::Statistics>,
) -> Arc<dyn ExecutionPlan> {
    let table_id = source.target.table_id.clone();
    let mut groups: Vec<FileGroup> = groups
        .into_iter()
        .map(|slices| {
            FileGroup::new(
                slices
                    .into_iter()
                    .map(|s| {
                        // The path is for display: the executor reads the file by its name in the
                        // planned version, through its own storage.
                        PartitionedFile::new(format!("colvault/{table_id}/{}", s.name), s.rows).with_extension(s)
                    })
                    .collect(),
            )
        })
        .collect();
    if groups.is_empty() {
        groups.push(FileGroup::new(Vec::new()));
    }
    let mut builder = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
        .with_file_groups(groups)
        .with_limit(limit);
    if let Some(st) = statistics {
        builder = builder.with_statistics(st);
    }
    DataSourceExec::from_data_source(builder.build())
}

impl ClusterCodec {
    fn encode_scan(&self, config: &FileScanConfig, source: &ColvaultFileSource, buf: &mut Vec<u8>) -> DfResult<()> {
        let groups = config
            .file_groups
            .iter()
            .map(|g| {
                let slices = g
                    .files()
                    .iter()
                    .map(|f| {
                        let s = f
                            .extension::<SliceRef>()
                            .ok_or_else(|| bad("encoding", "a colvault scan file without its slice"))?;
                        Ok(SliceNode {
                            name: s.name.clone(),
                            row_groups: s.row_groups.iter().map(|&rg| rg as u64).collect(),
                            rows: s.rows,
                            row_start: s.row_range.as_ref().map(|r| r.start),
                            row_end: s.row_range.as_ref().map(|r| r.end),
                        })
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                Ok(GroupNode { slices })
            })
            .collect::<DfResult<Vec<_>>>()?;
        let node = ScanNode {
            target: Some(encode_target(&source.target)),
            version: source.version,
            schema: Some(encode_schema(source.schema())?),
            limit: config.limit.map(|l| l as u64),
            groups,
            statistics: Some((&config.statistics()).into()),
        };
        buf.extend_from_slice(SCAN_MAGIC);
        node.encode(buf).map_err(|e| bad("encoding a scan", e))
    }

    fn decode_scan(&self, bytes: &[u8]) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node = ScanNode::decode(bytes).map_err(|e| bad("decoding a scan", e))?;
        let target = decode_target(node.target)?;
        let schema = decode_schema(node.schema)?;
        let groups = node
            .groups
            .into_iter()
            .map(|g| {
                g.slices
                    .into_iter()
                    .map(|s| {
                        let row_groups = s
                            .row_groups
                            .into_iter()
                            .map(|rg| usize::try_from(rg).map_err(|e| bad("decoding a row group", e)))
                            .collect::<DfResult<Vec<_>>>()?;
                        let row_range = match (s.row_start, s.row_end) {
                            (None, None) => None,
                            (Some(start), Some(end)) => Some(start..end),
                            _ => return Err(bad("decoding a slice", "a row range without both ends")),
                        };
                        Ok(SliceRef {
                            name: s.name,
                            row_groups,
                            row_range,
                            rows: s.rows,
                        })
                    })
                    .collect::<DfResult<Vec<_>>>()
            })
            .collect::<DfResult<Vec<_>>>()?;
        let limit = node
            .limit
            .map(|l| usize::try_from(l).map_err(|e| bad("decoding a limit", e)))
            .transpose()?;
        let statistics = node
            .statistics
            .as_ref()
            .map(datafusion::common::Statistics::try_from)
            .transpose()
            .map_err(|e| bad("decoding a scan's statistics", e))?;
        if let Some(st) = &statistics {
            if st.column_statistics.len() != schema.fields().len() {
                return Err(bad(
                    "decoding a scan",
                    "its statistics do not have one entry per column",
                ));
            }
        }
        let source = ColvaultFileSource::new(target, node.version, schema, self.env.clone());
        Ok(scan_exec(source, groups, limit, statistics))
    }

    fn decode_sink(&self, bytes: &[u8], inputs: &[Arc<dyn ExecutionPlan>]) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node = SinkNode::decode(bytes).map_err(|e| bad("decoding a sink", e))?;
        let [input] = inputs else {
            return Err(bad("decoding a sink", format!("{} inputs, expected 1", inputs.len())));
        };
        if node.statement.len() != 32 || !node.statement.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("decoding a sink", "a statement id that is not 32 hex digits"));
        }
        let tag = CommitTag {
            statement: node.statement,
            since_version: node.since_version,
        };
        let sink = ClusterSink::new(
            decode_target(node.target)?,
            decode_schema(node.schema)?,
            node.overwrite,
            tag,
            self.env.clone(),
        );
        Ok(Arc::new(DataSinkExec::new(input.clone(), Arc::new(sink), None)))
    }
}

impl PhysicalExtensionCodec for ClusterCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(bytes) = buf.strip_prefix(SCAN_MAGIC) {
            return self.decode_scan(bytes);
        }
        if let Some(bytes) = buf.strip_prefix(SINK_MAGIC) {
            return self.decode_sink(bytes, inputs);
        }
        self.ballista.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some((config, source)) = as_scan(node.as_ref()) {
            return self.encode_scan(config, source, buf);
        }
        if let Some((_, sink)) = super::distribute::sink_of::<ClusterSink>(node.as_ref()) {
            let node = SinkNode {
                target: Some(encode_target(sink.target())),
                schema: Some(encode_schema(sink.table_schema())?),
                overwrite: sink.overwrite(),
                statement: sink.tag().statement.clone(),
                since_version: sink.tag().since_version,
            };
            buf.extend_from_slice(SINK_MAGIC);
            return node.encode(buf).map_err(|e| bad("encoding a sink", e));
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }
}
