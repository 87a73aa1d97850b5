//! Writing colvault files: [`FileWriter`] and its [`WriterOptions`].

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataWriter};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use rayon::prelude::*;

use crate::access::KeyAccess;
use crate::crypto::{
    commitment, default_provider, derive_key, random_array, Algorithm, ChunkKind, ChunkSealer, CipherProvider, FileId,
    Purpose, SecretKey,
};
use crate::error::{Error, Result};
use crate::format::envelope::{Envelope, KeyEntry, KeyRole};
use crate::format::footer::{body_aad, seal_body, sealed_body_len, ChunkEntry, FooterBody, SealedStats};
use crate::format::stats;
use crate::format::{MAGIC, TRAILER_LEN, VERSION_MINOR};
use crate::kms::KeyId;

/// The codec of column chunk pages (compressed before they are encrypted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// Snappy.
    Snappy,
    /// LZ4 (raw block format).
    Lz4,
    /// Zstandard at the given level (1 to 22).
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(1)
    }
}

impl Compression {
    fn to_parquet(self) -> Result<PqCompression> {
        Ok(match self {
            Compression::None => PqCompression::UNCOMPRESSED,
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Lz4 => PqCompression::LZ4_RAW,
            Compression::Zstd(l) => PqCompression::ZSTD(
                ZstdLevel::try_new(l)
                    .map_err(|_| Error::InvalidArgument(format!("zstd level {l} is not in 1..=22")))?,
            ),
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;
    /// `none`, `snappy`, `lz4`, `zstd` or `zstd:LEVEL`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Ok(match s.as_str() {
            "none" | "uncompressed" => Compression::None,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd(1),
            other => match other.strip_prefix("zstd:").and_then(|l| l.parse().ok()) {
                Some(l) => Compression::Zstd(l),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown compression {s:?}: expected none, snappy, lz4, zstd or zstd:LEVEL"
                    )))
                }
            },
        })
    }
}

/// Options of a [`FileWriter`].
///
/// There is no default: start from [`WriterOptions::encrypted`] (an algorithm, key access and the
/// CMK that wraps each file's data key) or from [`WriterOptions::plaintext`], which says in the
/// code that the data is stored without encryption. Either gives a [`WriterOptionsBuilder`] for
/// the rest (codec, row groups, column keys ...).
///
/// ```compile_fail,E0599
/// // No default that silently means plaintext.
/// let opts = colvault::WriterOptions::default();
/// ```
/// ```compile_fail,E0599
/// // No builder without a choice about encryption either.
/// let opts = colvault::WriterOptions::builder().build();
/// ```
#[derive(Clone, Debug)]
pub struct WriterOptions {
    algorithm: Algorithm,
    allow_legacy_rc4: bool,
    keys: Option<(KeyAccess, KeyId)>,
    column_keys: Vec<(String, KeyId)>,
    compression: Compression,
    max_row_group_rows: usize,
    max_row_group_bytes: usize,
    dictionary: bool,
    statistics: bool,
    #[cfg(feature = "insecure-test-vectors")]
    deterministic: Option<DeterministicKeys>,
    provider: Option<&'static dyn CipherProvider>,
}

/// Fixed key material for reproducible test vectors (cargo feature `insecure-test-vectors`, absent
/// from default builds). Never use it for real data: it reuses keys and nonces by design.
#[cfg(feature = "insecure-test-vectors")]
#[derive(Clone, Debug)]
pub struct DeterministicKeys {
    /// The file id.
    pub file_id: FileId,
    /// The file DEK.
    pub dek: SecretKey,
    /// The wrapped DEK to record (made once, with the real KMS path).
    pub wrapped_dek: Vec<u8>,
    /// The footer nonce.
    pub footer_nonce: [u8; 12],
}

/// A fresh DEK and its wrapped form.
type WrappedDek = (SecretKey, Vec<u8>);

/// Builds [`WriterOptions`]; made by [`WriterOptions::encrypted`] or [`WriterOptions::plaintext`].
///
/// ```
/// use colvault::{Algorithm, Compression, WriterOptions};
/// let opts = WriterOptions::plaintext()
///     .compression(Compression::Snappy)
///     .max_row_group_rows(100_000)
///     .build();
/// assert_eq!(opts.algorithm(), Algorithm::None);
/// ```
#[derive(Clone, Debug)]
pub struct WriterOptionsBuilder(WriterOptions);

impl WriterOptions {
    fn with(algorithm: Algorithm, keys: Option<(KeyAccess, KeyId)>) -> WriterOptionsBuilder {
        WriterOptionsBuilder(WriterOptions {
            algorithm,
            allow_legacy_rc4: false,
            keys,
            column_keys: Vec::new(),
            compression: Compression::default(),
            max_row_group_rows: 1 << 20,
            max_row_group_bytes: 128 << 20,
            dictionary: true,
            statistics: true,
            #[cfg(feature = "insecure-test-vectors")]
            deterministic: None,
            provider: None,
        })
    }

    /// Files encrypted with `algorithm`, each file's fresh data key wrapped under `cmk` through
    /// `access`. `algorithm` must be an encryption algorithm (not [`Algorithm::None`]: a writer
    /// refuses that; say [`plaintext`](Self::plaintext) instead). The rest are the defaults of
    /// [`plaintext`](Self::plaintext).
    pub fn encrypted(algorithm: Algorithm, access: KeyAccess, cmk: KeyId) -> WriterOptionsBuilder {
        Self::with(algorithm, Some((access, cmk)))
    }

    /// Files stored without encryption (BLAKE3 checksums catch accidental corruption only), with
    /// the defaults: zstd level 1, row groups of 1,048,576 rows or 128 MiB, dictionary encoding and
    /// chunk statistics on.
    pub fn plaintext() -> WriterOptionsBuilder {
        Self::with(Algorithm::None, None)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The compression codec.
    pub fn compression(&self) -> Compression {
        self.compression
    }
    /// Maximum rows per row group.
    pub fn max_row_group_rows(&self) -> usize {
        self.max_row_group_rows
    }

    /// The file id, and the file's DEK with its wrapped form when encrypted (the CMK it is
    /// wrapped under is recorded in `key_ids`).
    fn file_keys(&self, key_ids: &mut Vec<KeyId>) -> Result<(FileId, Option<WrappedDek>)> {
        #[cfg(feature = "insecure-test-vectors")]
        if let Some(d) = &self.deterministic {
            let keys = self
                .algorithm
                .is_encrypted()
                .then(|| (d.dek.clone(), d.wrapped_dek.clone()));
            return Ok((d.file_id, keys));
        }
        let file_id = FileId::random()?;
        if !self.algorithm.is_encrypted() {
            return Ok((file_id, None));
        }
        let (access, cmk) = self.keys.as_ref().ok_or_else(|| Error::KeysRequired {
            algorithm: self.algorithm.to_string(),
        })?;
        key_ids.push(cmk.clone());
        Ok((file_id, Some(access.new_data_key(cmk, &file_id, None)?)))
    }

    /// The nonce of the footer: fresh and random for every file.
    fn footer_nonce(&self) -> Result<[u8; 12]> {
        #[cfg(feature = "insecure-test-vectors")]
        if let Some(d) = &self.deterministic {
            return Ok(d.footer_nonce);
        }
        random_array()
    }
}

impl WriterOptionsBuilder {
    /// Allows writing RC4 (legacy; RFC 7465). Without it an RC4 writer is refused.
    pub fn allow_legacy_rc4(mut self, allow: bool) -> Self {
        self.0.allow_legacy_rc4 = allow;
        self
    }
    /// Gives the top-level field `field` its own CMK: an independent DEK wrapped under `cmk`.
    pub fn column_key(mut self, field: impl Into<String>, cmk: KeyId) -> Self {
        self.0.column_keys.push((field.into(), cmk));
        self
    }
    /// The page codec.
    pub fn compression(mut self, c: Compression) -> Self {
        self.0.compression = c;
        self
    }
    /// Maximum rows per row group (at least 1).
    pub fn max_row_group_rows(mut self, n: usize) -> Self {
        self.0.max_row_group_rows = n.max(1);
        self
    }
    /// Maximum encoded bytes buffered per row group before it is flushed (at least 1 MiB).
    pub fn max_row_group_bytes(mut self, n: usize) -> Self {
        self.0.max_row_group_bytes = n.max(1 << 20);
        self
    }
    /// Dictionary encoding on or off.
    pub fn dictionary(mut self, on: bool) -> Self {
        self.0.dictionary = on;
        self
    }
    /// Column chunk statistics on or off (they allow row-group pruning).
    pub fn statistics(mut self, on: bool) -> Self {
        self.0.statistics = on;
        self
    }
    /// The AES implementation that seals this file's chunks, instead of the process-wide
    /// [`default_provider`]. Every provider writes the same bytes; see [`crate::crypto::ring`].
    ///
    /// ```
    /// use colvault::{crypto::ring::Ring, WriterOptions};
    /// let opts = WriterOptions::plaintext().cipher_provider(&Ring).build();
    /// ```
    pub fn cipher_provider(mut self, provider: &'static dyn CipherProvider) -> Self {
        self.0.provider = Some(provider);
        self
    }
    /// Test vectors only (cargo feature `insecure-test-vectors`, absent from default builds):
    /// fixed file id, DEK, wrapped DEK and footer nonce, so output is reproducible byte for byte.
    /// This reuses (key, nonce) pairs across files by design.
    #[cfg(feature = "insecure-test-vectors")]
    #[doc(hidden)]
    pub fn insecure_deterministic_for_test_vectors(mut self, algorithm: Algorithm, keys: DeterministicKeys) -> Self {
        self.0.algorithm = algorithm;
        self.0.deterministic = Some(keys);
        self
    }
    /// The options.
    pub fn build(self) -> WriterOptions {
        self.0
    }
}

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

/// A `Write` that parquet's file writer writes the virtual plaintext file into; colvault seals
/// and writes each chunk out of it as soon as the chunk is whole (see [`VirtualBuf`]).
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rows buffered before they are encoded (see [`FileWriter`]'s `pending`).
const SLAB_ROWS: usize = 256 * 1024;
/// Bytes of Arrow data buffered before they are encoded, whatever the row count.
const SLAB_BYTES: usize = 32 << 20;

fn pq_err(e: parquet::errors::ParquetError) -> Error {
    Error::Parquet(e.to_string())
}

/// A row group whose column encoders are closed, waiting to be sealed and written.
struct ClosedRowGroup {
    index: u32,
    chunks: Vec<ArrowColumnChunk>,
}

/// Length of parquet's magic at the start of the virtual file (colvault does not store it).
const PARQUET_MAGIC_LEN: usize = 4;

/// Where a writer's bytes go: the parquet file writer that lays the chunks out in the virtual
/// plaintext file, the buffer it writes into, and the sink that gets them sealed.
struct Output<W> {
    pq: Option<SerializedFileWriter<SharedBuf>>,
    virt: VirtualBuf,
    file: FileSink<W>,
}

/// What parquet has written of the virtual file and colvault has not yet sealed: chunks are
/// sealed in place and written as soon as they are whole in it, and it is emptied (keeping its
/// allocation) whenever everything in it is written, so it holds a chunk or two.
struct VirtualBuf {
    shared: SharedBuf,
    /// Virtual offset of the buffer's first byte.
    start: u64,
    /// Bytes at the buffer's front already sealed and written (at first, parquet's magic).
    consumed: usize,
}

/// The sink, how much of the file is written, and the chunks written so far.
struct FileSink<W> {
    sink: W,
    position: u64,
    chunks: Vec<ChunkEntry>,
}

/// A chunk appended to the virtual file, not yet sealed: leaf, virtual start, length.
type Waiting = (usize, u64, usize);

impl<W: Write> Output<W> {
    /// Appends a closed row group to the virtual file, chunk by chunk; each chunk is sealed in
    /// place (on rayon when `parallel`, else on this thread) and written with its tags as soon as
    /// it is whole in the buffer (parquet's writer may hold back its last few KiB until the next
    /// chunk or the row group's end).
    fn write_row_group(&mut self, group: ClosedRowGroup, sealers: &[Arc<ChunkSealer>], parallel: bool) -> Result<()> {
        let rg = group.index;
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut expected: Vec<(u64, u64)> = Vec::with_capacity(group.chunks.len());
        let pq = self.pq.as_mut().ok_or(Error::Poisoned)?;
        let mut rgw = pq.next_row_group().map_err(pq_err)?;
        let mut next = self.virt.start + self.virt.consumed as u64;
        for (leaf, chunk) in group.chunks.into_iter().enumerate() {
            let len = usize::try_from(chunk.close().metadata.compressed_size())
                .map_err(|_| Error::Parquet("a column chunk of negative length".into()))?;
            chunk.append_to_row_group(&mut rgw).map_err(pq_err)?;
            waiting.push_back((leaf, next, len));
            expected.push((next, len as u64));
            next += len as u64;
            self.virt
                .seal_whole(&mut waiting, &mut self.file, sealers, rg, parallel)?;
        }
        let rg_meta = rgw.close().map_err(pq_err)?;
        pq.flush().map_err(|e| Error::io("encoding a row group", e))?;
        self.virt
            .seal_whole(&mut waiting, &mut self.file, sealers, rg, parallel)?;
        let laid_out: Vec<(u64, u64)> = rg_meta.columns().iter().map(|c| c.byte_range()).collect();
        if !waiting.is_empty() || laid_out != expected {
            return Err(Error::Parquet(format!(
                "row group {rg}: parquet laid its chunks out at {laid_out:?}, colvault expected {expected:?}"
            )));
        }
        Ok(())
    }
}

impl VirtualBuf {
    /// Seals and writes, in order, every waiting chunk that is whole in the buffer.
    fn seal_whole<W: Write>(
        &mut self,
        waiting: &mut VecDeque<Waiting>,
        file: &mut FileSink<W>,
        sealers: &[Arc<ChunkSealer>],
        rg: u32,
        parallel: bool,
    ) -> Result<()> {
        let mut bytes = self.shared.0.lock().map_err(|_| Error::Poisoned)?;
        while let Some(&(leaf, at, len)) = waiting.front() {
            if bytes.len() < self.consumed + len {
                break;
            }
            let here = self.start + self.consumed as u64;
            if at != here {
                return Err(Error::Parquet(format!(
                    "column chunk {leaf} is at {here}, colvault expected it at {at}"
                )));
            }
            let chunk = &mut bytes[self.consumed..self.consumed + len];
            let sealer = &sealers[leaf];
            let tags = if parallel {
                sealer.seal_detached(rg, ChunkKind::Data, chunk)?
            } else {
                sealer.seal_detached_here(rg, ChunkKind::Data, chunk)?
            };
            file.write_chunk(chunk, &tags)?;
            self.consumed += len;
            waiting.pop_front();
        }
        if !bytes.is_empty() && self.consumed >= bytes.len() {
            self.start += bytes.len() as u64;
            self.consumed -= bytes.len();
            bytes.clear();
        }
        Ok(())
    }
}

impl<W: Write> FileSink<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.sink.write_all(bytes).map_err(|e| Error::io("writing a file", e))?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Writes a sealed chunk and its tags, and records it for the footer.
    fn write_chunk(&mut self, sealed: &[u8], tags: &[u8]) -> Result<()> {
        let offset = self.position;
        self.write(sealed)?;
        self.write(tags)?;
        self.chunks.push(ChunkEntry {
            offset,
            len: self.position - offset,
            tags_digest: *blake3::hash(tags).as_bytes(),
        });
        Ok(())
    }
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

    fn buffered_bytes(&self) -> usize {
        self.writers.iter().map(|w| w.get_estimated_total_bytes()).sum()
    }

    /// Encodes the pending slab: every leaf column by its own writer, in parallel.
    fn encode_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.pending_bytes = 0;
        let n = self.writers.len();
        let mut per_leaf: Vec<Vec<ArrowLeafColumn>> = (0..n).map(|_| Vec::new()).collect();
        // Arrow bytes of each leaf's field in the slab: the largest leaves are started first
        // (longest-processing-time first), so one big column does not finish alone at the end.
        let mut size = vec![0usize; n];
        for batch in &batches {
            let mut leaf = 0;
            for (field, col) in self.schema.fields().iter().zip(batch.columns()) {
                let bytes = col.to_data().get_slice_memory_size().unwrap_or(0);
                for l in compute_leaves(field, col).map_err(pq_err)? {
                    per_leaf[leaf].push(l);
                    size[leaf] += bytes;
                    leaf += 1;
                }
            }
        }
        drop(batches);
        let mut jobs: Vec<(usize, &mut ArrowColumnWriter, Vec<ArrowLeafColumn>)> = size
            .into_iter()
            .zip(self.writers.iter_mut())
            .zip(per_leaf)
            .map(|((s, w), l)| (s, w, l))
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.0));
        let Some(group) = self.closed.take() else {
            return jobs
                .into_par_iter()
                .with_max_len(1)
                .try_for_each(|(_, w, leaves)| leaves.iter().try_for_each(|l| w.write(l)))
                .map_err(pq_err);
        };
        // The previous row group is written by this thread (serially: rayon's threads are busy
        // with the encoders) while the encoders run as rayon tasks.
        let failed = Mutex::new(None);
        let (out, sealers) = (&mut self.out, &self.sealers);
        let written = rayon::in_place_scope(|scope| {
            for (_, w, leaves) in jobs {
                let failed = &failed;
                scope.spawn(move |_| {
                    if let Err(e) = leaves.iter().try_for_each(|l| w.write(l)) {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    }
                });
            }
            out.write_row_group(group, sealers, false)
        });
        written?;
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(pq_err(e)),
            None => Ok(()),
        }
    }

    /// Closes the current row group (if it has rows): closes its column encoders in parallel and
    /// keeps the chunks to be written while the next row group encodes (or by `finish`).
    fn flush_row_group(&mut self) -> Result<()> {
        self.encode_pending()?;
        if self.rows_in_group == 0 {
            return Ok(());
        }
        let rg = self.row_groups;
        let next = self.factory.create_column_writers(rg + 1).map_err(pq_err)?;
        let writers = std::mem::replace(&mut self.writers, next);
        let chunks = writers
            .into_par_iter()
            .map(|w| w.close())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(pq_err)?;
        // Two row groups closed with no slab encoded between them: the older one goes now.
        if let Some(older) = self.closed.take() {
            self.out.write_row_group(older, &self.sealers, true)?;
        }
        self.closed = Some(ClosedRowGroup {
            index: rg as u32,
            chunks,
        });
        self.row_groups += 1;
        self.rows_in_group = 0;
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

    /// Moves the statistics of columns with their own key out of the Parquet metadata (which is
    /// sealed under the footer key) into blobs sealed under the column's key; level histograms and
    /// byte-array sizes of those columns, which also reveal something of the values, are dropped.
    fn seal_column_key_stats(&self, metadata: ParquetMetaData) -> Result<(ParquetMetaData, Vec<SealedStats>)> {
        if !self.own_key.iter().any(|&o| o) {
            return Ok((metadata, Vec::new()));
        }
        let mut sealed = Vec::new();
        let metadata = stats::map_column_chunks(metadata, |r, leaf, col| {
            if !self.own_key[leaf] {
                return Ok(None);
            }
            if let Some(st) = col.statistics() {
                let mut blob = stats::encode(st);
                self.sealers[leaf].seal(r as u32, ChunkKind::Metadata, &mut blob)?;
                sealed.push(SealedStats {
                    row_group: r as u32,
                    leaf: leaf as u32,
                    sealed: blob,
                });
            }
            col.clone()
                .into_builder()
                .clear_statistics()
                .set_unencoded_byte_array_data_bytes(None)
                .set_repetition_level_histogram(None)
                .set_definition_level_histogram(None)
                .build()
                .map(Some)
                .map_err(pq_err)
        })?;
        Ok((metadata, sealed))
    }

    fn finish(&mut self) -> Result<FileMetadata> {
        self.flush_row_group()?;
        if let Some(last) = self.closed.take() {
            self.out.write_row_group(last, &self.sealers, true)?;
        }
        let pq = self.out.pq.take().ok_or(Error::Poisoned)?;
        let metadata = pq.close().map_err(pq_err)?;
        let (metadata, sealed_stats) = self.seal_column_key_stats(metadata)?;
        let mut pq_bytes = Vec::new();
        ParquetMetaDataWriter::new(&mut pq_bytes, &metadata)
            .finish()
            .map_err(pq_err)?;
        // Drop parquet's 8-byte tail (metadata length and magic): colvault frames it itself.
        pq_bytes.truncate(pq_bytes.len().saturating_sub(8));

        let body = FooterBody {
            parquet_metadata: pq_bytes,
            arrow_schema: std::mem::take(&mut self.arrow_schema),
            row_groups: self.row_groups as u32,
            leaves: self.leaf_field.len() as u32,
            chunks: std::mem::take(&mut self.out.file.chunks),
            sealed_stats,
        };
        let alg = self.opts.algorithm;
        let footer_nonce = match alg.is_encrypted() {
            true => self.opts.footer_nonce()?,
            false => [0u8; 12],
        };
        let key_version = match self.key_entries.first() {
            Some(k) => crate::kms::DataKeyEnvelope::from_bytes(&k.wrapped)?.key_version(),
            None => 0,
        };
        let envelope = Envelope {
            minor: VERSION_MINOR,
            algorithm: alg,
            file_id: self.file_id,
            kms: match self.key_entries.first() {
                Some(k) => crate::kms::DataKeyEnvelope::from_bytes(&k.wrapped)?
                    .kms_name()
                    .to_string(),
                None => String::new(),
            },
            keys: std::mem::take(&mut self.key_entries),
            footer_nonce,
        }
        .encode();
        let mut sealed = body.encode();
        let sealed_len = sealed_body_len(alg, sealed.len());
        let file_len = self.out.file.position + envelope.len() as u64 + sealed_len as u64 + TRAILER_LEN as u64;
        let aad = body_aad(&envelope, file_len, sealed_len as u64);
        let footer_key = match &self.file_dek {
            Some(dek) => Some(derive_key(dek, Purpose::FooterKey, &[&self.file_id.0])?),
            None => None,
        };
        seal_body(footer_key.as_ref(), &footer_nonce, &aad, &mut sealed)?;
        debug_assert_eq!(sealed.len(), sealed_len);
        let mut trailer = Vec::with_capacity(TRAILER_LEN);
        trailer.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
        trailer.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        trailer.extend_from_slice(&MAGIC);
        let mut digest = blake3::Hasher::new();
        for part in [&envelope, &sealed, &trailer] {
            self.out.file.write(part)?;
            digest.update(part);
        }
        self.out
            .file
            .sink
            .flush()
            .map_err(|e| Error::io("flushing a file", e))?;
        debug_assert_eq!(self.out.file.position, file_len);
        Ok(FileMetadata {
            file_id: self.file_id,
            algorithm: alg,
            num_rows: self.num_rows,
            row_groups: self.row_groups,
            file_len,
            footer_digest: *digest.finalize().as_bytes(),
            key_ids: self.key_ids.clone(),
            key_version,
        })
    }
}
