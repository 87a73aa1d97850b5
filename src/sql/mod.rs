//! SQL over colvault tables with Apache DataFusion (feature `datafusion`).
//!
//! Tables are DataFusion tables ([`ColvaultTable`]): scans decrypt transparently, skip the
//! partitions of a partitioned table that filters on its partition columns rule out (exactly, before
//! opening a file), prune row groups by their statistics, run one partition per core (a big row
//! group is shared by rows), and report statistics to the planner; `INSERT INTO`, `CREATE TABLE ... AS SELECT` and
//! `CREATE TABLE ... PARTITIONED BY` commit once per statement, encrypted per the project's settings. A query that touches a column whose key the caller cannot use fails
//! with colvault's error naming it; one that does not touch it succeeds.
//!
//! [`SqlSession`] is the simple way in: the catalog's projects are the schemas of a DataFusion
//! catalog named `colvault` ([`ProjectCatalog`]), so `SELECT ... FROM sales.orders` works, and with
//! a default project `SELECT ... FROM orders`. Errors come back as [`crate::Error`].
//!
//! ```
//! # use std::sync::Arc;
//! # use arrow::array::{Int64Array, RecordBatch, StringArray};
//! # use arrow::datatypes::{DataType, Field, Schema};
//! # use colvault::kms::{CacheOptions, KeyCache, LocalKms, LocalKmsOptions, RootSecret};
//! use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
//! use colvault::sql::SqlSession;
//! use colvault::Algorithm;
//! # let dir = tempfile::tempdir()?;
//! # let catalog = colvault::catalog::open(&format!("sqlite:{}", dir.path().join("catalog.db").display()))?;
//! # let root = RootSecret::create_key_file(dir.path().join("root.key"))?;
//! # let kms = Arc::new(LocalKms::create(dir.path().join("keystore"), root, LocalKmsOptions::new())?);
//! # let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default())?);
//! # let keys = Keys { kms, cache };
//! let settings = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault);
//! let project = Project::create(&catalog, dir.path().join("sales"), "sales", settings, keys)?;
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("id", DataType::Int64, false),
//!     Field::new("city", DataType::Utf8, true),
//! ]));
//! let batch = RecordBatch::try_new(schema.clone(), vec![
//!     Arc::new(Int64Array::from(vec![1, 2, 3])),
//!     Arc::new(StringArray::from(vec![Some("Oslo"), None, Some("Lima")])),
//! ])?;
//! project.create_table_from("orders", schema, [batch])?;
//!
//! let session = SqlSession::for_project(&project);
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     session.query("INSERT INTO orders VALUES (4, 'Quito')").await?; // one commit
//!     let rows = session.query("SELECT count(*) AS n FROM sales.orders WHERE id > 1").await?;
//!     let n = rows[0].column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0));
//!     assert_eq!(n, Some(3));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod catalog;
#[cfg(feature = "ballista")]
pub mod cluster;
mod ddl;
mod error;
mod exec;
mod filter;
mod partitions;
mod plan;
mod provider;
mod sink;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

pub use catalog::{ProjectCatalog, ProjectSchema};
pub use exec::ColvaultScanExec;
pub use provider::ColvaultTable;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::project::{Keys, Project};

/// The name of the DataFusion catalog holding the projects, in a [`SqlSession`].
pub const CATALOG: &str = "colvault";

/// A DataFusion session over the projects of a colvault catalog.
pub struct SqlSession {
    ctx: SessionContext,
    projects: Arc<ProjectCatalog>,
}

impl std::fmt::Debug for SqlSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSession")
            .field("projects", &self.projects)
            .finish_non_exhaustive()
    }
}

impl SqlSession {
    /// A session over every project of `catalog` (opened with `keys` when a query uses them):
    /// tables are named `project.table`.
    pub fn new(catalog: Arc<dyn Catalog>, keys: Keys) -> Self {
        Self::build(Arc::new(ProjectCatalog::new(catalog, keys)), "public")
    }

    /// A session whose default schema is the project `name` (its tables are named `table` as
    /// well as `name.table`).
    pub fn with_default_project(catalog: Arc<dyn Catalog>, keys: Keys, name: &str) -> Result<Self> {
        if catalog.project(name)?.is_none() {
            return Err(Error::NotRegistered {
                kind: "project",
                name: name.to_string(),
                hint: format!(" in catalog {}", catalog.describe()),
            });
        }
        Ok(Self::build(Arc::new(ProjectCatalog::new(catalog, keys)), name))
    }

    /// A session whose default schema is the open `project`; the other projects of its catalog
    /// are there too, as `project.table`.
    pub fn for_project(project: &Project) -> Self {
        let projects = Arc::new(ProjectCatalog::new(project.catalog().clone(), project.keys().clone()));
        projects.add(project);
        Self::build(projects, project.name())
    }

    fn build(projects: Arc<ProjectCatalog>, default_schema: &str) -> Self {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, default_schema);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_catalog(CATALOG, projects.clone());
        SqlSession { ctx, projects }
    }

    /// This session with its DataFusion state replaced by `f(state)`; the catalogs, tables and
    /// options it had are `f`'s to keep.
    #[cfg(feature = "ballista")]
    pub(crate) fn map_state(
        self,
        f: impl FnOnce(datafusion::execution::SessionState) -> datafusion::execution::SessionState,
    ) -> Self {
        SqlSession {
            ctx: SessionContext::new_with_state(f(self.ctx.state())),
            projects: self.projects,
        }
    }

    /// The DataFusion context (to register other tables or functions, or run DataFrames).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans one SQL statement. Queries run when the DataFrame is collected or streamed; DDL and
    /// DML (`CREATE TABLE ... AS`, `INSERT INTO`, `DROP TABLE`) run here.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let state = self.ctx.state();
        if let Some(create) = ddl::plan_partitioned(&state, sql).await? {
            self.create_partitioned(&state, create).await?;
            let empty = LogicalPlanBuilder::empty(false).build().map_err(error::from_df)?;
            return Ok(DataFrame::new(state, empty));
        }
        let plan = state.create_logical_plan(sql).await.map_err(error::from_df)?;
        if let LogicalPlan::Ddl(DdlStatement::DropTable(d)) = &plan {
            let options = state.config_options();
            let name = d
                .name
                .clone()
                .resolve(&options.catalog.default_catalog, &options.catalog.default_schema);
            if *name.catalog == *CATALOG {
                self.drop_table(&name.schema, &name.table, d.if_exists).await?;
                let empty = LogicalPlanBuilder::empty(false).build().map_err(error::from_df)?;
                return Ok(DataFrame::new(state, empty));
            }
        }
        self.ctx.execute_logical_plan(plan).await.map_err(error::from_df)
    }

    /// Runs one SQL statement and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.sql(sql).await?.collect().await.map_err(error::from_df)
    }

    /// `CREATE TABLE ... PARTITIONED BY`: the table, with its rows (from `AS SELECT`), in one commit.
    async fn create_partitioned(&self, state: &SessionState, plan: ddl::CreatePartitioned) -> Result<()> {
        let ddl::CreatePartitioned { create, partition_by } = plan;
        let options = state.config_options();
        let name = create
            .name
            .clone()
            .resolve(&options.catalog.default_catalog, &options.catalog.default_schema);
        if *name.catalog != *CATALOG || create.temporary {
            return Err(Error::InvalidArgument(format!(
                "PARTITIONED BY creates tables of colvault projects (catalog {CATALOG}), not {}",
                create.name
            )));
        }
        if create.or_replace {
            return Err(Error::InvalidArgument(format!(
                "CREATE OR REPLACE TABLE {} is not supported: DROP TABLE it first, or use INSERT OVERWRITE",
                create.name
            )));
        }
        let Some(schema) = self.projects.project_schema(&name.schema) else {
            return Err(Error::NotRegistered {
                kind: "project",
                name: name.schema.to_string(),
                hint: String::new(),
            });
        };
        let table = name.table.to_string();
        if create.if_not_exists && schema.table_exist(&table) {
            return Ok(());
        }
        let rows = ddl::schema_of(&create);
        let batches = DataFrame::new(state.clone(), (*create.input).clone())
            .collect()
            .await
            .map_err(error::from_df)?;
        plan::blocking(move || {
            let project = schema.project()?;
            let options = crate::table::TableOptions::new().partition_by(partition_by);
            sink::create_table_as(&project, &table, rows, batches, options).map(|_| ())
        })
        .await
    }

    async fn drop_table(&self, project: &str, table: &str, if_exists: bool) -> Result<()> {
        let Some(schema) = self.projects.project_schema(project) else {
            return Err(Error::NotRegistered {
                kind: "project",
                name: project.to_string(),
                hint: String::new(),
            });
        };
        let table = table.to_string();
        plan::blocking(move || {
            let project = schema.project()?;
            match project.drop_table(&table) {
                Err(Error::NotRegistered { .. }) if if_exists => Ok(()),
                other => other,
            }
        })
        .await
    }
}

/// Registers `project` as a schema named after it in `ctx`'s default catalog, so its tables are
/// `project.table` there. `DROP TABLE` of its tables is refused in such a context (use
/// [`SqlSession`] or [`Project::drop_table`]).
pub fn register_project(ctx: &SessionContext, project: &Project) -> Result<()> {
    let catalog_name = ctx.state().config_options().catalog.default_catalog.clone();
    let catalog = ctx.catalog(&catalog_name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the session has no catalog {catalog_name:?} to register project {} in",
            project.name()
        ))
    })?;
    catalog
        .register_schema(project.name(), Arc::new(ProjectSchema::new(project)))
        .map_err(error::from_df)?;
    Ok(())
}

/// The colvault error a DataFusion error carries (a scan's access error, a commit's conflict ...),
/// or one describing it.
pub fn error_from_datafusion(e: DataFusionError) -> Error {
    error::from_df(e)
}
