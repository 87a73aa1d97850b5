//! Writing: `INSERT INTO` (a [`DataSink`] committing all of a statement's batches at once) and
//! `CREATE TABLE ... AS SELECT` (a table created with its rows in one commit).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, SendableRecordBatchStream};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::error::to_df;
use super::plan::blocking;
use crate::error::{Error, Result};
use crate::project::Project;
use crate::table::{CommitInfo, CommitTag, Table, TableOptions};

/// What the writer thread receives.
enum Msg {
    Batch(RecordBatch),
    /// All batches were sent: commit.
    End,
}

/// The batches of a statement as the blocking writer sees them. If the statement fails or is
/// dropped before its end, the last item is a batch of no columns, which the table refuses
/// (its schema differs) before anything is committed: the files written so far are left
/// uncommitted, for `vacuum`.
struct Incoming {
    rx: mpsc::Receiver<Msg>,
    done: bool,
}

impl Iterator for Incoming {
    type Item = RecordBatch;
    fn next(&mut self) -> Option<RecordBatch> {
        if self.done {
            return None;
        }
        match self.rx.blocking_recv() {
            Some(Msg::Batch(b)) => Some(b),
            Some(Msg::End) => {
                self.done = true;
                None
            }
            None => {
                self.done = true;
                Some(RecordBatch::new_empty(Arc::new(Schema::empty())))
            }
        }
    }
}

/// The sink of `INSERT INTO` / `INSERT OVERWRITE` on a colvault table.
pub(crate) struct TableSink {
    table: Table,
    schema: SchemaRef,
    overwrite: bool,
}

impl TableSink {
    pub(crate) fn new(table: Table, schema: SchemaRef, overwrite: bool) -> Self {
        TableSink {
            table,
            schema,
            overwrite,
        }
    }
}

impl fmt::Debug for TableSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableSink")
            .field("table", &self.table.name())
            .field("overwrite", &self.overwrite)
            .finish()
    }
}

impl DisplayAs for TableSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let op = if self.overwrite { "overwrite" } else { "append" };
        write!(f, "ColvaultSink: table={}, {op} (one commit)", self.table.name())
    }
}

#[async_trait]
impl DataSink for TableSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(&self, data: SendableRecordBatchStream, _context: &Arc<TaskContext>) -> DfResult<u64> {
        write_stream(self.table.clone(), self.overwrite, None, data).await
    }
}

#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
impl TableSink {
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    pub(crate) fn overwrite(&self) -> bool {
        self.overwrite
    }
}

/// Writes the batches of `data` to `table` (appended, or replacing its rows when `overwrite`), in
/// one commit made after the last batch: a failure or a dropped statement commits nothing. With a
/// `tag`, a statement that already committed (a retried task) commits nothing again and returns
/// what it committed. Returns the rows written.
pub(crate) async fn write_stream(
    table: Table,
    overwrite: bool,
    tag: Option<CommitTag>,
    mut data: SendableRecordBatchStream,
) -> DfResult<u64> {
    let target = {
        let table = table.clone();
        blocking(move || table.head()).await.map_err(to_df)?.schema.clone()
    };
    let (tx, rx) = mpsc::channel::<Msg>(2);
    // The writer starts with the first batch: a statement of no rows commits nothing.
    let mut writer: Option<tokio::task::JoinHandle<Result<CommitInfo>>> = None;
    let mut rx = Some(rx);
    let outcome: Result<()> = async {
        while let Some(batch) = data.next().await {
            let batch = batch.map_err(super::error::from_df)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = conform(&batch, &target, table.name())?;
            if writer.is_none() {
                let (table, tag) = (table.clone(), tag.clone());
                let incoming = Incoming {
                    rx: rx.take().expect("one writer"),
                    done: false,
                };
                writer = Some(tokio::task::spawn_blocking(move || {
                    write(&table, incoming, overwrite, tag.as_ref())
                }));
            }
            // Waits only while the writer is two batches behind.
            if tx.send(Msg::Batch(batch)).await.is_err() {
                // The writer stopped early: its error is reported below.
                break;
            }
        }
        Ok(())
    }
    .await;
    if outcome.is_ok() {
        let _ = tx.send(Msg::End).await;
    }
    drop(tx);
    let committed = match writer {
        Some(w) => Some(
            w.await
                .map_err(|e| Error::InvalidArgument(format!("the colvault writer did not finish: {e}")))
                .and_then(|r| r),
        ),
        None => None,
    };
    outcome.map_err(to_df)?;
    match committed {
        Some(info) => Ok(info.map_err(to_df)?.rows_added),
        None if overwrite => {
            // INSERT OVERWRITE with no rows empties the table, in one commit.
            blocking(move || write(&table, std::iter::empty::<RecordBatch>(), true, tag.as_ref()))
                .await
                .map_err(to_df)?;
            Ok(0)
        }
        None => Ok(0),
    }
}

fn write(
    table: &Table,
    batches: impl IntoIterator<Item = RecordBatch>,
    overwrite: bool,
    tag: Option<&CommitTag>,
) -> Result<CommitInfo> {
    match (tag, overwrite) {
        (Some(tag), _) => table.write_once(batches, overwrite, tag),
        (None, true) => table.overwrite(batches),
        (None, false) => table.append(batches),
    }
}

/// `batch` with the table's schema: the same columns in the same order, cast where DataFusion
/// chose another type (a non-nullable column holding a null is refused).
fn conform(batch: &RecordBatch, target: &SchemaRef, table: &str) -> Result<RecordBatch> {
    if batch.num_columns() != target.fields().len() {
        return Err(Error::SchemaMismatch(format!(
            "table {table} has {} columns, the inserted rows {}",
            target.fields().len(),
            batch.num_columns()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
                    .map_err(|e| Error::SchemaMismatch(format!("column {} of table {table}: {e}", f.name())))
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new(target.clone(), columns)
        .map_err(|e| Error::SchemaMismatch(format!("rows inserted into table {table}: {e}")))
}

/// The colvault type a column of a query result is stored as: string and binary views as their
/// plain types (top level), everything else as it is.
fn storable(field: &Field) -> Field {
    let t = match field.data_type() {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    };
    field.clone().with_data_type(t)
}

/// `CREATE TABLE name AS SELECT ...` (and `CREATE TABLE name (...)`): the table is created in
/// `project` holding `batches`, with `options` (partition columns), in one commit (blocking).
pub(crate) fn create_table_as(
    project: &Project,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    options: TableOptions,
) -> Result<Table> {
    let fields: Vec<Field> = schema.fields().iter().map(|f| storable(f)).collect();
    let target = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let batches = batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| conform(b, &target, name))
        .collect::<Result<Vec<_>>>()?;
    project
        .create_table_from_with(name, target, options, batches)
        .map(|(t, _)| t)
}
