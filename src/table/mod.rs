//! Tables: a schema plus a chain of sealed manifest versions listing committed files, whose head
//! the catalog records.
//!
//! Layout under the project's location (the catalog records each table's directory):
//! ```text
//! tables/<table id>/table.id                   the table's random id (for inspection and adoption)
//! tables/<table id>/_manifest/v<20 digits>-<digest>.cvm
//!                                              one sealed manifest per version, named by content
//! tables/<table id>/data/<file id>.cvlt        data files, published (whole) before their commit
//! ```
//! A commit writes its data files and its manifest, then swaps the table's head in the catalog
//! ([`chain`]); if another writer got there first it re-reads the head, re-applies its change and
//! tries again. A reader only ever sees the catalog's head and the versions its chain retains;
//! files no retained version references (left by a crash or a lost race, or no longer needed after
//! expiry) are removed by [`Table::vacuum`].

pub mod chain;
mod column_keys;
pub mod lifecycle;
pub mod manifest;
pub mod partition;
mod partitions;
mod scan;
mod stream;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};

pub use crate::catalog::ColumnKey;
use crate::catalog::{new_id, TableHead, TableRecord};
use crate::error::{Error, Result};
use crate::kms::KeyId;
use crate::project::Project;
use crate::storage::Storage;
use crate::write::{Compression, WriterOptions};
use crate::KeyAccess;
use column_keys::ColumnPolicy;
pub use column_keys::TableOptions;
pub use manifest::{FileRef, Manifest};
pub use partition::{Partition, PartitionInfo, PartitionValue, MAX_PARTITION_COLUMNS};
pub use partitions::DroppedPartition;
#[cfg(feature = "datafusion")]
pub(crate) use scan::{column_map, conform};
pub use scan::{TableReader, TableScan};
pub use stream::TableStream;
#[cfg(feature = "datafusion")]
pub(crate) use write::CommitTag;

const MAX_COMMIT_ATTEMPTS: usize = 100_000;

/// Checks a table name: 1 to 128 characters, a letter first, then letters, digits, underscores.
pub fn validate_table_name(name: &str) -> Result<()> {
    crate::project::check_identifier(name, "table", 1, 128)
}

impl Project {
    /// Creates a table with `schema`: all or nothing (see [`create_table_from`](Self::create_table_from)).
    pub fn create_table(&self, name: &str, schema: SchemaRef) -> Result<Table> {
        self.create_table_from(name, schema, []).map(|(t, _)| t)
    }

    /// Creates a table with `schema` and `options` (column keys, partition columns): all or nothing.
    ///
    /// ```no_run
    /// # fn f(project: &colvault::project::Project, schema: arrow::datatypes::SchemaRef) -> colvault::Result<()> {
    /// use colvault::kms::KeyId;
    /// use colvault::table::TableOptions;
    /// // `salary` under the HR key (granted to the project), everything else under the project's.
    /// let hr = KeyId::new("k-hr")?;
    /// let staff = project.create_table_with("staff", schema, TableOptions::new().column_key("salary", hr))?;
    /// # Ok(()) }
    /// ```
    pub fn create_table_with(&self, name: &str, schema: SchemaRef, options: TableOptions) -> Result<Table> {
        self.create_table_from_with(name, schema, options, []).map(|(t, _)| t)
    }

    /// Creates a table with `schema` holding `batches`, as one unit: the data files and the first
    /// manifest (listing them) are written under the table's new directory, then the table is
    /// registered in the catalog, the commit point. If anything fails (the name was taken meanwhile,
    /// a batch does not fit the schema), what was written is removed and no table exists.
    pub fn create_table_from(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Result<(Table, CommitInfo)> {
        self.create_table_from_with(name, schema, TableOptions::new(), batches)
    }

    /// [`create_table_from`](Self::create_table_from) with `options` (column keys, checked before
    /// anything is written: see [`TableOptions`]). The catalog records the column keys with the
    /// table, and its first manifest records them too.
    pub fn create_table_from_with(
        &self,
        name: &str,
        schema: SchemaRef,
        options: TableOptions,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Result<(Table, CommitInfo)> {
        validate_table_name(name)?;
        if schema.fields().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "table {name} would have no columns: a table needs at least one column"
            )));
        }
        crate::format::schema::check_field_names(&schema)?;
        // The schema's own bounds (field count, depth) are checked before anything is written.
        crate::format::schema::encode(&schema)?;
        let column_keys = options.resolve(self, &schema)?;
        let partition_by = options.partition_columns().to_vec();
        partition::check_columns(&partition_by, &schema, &column_keys)?;
        if self.catalog().table(self.project_id(), name)?.is_some() {
            return Err(Error::AlreadyExists {
                kind: "table",
                name: name.to_string(),
            });
        }
        let table_id = new_id()?;
        column_keys::check_usable(self, &table_id, &column_keys)?;
        let location = format!("tables/{table_id}");
        let storage = self.storage().child(&location);
        let result = (|| {
            if let Some(dir) = storage.local_dir() {
                for sub in ["_manifest", "data"] {
                    std::fs::create_dir_all(dir.join(sub))
                        .map_err(|e| Error::io(format!("creating table {name}"), e))?;
                }
            }
            if !storage.put_new("table.id", table_id.clone().into_bytes().into())? {
                return Err(Error::integrity(format!(
                    "table id {table_id} (already taken on storage)"
                )));
            }
            let table = Table::new(
                self.clone(),
                name,
                storage.clone(),
                table_id.clone(),
                ColumnPolicy::new(column_keys.clone(), partition_by.clone()),
            );
            table.set_column_indices(&schema);
            let files = table.write_files(&schema, batches)?;
            let mut first =
                Manifest::genesis_with(table_id.clone(), schema, self.settings().algorithm, column_keys.clone());
            first.partition_by = partition_by.clone();
            first.files = files.clone();
            let (m, digest) = table.publish(&first, None, "create")?;
            self.catalog().create_table(&TableRecord {
                table_id: table_id.clone(),
                project_id: self.project_id().to_string(),
                name: name.to_string(),
                location: location.clone(),
                head: TableHead {
                    version: m.version,
                    digest,
                },
                column_keys: column_keys.clone(),
                partition_by: partition_by.clone(),
            })?;
            let info = CommitInfo {
                version: m.version,
                files_added: files.len(),
                rows_added: files.iter().map(|f| f.rows).sum(),
            };
            Ok((table, info))
        })();
        if result.is_err() {
            let _ = storage.delete_all("");
        }
        result
    }

    /// Opens the table `name` (its id and location from the catalog).
    pub fn table(&self, name: &str) -> Result<Table> {
        validate_table_name(name)?;
        let rec = self
            .catalog()
            .table(self.project_id(), name)?
            .ok_or_else(|| Error::NotRegistered {
                kind: "table",
                name: name.to_string(),
                hint: format!(" in project {}", self.name()),
            })?;
        Ok(self.table_from(&rec))
    }

    /// The table of `rec`.
    pub(crate) fn table_from(&self, rec: &TableRecord) -> Table {
        Table::new(
            self.clone(),
            &rec.name,
            self.storage().child(&rec.location),
            rec.table_id.clone(),
            ColumnPolicy::new(rec.column_keys.clone(), rec.partition_by.clone()),
        )
    }

    /// A table being adopted (trust on first use): its column keys are taken from its verified
    /// head manifest.
    pub(crate) fn table_adopting(&self, rec: &TableRecord) -> Table {
        Table::new(
            self.clone(),
            &rec.name,
            self.storage().child(&rec.location),
            rec.table_id.clone(),
            ColumnPolicy::adopting(),
        )
    }

    /// The names of the tables, sorted.
    pub fn list_tables(&self) -> Result<Vec<String>> {
        Ok(self
            .catalog()
            .list_tables(self.project_id())?
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    /// Drops a table: its registration is removed from the catalog (the commit point), then its
    /// objects. A crash between the two leaves objects no registered table owns, which
    /// [`Project::vacuum`] removes.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        let table = self.table(name)?;
        self.catalog().drop_table(&table.table_id)?;
        table.storage.delete_all("")
    }
}

/// What a commit produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The new version.
    pub version: u64,
    /// Files the commit added.
    pub files_added: usize,
    /// Rows the commit added.
    pub rows_added: u64,
}

/// One entry of a table's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Version.
    pub version: u64,
    /// Commit time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// What made it.
    pub operation: String,
    /// Live files.
    pub files: usize,
    /// Live rows.
    pub rows: u64,
}

/// A table of a project. Cheap to clone; clones share the cache of verified manifest digests.
#[derive(Clone)]
pub struct Table {
    project: Project,
    name: String,
    /// The table's location as a path (local directory, else URL).
    dir: PathBuf,
    /// Where its objects are.
    storage: Storage,
    table_id: String,
    verified: Arc<Mutex<BTreeMap<u64, [u8; 32]>>>,
    write: TableWriteOptions,
    /// The column keys the catalog records.
    columns: Arc<ColumnPolicy>,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("table_id", &self.table_id)
            .finish_non_exhaustive()
    }
}

/// How a table writes its files.
#[derive(Clone, Debug)]
pub struct TableWriteOptions {
    /// Page codec.
    pub compression: Compression,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Rows per file before a new file is started.
    pub file_rows: usize,
}

impl Default for TableWriteOptions {
    fn default() -> Self {
        TableWriteOptions {
            compression: Compression::default(),
            row_group_rows: 1 << 20,
            file_rows: 8 << 20,
        }
    }
}

impl Table {
    fn new(project: Project, name: &str, storage: Storage, table_id: String, columns: Arc<ColumnPolicy>) -> Self {
        Table {
            project,
            name: name.to_string(),
            dir: PathBuf::from(storage.url()),
            storage,
            table_id,
            verified: Arc::new(Mutex::new(BTreeMap::new())),
            write: TableWriteOptions::default(),
            columns,
        }
    }

    /// The same table with other write options.
    pub fn with_write_options(mut self, opts: TableWriteOptions) -> Self {
        self.write = opts;
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The table's random id.
    pub fn table_id(&self) -> &str {
        &self.table_id
    }
    /// The project.
    pub fn project(&self) -> &Project {
        &self.project
    }

    /// Key access, when any key is in play (the project's CMK, or the one a migration is leaving).
    /// In a table with column keys it holds every data key it unwraps to them (see
    /// [`column_keys`](Self::column_keys)).
    fn access(&self) -> Option<KeyAccess> {
        let s = self.project.settings();
        let migrating_key = s.migrating_from.as_ref().and_then(|(_, k)| k.as_ref());
        (s.cmk.is_some() || migrating_key.is_some()).then(|| self.key_access())
    }

    /// The project's key access for this table, with the column-key rule when it has column keys.
    fn key_access(&self) -> KeyAccess {
        let access = self.project.access(&self.table_id);
        if self.column_keys().is_empty() {
            access
        } else {
            access.with_column_rule(Arc::new(self.column_rule()))
        }
    }

    /// The CMKs a manifest of this table may be sealed under: the project's, and during a
    /// migration the one it is leaving. Never taken from the manifest itself.
    fn manifest_cmks(&self) -> Vec<KeyId> {
        let s = self.project.settings();
        let migrating_key = s.migrating_from.as_ref().and_then(|(_, k)| k.as_ref());
        s.cmk.iter().chain(migrating_key).cloned().collect()
    }

    /// Whether manifests must be sealed under a key (the project is encrypted and not migrating
    /// from plaintext): a checksummed manifest is then a downgrade and refused.
    fn require_sealed(&self) -> bool {
        let s = self.project.settings();
        s.cmk.is_some() && !matches!(s.migrating_from, Some((_, None)))
    }

    /// The object name of data file `name`.
    fn data_object(name: &str) -> String {
        format!("data/{name}")
    }

    /// Where the table's objects are.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    fn writer_options(&self) -> WriterOptions {
        let s = self.project.settings();
        let mut b = match &s.cmk {
            Some(cmk) => WriterOptions::encrypted(s.algorithm, self.key_access(), cmk.clone()),
            None => WriterOptions::plaintext(),
        };
        // The columns with keys of their own, in schema order (so `key_ids` lists them so).
        for k in self.column_keys() {
            b = b.column_key(k.column.clone(), k.cmk.clone());
        }
        b.compression(self.write.compression)
            .max_row_group_rows(self.write.row_group_rows)
            .allow_legacy_rc4(s.allow_legacy_rc4)
            .build()
    }

    /// Adds a nullable column; files written before read it as null.
    pub fn add_column(&self, field: Field) -> Result<u64> {
        if !field.is_nullable() {
            return Err(Error::InvalidArgument(format!(
                "an added column must be nullable: {}",
                field.name()
            )));
        }
        let m = self.commit("add column", |head| {
            if head.schema.field_with_name(field.name()).is_ok() {
                return Err(Error::InvalidArgument(format!(
                    "column {} already exists",
                    field.name()
                )));
            }
            let mut fields: Vec<Arc<Field>> = head.schema.fields().iter().cloned().collect();
            fields.push(Arc::new(field.clone()));
            let mut next = head.clone();
            next.schema = Arc::new(Schema::new_with_metadata(fields, head.schema.metadata().clone()));
            Ok(next)
        })?;
        Ok(m.version)
    }

    /// The table's history, oldest retained version first.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        let head = self.head()?;
        (head.oldest_retained.max(1)..=head.version)
            .map(|v| {
                let m = self.snapshot(v)?;
                Ok(HistoryEntry {
                    version: m.version,
                    timestamp_ms: m.timestamp_ms,
                    operation: m.operation.clone(),
                    files: m.files.len(),
                    rows: m.rows(),
                })
            })
            .collect()
    }
}
