//! Scans of a table snapshot: [`TableScan`] (a builder) and [`TableReader`] (a
//! `RecordBatchReader` over the snapshot's files, each checked against the manifest).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;

use super::{FileRef, Manifest, Table};
use crate::error::{Error, Result};
use crate::format::ReadAt;
use crate::read::{BatchReader, FileReader, Predicate, ReaderOptions};
use crate::storage::PendingReader;

impl Table {
    /// A scan of the current version (or another one).
    pub fn scan(&self) -> TableScan {
        TableScan {
            table: self.clone(),
            version: None,
            min_version: None,
            columns: None,
            predicates: Vec::new(),
            batch_size: 8192,
        }
    }

    /// All rows of one committed file, in the manifest's schema (columns added after the file was
    /// written read as null), for rewriting it.
    pub(super) fn read_file(&self, f: &FileRef, m: &Manifest) -> Result<Vec<RecordBatch>> {
        let plan = ScanPlan {
            table: self.clone(),
            manifest: Arc::new(m.clone()),
            schema: m.schema.clone(),
            names: m.schema.fields().iter().map(|f| f.name().clone()).collect(),
            predicates: Vec::new(),
            batch_size: 8192,
        };
        TableReader::new(plan, VecDeque::from([f.clone()])).read_all()
    }

    /// Opens one committed file, checking it against the manifest: its id, length and footer digest,
    /// the project's algorithm and the keys the manifest allows.
    /// What a reader of committed file `f` of snapshot `m` must expect: the algorithm of the
    /// (authenticated) manifest, and the CMKs it records for the file.
    pub fn reader_options(&self, f: &FileRef, m: &Manifest) -> Result<ReaderOptions> {
        if !m.algorithm.is_encrypted() {
            return Ok(ReaderOptions::plaintext());
        }
        let access = self.access().ok_or_else(|| Error::KeysRequired {
            algorithm: m.algorithm.to_string(),
        })?;
        Ok(ReaderOptions::encrypted(m.algorithm, access, f.key_ids.iter().cloned()))
    }

    /// Checks one committed file's footer against the manifest (its id, length, footer digest,
    /// algorithm and keys).
    pub(crate) fn check_file(&self, f: &FileRef, m: &Manifest) -> Result<()> {
        self.open_file(f, m).map(|_| ())
    }

    pub(crate) fn open_file(&self, f: &FileRef, m: &Manifest) -> Result<FileReader> {
        self.open_file_from(f, m, None)
    }

    /// [`open_file`](Self::open_file), from an open started earlier when there is one.
    fn open_file_from(&self, f: &FileRef, m: &Manifest, ahead: Option<PendingReader>) -> Result<FileReader> {
        let name = Self::data_object(&f.name);
        let source = match ahead.filter(|a| a.name() == name) {
            Some(a) => a.wait()?,
            None => self.storage.reader(&name, Some(f.len))?,
        };
        self.open_source(f, m, source)
    }

    /// Opens committed file `f` from `source` (`None`: no such object) and checks it against the
    /// manifest.
    pub(crate) fn open_source(&self, f: &FileRef, m: &Manifest, source: Option<Arc<dyn ReadAt>>) -> Result<FileReader> {
        let file = match source {
            Some(file) => file,
            None => {
                // Expired and vacuumed by a concurrent change (retriable), or lost (damage)?
                return Err(match self.head() {
                    Ok(h) if m.version < h.oldest_retained.max(1) => Error::SnapshotExpired {
                        table: self.name.clone(),
                        version: m.version,
                    },
                    _ => Error::integrity(format!("data file {} (missing)", f.file_id)),
                });
            }
        };
        let r = FileReader::open_shared(file, self.reader_options(f, m)?)?;
        if r.file_id() != f.file_id || r.file_len() != f.len || r.footer_digest() != f.footer_digest {
            return Err(Error::integrity(format!(
                "data file {} (it is not the file the manifest committed)",
                f.file_id
            )));
        }
        // Each column under the key the catalog records for it, and nothing else.
        self.check_file_keys(f, &r)?;
        Ok(r)
    }
}

/// A scan of a table snapshot.
pub struct TableScan {
    table: Table,
    version: Option<u64>,
    min_version: Option<u64>,
    columns: Option<Vec<String>>,
    predicates: Vec<Predicate>,
    batch_size: usize,
}

impl TableScan {
    /// Reads version `v` instead of the newest.
    pub fn version(mut self, v: u64) -> Self {
        self.version = Some(v);
        self
    }
    /// Refuses a snapshot older than `v` (a rollback of the table to an earlier authentic version).
    pub fn min_version(mut self, v: u64) -> Self {
        self.min_version = Some(v);
        self
    }
    /// Reads only these columns.
    pub fn columns<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.columns = Some(names.into_iter().map(Into::into).collect());
        self
    }
    /// Prunes with a predicate: in a partitioned table, files whose partition values rule it out
    /// are skipped unopened; in every table, row groups whose statistics rule it out. Pruning is
    /// conservative: kept row groups are returned whole.
    pub fn filter(mut self, p: Predicate) -> Self {
        self.predicates.push(p);
        self
    }
    /// Rows per batch.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// The reader over the snapshot.
    pub fn build(self) -> Result<TableReader> {
        let plan = self.plan()?;
        let files = plan.files();
        Ok(TableReader::new(plan, files))
    }

    /// The snapshot, its checks and the output schema: what the blocking and async readers share.
    pub(super) fn plan(self) -> Result<ScanPlan> {
        let m = match self.version {
            Some(v) => self.table.snapshot(v)?,
            None => self.table.head()?,
        };
        if let Some(min) = self.min_version {
            if m.version < min {
                return Err(Error::integrity(format!(
                    "table {} (at version {}, older than the minimum {min}: a rollback?)",
                    self.table.name(),
                    m.version
                )));
            }
        }
        let names: Vec<String> = match &self.columns {
            Some(c) => c.clone(),
            None => m.schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        let indices = names
            .iter()
            .map(|n| {
                m.schema
                    .index_of(n)
                    .map_err(|_| Error::InvalidArgument(format!("no column named {n:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = Arc::new(m.schema.project(&indices).map_err(|e| Error::Arrow(e.to_string()))?);
        Ok(ScanPlan {
            table: self.table,
            manifest: Arc::new(m),
            schema,
            names,
            predicates: self.predicates,
            batch_size: self.batch_size,
        })
    }
}

/// A planned scan: the snapshot and what to read of each of its files.
pub(super) struct ScanPlan {
    pub(super) table: Table,
    pub(super) manifest: Arc<Manifest>,
    pub(super) schema: SchemaRef,
    names: Vec<String>,
    predicates: Vec<Predicate>,
    batch_size: usize,
}

impl ScanPlan {
    /// The snapshot's files the scan reads: those whose partition values do not rule out its
    /// predicates (all of them in a table that is not partitioned), unopened.
    pub(super) fn files(&self) -> VecDeque<FileRef> {
        let m = &self.manifest;
        m.files
            .iter()
            .filter(|f| super::partitions::file_may_match(m, f, &self.predicates))
            .cloned()
            .collect()
    }

    /// Starts reading one opened file: its batches (projected to the columns it has, pruned by the
    /// predicates on columns it has) and, per output column, where it is in those batches (`None`:
    /// added after the file was written, read as null).
    pub(super) fn start(&self, reader: &FileReader) -> Result<(BatchReader, Vec<Option<usize>>)> {
        let file_schema = reader.schema();
        let (present, map) = column_map(&self.names, &file_schema);
        let mut scan = reader.scan().project(present).batch_size(self.batch_size);
        for p in &self.predicates {
            if file_schema.index_of(p.column()).is_ok() {
                scan = scan.filter(p.clone());
            }
        }
        Ok((scan.build()?, map))
    }

    /// A file's batch `b` in the scan's schema.
    pub(super) fn conform(&self, map: &[Option<usize>], b: &RecordBatch) -> Result<RecordBatch> {
        conform(&self.schema, map, b.columns(), b.num_rows())
    }
}

/// Of the output columns `names`, the ones a file has (its field indices: the projection to scan)
/// and, per name, where it is in the file's projected, schema-ordered batches (`None`: the file
/// lacks it, the column having been added after the file was written).
pub(crate) fn column_map(names: &[String], file_schema: &Schema) -> (Vec<usize>, Vec<Option<usize>>) {
    let present: Vec<usize> = names.iter().filter_map(|n| file_schema.index_of(n).ok()).collect();
    let mut sorted = present.clone();
    sorted.sort_unstable();
    let map = names
        .iter()
        .map(|n| {
            file_schema
                .index_of(n)
                .ok()
                .and_then(|i| sorted.iter().position(|&s| s == i))
        })
        .collect();
    (present, map)
}

/// A batch of `schema` of `rows` rows from `columns` placed by `map` (`None`, or no entry: null).
pub(crate) fn conform(
    schema: &SchemaRef,
    map: &[Option<usize>],
    columns: &[ArrayRef],
    rows: usize,
) -> Result<RecordBatch> {
    let out = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| match map.get(i).copied().flatten() {
            Some(src) => columns[src].clone(),
            None => new_null_array(field.data_type(), rows),
        })
        .collect();
    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema.clone(), out, &opts).map_err(|e| Error::Arrow(e.to_string()))
}

/// Batches of a table snapshot, file after file. Columns added after a file was written read as
/// null for that file's rows.
pub struct TableReader {
    plan: ScanPlan,
    files: VecDeque<FileRef>,
    current: Option<(BatchReader, Vec<Option<usize>>)>,
    /// The next file, being opened in the background (object stores).
    ahead: Option<PendingReader>,
}

impl fmt::Debug for TableReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableReader")
            .field("version", &self.plan.manifest.version)
            .field("files_left", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl TableReader {
    fn new(plan: ScanPlan, files: VecDeque<FileRef>) -> Self {
        TableReader {
            plan,
            files,
            current: None,
            ahead: None,
        }
    }

    /// The snapshot's version.
    pub fn version(&self) -> u64 {
        self.plan.manifest.version
    }

    /// The next batch, with colvault's typed error.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some((reader, map)) = &mut self.current {
                if let Some(b) = reader.next_batch()? {
                    return self.plan.conform(map, &b).map(Some);
                }
                self.current = None;
            }
            let Some(f) = self.files.pop_front() else {
                return Ok(None);
            };
            // On an object store, the next file's open (one round trip) runs while this one is read.
            let table = &self.plan.table;
            let ahead = self.ahead.take();
            self.ahead = self
                .files
                .front()
                .and_then(|n| table.storage.open_ahead(&Table::data_object(&n.name), Some(n.len)));
            let reader = table.open_file_from(&f, &self.plan.manifest, ahead)?;
            self.current = Some(self.plan.start(&reader)?);
        }
    }

    /// All remaining batches.
    pub fn read_all(mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(b) = self.next_batch()? {
            out.push(b);
        }
        Ok(out)
    }
}

impl Iterator for TableReader {
    type Item = std::result::Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))
            .transpose()
    }
}

impl RecordBatchReader for TableReader {
    fn schema(&self) -> SchemaRef {
        self.plan.schema.clone()
    }
}
