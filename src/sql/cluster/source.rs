//! A colvault scan as a DataFusion [`FileSource`]: what a Ballista task reads.
//!
//! On a cluster a scan is a `DataSourceExec` over a [`FileScanConfig`], because Ballista gives each
//! task its own file groups only for the leaves it knows. Each `PartitionedFile` is one file
//! slice (a data file's name and row groups, in a [`SliceRef`] extension); the "object store" of
//! the config is a placeholder that is never read: the executor reads the table through its own
//! catalog, KMS and storage ([`ClusterEnv`]), after proving every selection against the catalog.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileOpenFuture, FileOpener, FileScanConfig, FileSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::DisplayFormatType;
use futures::{FutureExt, StreamExt};
use object_store::ObjectStore;

use super::super::error::to_df;
use super::super::exec::{slice_stream, ScanTarget};
use super::super::plan::{blocking, open_file, FileSlice};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::project::{Keys, Project};
use crate::read::row_range_fits;
use crate::table::{Manifest, Table};

/// One file slice of a distributed scan: a data file of the planned version, and the row groups
/// of it that the task reads. Selections only: the executor proves them against the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SliceRef {
    pub(crate) name: String,
    pub(crate) row_groups: Vec<usize>,
    /// Rows start..end of its one row group, when the task reads only those.
    pub(crate) row_range: Option<std::ops::Range<u64>>,
    pub(crate) rows: u64,
}

/// What an executor reads tables with: its own catalog client and keys (KMS and KEK cache), built
/// from its own configuration. Opened snapshots are kept, so each (table, version) is proved
/// against the catalog once per process.
pub struct ClusterEnv {
    catalog: Arc<dyn Catalog>,
    keys: Keys,
    /// Proved snapshots by everything the plan named: project and table (names and ids), version.
    snapshots: Mutex<HashMap<(ScanTarget, u64), Arc<Snapshot>>>,
}

impl fmt::Debug for ClusterEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterEnv")
            .field("catalog", &self.catalog.describe())
            .finish_non_exhaustive()
    }
}

/// A table version an executor has proved: the table (with its chain cache) and the manifest.
pub(crate) struct Snapshot {
    pub(crate) table: Table,
    pub(crate) manifest: Arc<Manifest>,
}

/// Snapshots kept per executor before the cache starts over.
const KEPT_SNAPSHOTS: usize = 256;

impl ClusterEnv {
    /// The environment of an executor: `catalog` is the trust anchor it proves plans against,
    /// `keys` the KMS (and KEK cache) it unwraps data keys with.
    pub fn new(catalog: Arc<dyn Catalog>, keys: Keys) -> Self {
        ClusterEnv {
            catalog,
            keys,
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    /// The table `target` names, checked against the catalog: the project and the table must
    /// still be the ones (by id) the plan was made for.
    pub(crate) fn table(&self, target: &ScanTarget) -> Result<Table> {
        let project = Project::open(&self.catalog, &target.project, self.keys.clone())?;
        if project.project_id() != target.project_id {
            return Err(Error::integrity(format!(
                "the plan names project {} with id {}, the catalog's project {} has id {} (replaced since the query was planned?)",
                target.project,
                target.project_id,
                target.project,
                project.project_id()
            )));
        }
        let table = project.table(&target.table)?;
        if table.table_id() != target.table_id {
            return Err(Error::integrity(format!(
                "the plan names table {}.{} with id {}, the catalog's has id {} (replaced since the query was planned?)",
                target.project,
                target.table,
                target.table_id,
                table.table_id()
            )));
        }
        Ok(table)
    }

    /// Version `version` of `target`'s table, proved against the catalog's head and the manifest
    /// chain (blocking; kept for the next task).
    pub(crate) fn snapshot(&self, target: &ScanTarget, version: u64) -> Result<Arc<Snapshot>> {
        let key = (target.clone(), version);
        if let Some(s) = self.snapshots.lock().map_err(|_| Error::Poisoned)?.get(&key) {
            return Ok(s.clone());
        }
        let table = self.table(target)?;
        let manifest = Arc::new(table.snapshot(version)?);
        let snapshot = Arc::new(Snapshot { table, manifest });
        let mut kept = self.snapshots.lock().map_err(|_| Error::Poisoned)?;
        if kept.len() >= KEPT_SNAPSHOTS {
            kept.clear();
        }
        kept.insert(key, snapshot.clone());
        Ok(snapshot)
    }
}

/// The scan of one colvault table version, as a DataFusion file source.
#[derive(Clone)]
pub struct ColvaultFileSource {
    pub(crate) target: ScanTarget,
    pub(crate) version: u64,
    schema: TableSchema,
    batch_size: Option<usize>,
    /// Set in executors (by the codec that decoded the plan); a client or scheduler has none and
    /// never opens a file.
    env: Option<Arc<ClusterEnv>>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for ColvaultFileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColvaultFileSource")
            .field("target", &self.target)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl ColvaultFileSource {
    /// The scan of `target` at `version`, its output `schema` (the projected table schema).
    pub(crate) fn new(target: ScanTarget, version: u64, schema: SchemaRef, env: Option<Arc<ClusterEnv>>) -> Self {
        ColvaultFileSource {
            target,
            version,
            schema: TableSchema::from(schema),
            batch_size: None,
            env,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The output schema.
    pub(crate) fn schema(&self) -> &SchemaRef {
        self.schema.file_schema()
    }
}

impl FileSource for ColvaultFileSource {
    fn create_file_opener(
        &self,
        _object_store: Arc<dyn ObjectStore>,
        _base_config: &FileScanConfig,
        _partition: usize,
    ) -> DfResult<Arc<dyn FileOpener>> {
        let Some(env) = self.env.clone() else {
            return Err(to_df(Error::InvalidArgument(format!(
                "this process cannot read colvault table {}.{}: it has no catalog and KMS of its own \
                 (run the executors as `colvault cluster executor`)",
                self.target.project, self.target.table
            ))));
        };
        Ok(Arc::new(Opener {
            env,
            target: self.target.clone(),
            version: self.version,
            schema: self.schema().clone(),
            batch_size: self.batch_size.unwrap_or(8192).max(1),
        }))
    }

    fn table_schema(&self) -> &TableSchema {
        &self.schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        let mut s = self.clone();
        s.batch_size = Some(batch_size);
        Arc::new(s)
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "colvault"
    }

    fn fmt_extra(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            ", table={}.{}, version={}",
            self.target.project, self.target.table, self.version
        )
    }

    /// Row groups are the unit of a slice, chosen when the query was planned.
    fn supports_repartitioning(&self) -> bool {
        false
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}

/// Opens the file slices of one task.
struct Opener {
    env: Arc<ClusterEnv>,
    target: ScanTarget,
    version: u64,
    schema: SchemaRef,
    batch_size: usize,
}

impl FileOpener for Opener {
    fn open(&self, file: PartitionedFile) -> DfResult<FileOpenFuture> {
        let slice = file.extension::<SliceRef>().cloned().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "a colvault scan file ({}) carries no file slice",
                file.object_meta.location
            ))
        })?;
        let (env, target, version) = (self.env.clone(), self.target.clone(), self.version);
        let (schema, batch_size) = (self.schema.clone(), self.batch_size);
        Ok(async move {
            let slice = open_slice(env, target, version, &schema, slice).await.map_err(to_df)?;
            Ok(slice_stream(slice, schema, batch_size)
                .map(|b| b.map_err(to_df))
                .boxed())
        }
        .boxed())
    }
}

/// Proves `slice` against the catalog (the table and version are the planned ones, the file is one
/// of that version, the row groups exist, the columns have the planned types) and opens its file,
/// authenticating its footer and unwrapping its keys with this executor's KMS.
async fn open_slice(
    env: Arc<ClusterEnv>,
    target: ScanTarget,
    version: u64,
    schema: &SchemaRef,
    slice: SliceRef,
) -> Result<FileSlice> {
    let snapshot = {
        let (env, target) = (env.clone(), target.clone());
        blocking(move || env.snapshot(&target, version)).await?
    };
    check_schema(schema, &snapshot.manifest, &target)?;
    let Some(f) = snapshot.manifest.files.iter().find(|f| f.name == slice.name).cloned() else {
        return Err(Error::integrity(format!(
            "the plan names data file {} of table {}.{}, which version {version} does not hold",
            slice.name, target.project, target.table
        )));
    };
    let source = snapshot
        .table
        .storage()
        .reader_async(&format!("data/{}", f.name), Some(f.len))
        .await?;
    let reader = {
        let snapshot = snapshot.clone();
        blocking(move || open_file(&snapshot.table, &f, &snapshot.manifest, source)).await?
    };
    let groups = reader.parquet_metadata().num_row_groups();
    if let Some(bad) = slice.row_groups.iter().find(|&&rg| rg >= groups) {
        return Err(Error::integrity(format!(
            "the plan names row group {bad} of data file {} of table {}.{}, which has {groups}",
            slice.name, target.project, target.table
        )));
    }
    if let Some(range) = slice
        .row_range
        .as_ref()
        .filter(|r| !row_range_fits(&reader, &slice.row_groups, r))
    {
        return Err(Error::integrity(format!(
            "the plan names rows {}..{} of row groups {:?} of data file {} of table {}.{} (a row range is inside one row group)",
            range.start, range.end, slice.row_groups, slice.name, target.project, target.table
        )));
    }
    Ok(FileSlice {
        name: slice.name,
        reader: Arc::new(reader),
        row_groups: slice.row_groups,
        row_range: slice.row_range,
        rows: slice.rows,
    })
}

/// Every column the plan reads must be a column of the version read, of the same type.
fn check_schema(schema: &SchemaRef, m: &Manifest, target: &ScanTarget) -> Result<()> {
    for field in schema.fields() {
        match m.schema.field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            Ok(f) => {
                return Err(Error::SchemaMismatch(format!(
                    "the plan reads column {} of table {}.{} as {}, version {} holds {}",
                    field.name(),
                    target.project,
                    target.table,
                    field.data_type(),
                    m.version,
                    f.data_type()
                )))
            }
            Err(_) => {
                return Err(Error::SchemaMismatch(format!(
                    "the plan reads column {} of table {}.{}, which version {} does not have",
                    field.name(),
                    target.project,
                    target.table,
                    m.version
                )))
            }
        }
    }
    Ok(())
}
