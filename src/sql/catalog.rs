//! Projects as DataFusion schemas ([`ProjectSchema`]: its tables by the catalog's names) and the
//! catalog's projects as a DataFusion catalog ([`ProjectCatalog`]: `SELECT ... FROM sales.orders`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, TableProvider};
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result as DfResult};

use super::error::to_df;
use super::plan::blocking;
use super::provider::ColvaultTable;
use crate::catalog::{Catalog, ProjectRecord};
use crate::error::{Error, Result};
use crate::project::{Keys, Project};
use crate::table::TableOptions;

/// A project as a DataFusion schema: its tables, by the names the catalog records.
///
/// `CREATE TABLE name AS SELECT ...` (DataFusion hands the result over as a [`MemTable`]) creates a
/// colvault table holding the rows, in one commit, encrypted per the project's settings. Tables
/// are not dropped through [`SchemaProvider::deregister_table`] (DataFusion calls it for `CREATE OR
/// REPLACE` before it reads the query, which would lose the table's data): `DROP TABLE` goes
/// through [`SqlSession`](super::SqlSession), or [`Project::drop_table`].
///
/// `CREATE VIEW` makes a view of this schema for the session only: a view holds no rows (it is a
/// query over tables, each read with its own keys), so nothing of it is stored in the project;
/// `DROP VIEW` removes it. A view cannot take the name of a stored table.
pub struct ProjectSchema {
    catalog: Arc<dyn Catalog>,
    name: String,
    project_id: String,
    keys: Keys,
    /// The project, opened on first use (its settings checked against the catalog).
    project: Mutex<Option<Project>>,
    /// The session's views in this schema, by name.
    views: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl fmt::Debug for ProjectSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectSchema")
            .field("project", &self.name)
            .finish_non_exhaustive()
    }
}

impl ProjectSchema {
    /// The schema of an open project.
    pub fn new(project: &Project) -> Self {
        ProjectSchema {
            catalog: project.catalog().clone(),
            name: project.name().to_string(),
            project_id: project.project_id().to_string(),
            keys: project.keys().clone(),
            project: Mutex::new(Some(project.clone())),
            views: Mutex::default(),
        }
    }

    /// The schema of the project `record`, opened when first used.
    fn lazy(catalog: &Arc<dyn Catalog>, record: &ProjectRecord, keys: &Keys) -> Self {
        ProjectSchema {
            catalog: catalog.clone(),
            name: record.name.clone(),
            project_id: record.project_id.clone(),
            keys: keys.clone(),
            project: Mutex::new(None),
            views: Mutex::default(),
        }
    }

    /// The project (opened now if it was not yet: blocking).
    pub fn project(&self) -> Result<Project> {
        let mut p = self.project.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = p.as_ref() {
            return Ok(p.clone());
        }
        let opened = Project::open(&self.catalog, &self.name, self.keys.clone())?;
        *p = Some(opened.clone());
        Ok(opened)
    }

    fn exists(&self, table: &str) -> Result<bool> {
        Ok(self.catalog.table(&self.project_id, table)?.is_some())
    }

    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn TableProvider>>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SchemaProvider for ProjectSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .catalog
            .list_tables(&self.project_id)
            .map(|t| t.into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
        names.extend(self.views().keys().cloned());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(view) = self.views().get(name) {
            return Ok(Some(view.clone()));
        }
        if !self.exists(name).map_err(to_df)? {
            return Ok(None);
        }
        let project = self.project();
        let name = name.to_string();
        let provider = blocking(move || ColvaultTable::try_new(project?.table(&name)?))
            .await
            .map_err(to_df)?;
        Ok(Some(Arc::new(provider)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.views().contains_key(name) || self.exists(name).unwrap_or(false)
    }

    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if table.downcast_ref::<ViewTable>().is_some() {
            if self.exists(&name).map_err(to_df)? {
                return Err(to_df(Error::AlreadyExists {
                    kind: "table",
                    name: format!("{}.{name} (a view cannot take the name of a table)", self.name),
                }));
            }
            return Ok(self.views().insert(name, table));
        }
        let Some(mem) = table.downcast_ref::<MemTable>() else {
            return Err(to_df(Error::InvalidArgument(format!(
                "only tables of rows (CREATE TABLE {name} AS SELECT ..., CREATE TABLE {name} (...)) can be created in project {}; views and external tables are not stored in colvault projects",
                self.name
            ))));
        };
        let mut batches = Vec::new();
        for part in &mem.batches {
            let part = part
                .try_read()
                .map_err(|_| DataFusionError::Execution("the rows of the new table are being written".into()))?;
            batches.extend(part.iter().cloned());
        }
        let project = self.project().map_err(to_df)?;
        super::sink::create_table_as(&project, &name, mem.schema(), batches, TableOptions::new()).map_err(to_df)?;
        Ok(None)
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(view) = self.views().remove(name) {
            return Ok(Some(view));
        }
        Err(to_df(Error::InvalidArgument(format!(
            "table {name} of project {} is not dropped or replaced this way: run DROP TABLE through colvault's SqlSession (CREATE OR REPLACE TABLE is not supported; use INSERT OVERWRITE)",
            self.name
        ))))
    }
}

/// The projects of a colvault catalog as a DataFusion catalog: each project is a schema.
pub struct ProjectCatalog {
    catalog: Arc<dyn Catalog>,
    keys: Keys,
    /// Schemas handed out, by project name (reused while the project's id is the same).
    schemas: Mutex<HashMap<String, Arc<ProjectSchema>>>,
}

impl fmt::Debug for ProjectCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectCatalog")
            .field("catalog", &self.catalog.describe())
            .finish_non_exhaustive()
    }
}

impl ProjectCatalog {
    /// The projects of `catalog`, opened with `keys` when a query first uses them.
    pub fn new(catalog: Arc<dyn Catalog>, keys: Keys) -> Self {
        ProjectCatalog {
            catalog,
            keys,
            schemas: Mutex::new(HashMap::new()),
        }
    }

    /// Adds an open project (it is not opened again).
    pub fn add(&self, project: &Project) {
        self.lock()
            .insert(project.name().to_string(), Arc::new(ProjectSchema::new(project)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ProjectSchema>>> {
        self.schemas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schema of project `name`, when the catalog has such a project.
    pub(crate) fn project_schema(&self, name: &str) -> Option<Arc<ProjectSchema>> {
        let record = self.catalog.project(name).ok()??;
        let mut schemas = self.lock();
        if let Some(s) = schemas.get(name) {
            if s.project_id == record.project_id {
                return Some(s.clone());
            }
        }
        let s = Arc::new(ProjectSchema::lazy(&self.catalog, &record, &self.keys));
        schemas.insert(name.to_string(), s.clone());
        Some(s)
    }
}

impl CatalogProvider for ProjectCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.catalog
            .list_projects()
            .map(|p| p.into_iter().map(|p| p.name).collect())
            .unwrap_or_default()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.project_schema(name).map(|s| s as Arc<dyn SchemaProvider>)
    }

    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        Err(to_df(Error::InvalidArgument(format!(
            "schema {name}: the schemas of the colvault catalog are its projects; create one with `colvault project create` (or Project::create)"
        ))))
    }
}
