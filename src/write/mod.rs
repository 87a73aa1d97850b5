//! Writing colvault files: [`FileWriter`] and its [`WriterOptions`].

mod encode;
mod footer;
mod options;
mod output;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowSchemaConverter;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;

#[cfg(feature = "insecure-test-vectors")]
pub use options::DeterministicKeys;
pub use options::{Compression, WriterOptions, WriterOptionsBuilder};

use crate::crypto::{commitment, default_provider, Algorithm, ChunkSealer, FileId, SecretKey};
use crate::error::{Error, Result};
use crate::format::envelope::{KeyEntry, KeyRole};
use crate::format::MAGIC;
use crate::kms::KeyId;
use encode::{SLAB_BYTES, SLAB_ROWS};
use output::{ClosedRowGroup, FileSink, Output, SharedBuf, VirtualBuf, PARQUET_MAGIC_LEN};

/// What [`FileWriter::close`] reports about the file it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMetadata {
    /// The file's random id.
    pub file_id: FileId,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Rows written.
    pub num_rows: u64,
    /// Row groups written.
    pub row_groups: usize,
    /// Total file length in bytes.
    pub file_len: u64,
    /// BLAKE3 of everything after the chunks (envelope, sealed body, trailer). It authenticates,
    /// through the footer's chunk table, every chunk tag of the file.
    pub footer_digest: [u8; 32],
    /// The CMKs this file's keys are wrapped under (file key first).
    pub key_ids: Vec<KeyId>,
    /// The version of the file CMK that wraps the file's KEK (0 when not encrypted).
    pub key_version: u32,
}

fn pq_err(e: parquet::errors::ParquetError) -> Error {
    Error::Parquet(e.to_string())
}

/// Writes Arrow record batches into one colvault file.
///
/// Batches stream into per-column Parquet encoders that run in parallel on rayon; when a row group
/// is full its column chunks are closed, sealed in parallel and written, so memory stays at about
/// one row group whatever the file size. A writer that fails is poisoned: nothing more is written
/// with its data key.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch, StringArray};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use colvault::{FileReader, FileWriter, ReaderOptions, WriterOptions};
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("city", DataType::Utf8, true),
/// ]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![
///     Arc::new(Int64Array::from(vec![1, 2, 3])),
///     Arc::new(StringArray::from(vec![Some("Oslo"), None, Some("Lima")])),
/// ])?;
/// let mut out = Vec::new();
/// let mut w = FileWriter::try_new(&mut out, schema, WriterOptions::plaintext().build())?;
/// w.write(&batch)?;
/// let meta = w.close()?;
/// assert_eq!(meta.num_rows, 3);
///
/// let reader = FileReader::open(out, ReaderOptions::plaintext())?;
/// let batches: Vec<_> = reader.scan().build()?.collect::<Result<_, _>>()?;
/// assert_eq!(batches[0], batch);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FileWriter<W: Write> {
    out: Output<W>,
    schema: SchemaRef,
    arrow_schema: Vec<u8>,
    opts: WriterOptions,
    factory: ArrowRowGroupWriterFactory,
    writers: Vec<ArrowColumnWriter>,
    leaf_field: Vec<usize>,
    own_key: Vec<bool>,
    sealers: Vec<Arc<ChunkSealer>>,
    rows_in_group: usize,
    /// Rows accepted but not yet encoded: encoded a slab at a time, each leaf column across the
    /// whole slab in one task, which keeps an encoder's state hot and avoids a barrier per batch.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    /// The last closed row group, not yet written: it is written by the calling thread while
    /// rayon encodes the next slab, so the serial part of a flush overlaps the next row group.
    closed: Option<ClosedRowGroup>,
    row_groups: usize,
    num_rows: u64,
    file_id: FileId,
    file_dek: Option<SecretKey>,
    key_entries: Vec<KeyEntry>,
    key_ids: Vec<KeyId>,
    poisoned: bool,
}

impl<W: Write> std::fmt::Debug for FileWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("file_id", &self.file_id)
            .field("algorithm", &self.opts.algorithm)
            .field("row_groups", &self.row_groups)
            .field("num_rows", &self.num_rows)
            .finish_non_exhaustive()
    }
}

impl<W: Write> FileWriter<W> {
    /// A writer of a file with `schema` into `sink`.
    pub fn try_new(mut sink: W, schema: SchemaRef, opts: WriterOptions) -> Result<Self> {
        let alg = opts.algorithm;
        if alg.is_legacy() && !opts.allow_legacy_rc4 {
            return Err(Error::LegacyAlgorithmRefused);
        }
        if !alg.is_encrypted() && opts.keys.is_some() {
            return Err(Error::InvalidArgument(
                "WriterOptions::encrypted was given the algorithm none: name an encryption algorithm (aes256, aesctr, rc4), or write plaintext explicitly with WriterOptions::plaintext()".into(),
            ));
        }
        if !alg.is_encrypted() && !opts.column_keys.is_empty() {
            return Err(Error::InvalidArgument(
                "column keys need an encryption algorithm".into(),
            ));
        }

        // The Arrow schema is kept in the footer in colvault's own encoding (readers never hand
        // untrusted bytes to arrow-ipc); encoding it first refuses a type colvault cannot store.
        let arrow_schema = crate::format::schema::encode(&schema)?;
        let props = WriterProperties::builder()
            .set_compression(opts.compression.to_parquet()?)
            .set_dictionary_enabled(opts.dictionary)
            .set_statistics_enabled(if opts.statistics {
                EnabledStatistics::Chunk
            } else {
                EnabledStatistics::None
            })
            .set_offset_index_disabled(true)
            .set_created_by("colvault format v1".to_string())
            .build();
        let props = Arc::new(props);
        let parquet_schema = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)
            .map_err(pq_err)?;
        let virtual_buf = SharedBuf::default();
        let pq = SerializedFileWriter::new(virtual_buf.clone(), parquet_schema.root_schema_ptr(), props.clone())
            .map_err(pq_err)?;
        let factory = ArrowRowGroupWriterFactory::new(&pq, schema.clone());
        let writers = factory.create_column_writers(0).map_err(pq_err)?;

        // Which top-level field each leaf belongs to.
        let leaf_field: Vec<usize> = (0..parquet_schema.num_columns())
            .map(|i| parquet_schema.get_column_root_idx(i))
            .collect();

        // Keys: the file DEK, and one DEK per field with its own CMK.
        let mut key_ids = Vec::new();
        let (file_id, file_key) = opts.file_keys(&mut key_ids)?;
        let mut key_entries = Vec::new();
        let mut file_dek = None;
        let mut field_deks: HashMap<usize, SecretKey> = HashMap::new();
        if let Some((dek, wrapped)) = file_key {
            key_entries.push(KeyEntry {
                role: KeyRole::File,
                wrapped,
                commitment: commitment(&dek)?,
            });
            file_dek = Some(dek);
            for (name, cmk) in &opts.column_keys {
                let idx = schema
                    .index_of(name)
                    .map_err(|_| Error::InvalidArgument(format!("column key for unknown field {name:?}")))?;
                let access = &opts
                    .keys
                    .as_ref()
                    .ok_or_else(|| Error::InvalidArgument("column keys need key access".into()))?
                    .0;
                let (dek, wrapped) = access.new_data_key(cmk, &file_id, Some(idx as u32))?;
                key_entries.push(KeyEntry {
                    role: KeyRole::Column(idx as u32),
                    wrapped,
                    commitment: commitment(&dek)?,
                });
                key_ids.push(cmk.clone());
                field_deks.insert(idx, dek);
            }
        }
        let none_key = SecretKey::from_slice(&[0u8; 32])?;
        let provider = opts.provider.unwrap_or_else(default_provider);
        let sealers = leaf_field
            .iter()
            .enumerate()
            .map(|(leaf, field)| {
                let dek = field_deks.get(field).or(file_dek.as_ref()).unwrap_or(&none_key);
                ChunkSealer::for_file(provider, alg, dek, file_id, leaf as u32).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;

        let own_key = leaf_field.iter().map(|f| field_deks.contains_key(f)).collect();
        sink.write_all(&MAGIC).map_err(|e| Error::io("writing a file", e))?;
        Ok(FileWriter {
            arrow_schema,
            out: Output {
                pq: Some(pq),
                virt: VirtualBuf {
                    shared: virtual_buf,
                    start: 0,
                    consumed: PARQUET_MAGIC_LEN,
                },
                file: FileSink {
                    sink,
                    position: MAGIC.len() as u64,
                    chunks: Vec::new(),
                },
            },
            schema,
            opts,
            factory,
            writers,
            leaf_field,
            own_key,
            sealers,
            rows_in_group: 0,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            closed: None,
            row_groups: 0,
            num_rows: 0,
            file_id,
            file_dek,
            key_entries,
            key_ids,
            poisoned: false,
        })
    }

    /// The schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The file's id.
    pub fn file_id(&self) -> FileId {
        self.file_id
    }

    /// Rows written so far.
    pub fn num_rows(&self) -> u64 {
        self.num_rows
    }

    /// Bytes written to the sink so far. A closed row group is written while the next one is
    /// encoded, so until [`close`](Self::close) this can lag by one row group.
    pub fn bytes_written(&self) -> u64 {
        self.out.file.position
    }

    fn guard<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// Writes a batch. Its schema must equal the writer's (field names, types, nullability).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if batch.schema().fields() != self.schema.fields() {
            return Err(Error::SchemaMismatch(format!(
                "the batch has fields {:?}, the file {:?}",
                batch.schema().fields(),
                self.schema.fields()
            )));
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            let room = self.opts.max_row_group_rows - self.rows_in_group;
            let take = room.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, take);
            self.pending_bytes += slice
                .columns()
                .iter()
                .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
                .sum::<usize>();
            self.pending_rows += take;
            self.pending.push(slice);
            self.rows_in_group += take;
            self.num_rows += take as u64;
            offset += take;
            if self.pending_rows >= SLAB_ROWS || self.pending_bytes >= SLAB_BYTES {
                let r = self.encode_pending();
                self.guard(r)?;
            }
            if self.rows_in_group >= self.opts.max_row_group_rows
                || self.buffered_bytes() >= self.opts.max_row_group_bytes
            {
                let r = self.flush_row_group();
                self.guard(r)?;
            }
        }
        Ok(())
    }

    /// Flushes the last row group, writes the footer and trailer, and returns the file's metadata.
    /// The sink is flushed but not synced; durability is the caller's (tables sync and rename).
    pub fn close(mut self) -> Result<FileMetadata> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let r = self.finish();
        self.guard(r)
    }

    /// [`close`](Self::close), handing back the sink (for instance to sync a file).
    pub fn close_into_sink(mut self) -> Result<(FileMetadata, W)> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let meta = self.finish()?;
        Ok((meta, self.out.file.sink))
    }
}
