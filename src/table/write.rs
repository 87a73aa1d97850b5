//! Writing a table: data files (one partition each in a partitioned table), appends, overwrites
//! and compaction, each one atomic commit.

use std::collections::HashSet;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::partition::{self, PartitionValue};
use super::{CommitInfo, FileRef, Manifest, Table};
use crate::catalog::new_id;
use crate::crypto::FileId;
use crate::error::{Error, Result};
use crate::storage::ObjectWriter;
use crate::write::FileWriter;

/// Files a partitioned write keeps open at once (one per partition); past it, the oldest is finished.
const MAX_OPEN_PARTITIONS: usize = 64;

/// A data file being written: its writer, its object's name and its partition values.
pub(super) struct OpenFile {
    writer: FileWriter<ObjectWriter>,
    name: String,
    partition: Vec<PartitionValue>,
}

impl Table {
    /// Writes `batches` into new data files (published, not yet committed). In a partitioned
    /// table each file holds the rows of one partition: a batch is split by its partition values
    /// and each piece goes to its partition's open file (at most [`MAX_OPEN_PARTITIONS`] open at
    /// once; past it the oldest is finished and a later row of its partition starts another).
    pub(super) fn write_files(
        &self,
        schema: &SchemaRef,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Result<Vec<FileRef>> {
        let partition_columns = self.partition_indices(schema)?;
        let mut out = Vec::new();
        let mut open: Vec<OpenFile> = Vec::new();
        for batch in batches {
            if batch.schema().fields() != schema.fields() {
                return Err(Error::SchemaMismatch(format!(
                    "table {} has fields {:?}, the batch {:?}",
                    self.name,
                    schema.fields(),
                    batch.schema().fields()
                )));
            }
            let pieces = if partition_columns.is_empty() {
                vec![(Vec::new(), batch)]
            } else {
                partition::split(&batch, &partition_columns)?
            };
            for (values, piece) in pieces {
                let at = match open.iter().position(|f| f.partition == values) {
                    Some(i) => i,
                    None => {
                        if open.len() >= MAX_OPEN_PARTITIONS {
                            out.push(self.finish_file(open.remove(0))?);
                        }
                        open.push(self.start_file(schema, values)?);
                        open.len() - 1
                    }
                };
                let w = &mut open[at].writer;
                w.write(&piece)?;
                if w.num_rows() >= self.write.file_rows as u64 {
                    out.push(self.finish_file(open.remove(at))?);
                }
            }
        }
        for f in open {
            out.push(self.finish_file(f)?);
        }
        Ok(out)
    }

    /// The field indices of the table's partition columns in `schema`.
    fn partition_indices(&self, schema: &SchemaRef) -> Result<Vec<usize>> {
        self.partition_by()
            .iter()
            .map(|c| {
                schema
                    .index_of(c)
                    .map_err(|_| Error::SchemaMismatch(format!("table {} has no partition column {c:?}", self.name)))
            })
            .collect()
    }

    /// Starts a data file of partition `values`: a new object named by the file's random id,
    /// streamed to storage (a multipart upload once it outgrows one part) and published whole by
    /// [`finish_file`](Self::finish_file).
    pub(super) fn start_file(&self, schema: &SchemaRef, values: Vec<PartitionValue>) -> Result<OpenFile> {
        // A fresh random name (the file id is the writer's own, chosen inside it).
        let name = format!("{}.cvlt", new_id()?);
        let sink = self.storage.writer(&Self::data_object(&name))?;
        let writer = FileWriter::try_new(sink, schema.clone(), self.writer_options())?;
        Ok(OpenFile {
            writer,
            name,
            partition: values,
        })
    }

    pub(super) fn finish_file(&self, f: OpenFile) -> Result<FileRef> {
        let OpenFile {
            writer,
            name,
            partition,
        } = f;
        let (meta, sink) = writer.close_into_sink()?;
        sink.finish()?;
        Ok(FileRef {
            file_id: meta.file_id,
            name,
            len: meta.file_len,
            rows: meta.num_rows,
            footer_digest: meta.footer_digest,
            key_ids: meta.key_ids,
            key_version: meta.key_version,
            partition,
        })
    }

    /// Refuses to commit files written under settings the table has moved away from (a migration
    /// ran since this project handle was opened).
    fn check_settings_current(&self, head: &Manifest) -> Result<()> {
        if head.algorithm != self.project.settings().algorithm {
            return Err(Error::InvalidArgument(format!(
                "the project's encryption settings changed (table {} is now {}); reopen the project",
                self.name, head.algorithm
            )));
        }
        Ok(())
    }

    /// Appends `batches` as one atomic commit (one or more new files).
    pub fn append(&self, batches: impl IntoIterator<Item = RecordBatch>) -> Result<CommitInfo> {
        self.write_and_commit("append", batches, false)
    }

    /// Replaces the table's content with `batches`, atomically.
    pub fn overwrite(&self, batches: impl IntoIterator<Item = RecordBatch>) -> Result<CommitInfo> {
        self.write_and_commit("overwrite", batches, true)
    }

    /// [`append`](Self::append) (or [`overwrite`](Self::overwrite)) of one statement that may be
    /// run again (a retried distributed task): its commit carries `tag`, and if a commit of the
    /// same statement is already in the chain (after `tag.since_version`), that commit is
    /// returned and nothing is written.
    #[cfg_attr(not(feature = "datafusion"), allow(dead_code))]
    pub(crate) fn write_once(
        &self,
        batches: impl IntoIterator<Item = RecordBatch>,
        overwrite: bool,
        tag: &CommitTag,
    ) -> Result<CommitInfo> {
        let op = format!(
            "{} (statement {})",
            if overwrite { "overwrite" } else { "append" },
            tag.statement
        );
        if let Some(done) = self.find_commit(&op, tag.since_version)? {
            return Ok(done);
        }
        self.write_and_commit(&op, batches, overwrite)
    }

    /// The commit whose operation is `op` among versions after `since`, if any.
    #[cfg_attr(not(feature = "datafusion"), allow(dead_code))]
    fn find_commit(&self, op: &str, since: u64) -> Result<Option<CommitInfo>> {
        let head = self.head()?;
        let oldest = head.oldest_retained.max(1).max(since.saturating_add(1));
        let mut m = head;
        while m.version >= oldest {
            let prev = if m.version > 1 {
                Some(self.snapshot(m.version - 1)?)
            } else {
                None
            };
            if m.operation == op {
                let before: HashSet<&str> = prev
                    .iter()
                    .flat_map(|p| p.files.iter().map(|f| f.name.as_str()))
                    .collect();
                let added: Vec<&FileRef> = m.files.iter().filter(|f| !before.contains(f.name.as_str())).collect();
                return Ok(Some(CommitInfo {
                    version: m.version,
                    files_added: added.len(),
                    rows_added: added.iter().map(|f| f.rows).sum(),
                }));
            }
            match prev {
                Some(p) => m = p,
                None => break,
            }
        }
        Ok(None)
    }

    /// Writes `batches` into new files, then commits them added to (or replacing) the head's files.
    fn write_and_commit(
        &self,
        op: &str,
        batches: impl IntoIterator<Item = RecordBatch>,
        replace: bool,
    ) -> Result<CommitInfo> {
        let (base, head) = self.head_with_base()?;
        let schema = head.schema.clone();
        let files = self.write_files(&schema, batches)?;
        let m = self.commit_from(op, Some((base, head)), |head| {
            self.check_settings_current(head)?;
            if head.schema.fields() != schema.fields() {
                return Err(Error::SchemaMismatch(format!(
                    "table {} changed its schema during the {op}",
                    self.name
                )));
            }
            let mut next = head.clone();
            if replace {
                next.files.clear();
            }
            next.files.extend(files.iter().cloned());
            Ok(next)
        })?;
        Ok(CommitInfo {
            version: m.version,
            files_added: files.len(),
            rows_added: files.iter().map(|f| f.rows).sum(),
        })
    }

    /// Rewrites small files into files of about `file_rows` rows, in one commit. Returns the
    /// version committed, or `None` if there was nothing to compact.
    pub fn compact(&self) -> Result<Option<u64>> {
        let head = self.head()?;
        let small: Vec<FileRef> = head
            .files
            .iter()
            .filter(|f| f.rows < self.write.file_rows as u64 / 2)
            .cloned()
            .collect();
        if small.len() < 2 {
            return Ok(None);
        }
        let schema = head.schema.clone();
        let mut batches = Vec::new();
        for f in &small {
            batches.extend(self.read_checked_file(f, &head)?);
        }
        let new_files = self.write_files(&schema, batches)?;
        let gone: HashSet<FileId> = small.iter().map(|f| f.file_id).collect();
        let m = self.commit("compact", |head| {
            if head.schema.fields() != schema.fields()
                || !gone.iter().all(|id| head.files.iter().any(|f| f.file_id == *id))
            {
                return Err(Error::InvalidArgument(
                    "the table changed during compaction; run it again".into(),
                ));
            }
            let mut next = head.clone();
            next.files.retain(|f| !gone.contains(&f.file_id));
            next.files.extend(new_files.iter().cloned());
            Ok(next)
        })?;
        Ok(Some(m.version))
    }
}

/// The identity of a statement's commit, for a statement that may run more than once (a retried
/// distributed task): a random statement id, and the table version before the statement was
/// planned (its commit, if made, is newer).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "datafusion"), allow(dead_code))]
pub(crate) struct CommitTag {
    pub(crate) statement: String,
    pub(crate) since_version: u64,
}
