//! Reading colvault files: [`FileReader`], scans with projection, row-group selection and pruning.

mod batches;
mod chunks;
mod pool;
mod scan;

pub use batches::{BatchReader, BatchStream};
#[cfg(feature = "ballista")]
pub(crate) use scan::row_range_fits;
pub use scan::{CmpOp, Predicate, ScanBuilder};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::access::KeyAccess;
use crate::crypto::{
    derive_key, plaintext_len, verify_commitment, Algorithm, ChunkKind, ChunkOpener, CipherProvider, FileId, Purpose,
    SecretKey,
};
use crate::error::{contain, Error, Result};
use crate::format::envelope::{Envelope, KeyRole};
use crate::format::footer::{body_aad, open_body, FooterBody};
use crate::format::{ReadAt, MAGIC, MAX_BODY_LEN, MAX_ENVELOPE_LEN, TRAILER_LEN};
use crate::kms::KeyId;

/// What a reader expects of a file, and how it reaches keys.
///
/// There is no default: a reader must say what the file has to be, from the authenticated project
/// settings or table manifest, never from the file itself. [`ReaderOptions::encrypted`] names the
/// algorithm and the CMKs the file's keys may be wrapped under; [`ReaderOptions::plaintext`] says
/// the data is not encrypted. A file protected otherwise is refused with
/// [`Error::AlgorithmMismatch`] or [`Error::KeyNotAllowed`] before any of it is trusted, so a file
/// downgraded to `none` or re-keyed under another CMK cannot be slipped to a reader.
///
/// ```
/// use colvault::{Algorithm, FileReader, FileWriter, ReaderOptions, WriterOptions, Error};
/// # use std::sync::Arc;
/// # use arrow::array::{Int64Array, RecordBatch};
/// # use arrow::datatypes::{DataType, Field, Schema};
/// # let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
/// # let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])?;
/// let mut file = Vec::new();
/// let mut w = FileWriter::try_new(&mut file, schema, WriterOptions::plaintext().build())?;
/// w.write(&batch)?;
/// w.close()?;
/// // Read as plaintext: fine.
/// FileReader::open(file.clone(), ReaderOptions::plaintext())?;
/// # let access = colvault::fuzzing::access().clone();
/// # let cmk = colvault::kms::KeyId::new(colvault::fuzzing::FUZZ_KEY)?;
/// // Where AES-256-GCM under `cmk` is expected, the same file is a downgrade and refused.
/// let err = FileReader::open(file, ReaderOptions::encrypted(Algorithm::Aes256Gcm, access, [cmk])).unwrap_err();
/// assert!(matches!(err, Error::AlgorithmMismatch { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```compile_fail,E0599
/// // No default that accepts whatever a file claims.
/// let opts = colvault::ReaderOptions::default();
/// ```
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    expected: Expected,
    provider: Option<&'static dyn CipherProvider>,
}

/// What the file must be.
#[derive(Clone, Debug)]
enum Expected {
    Plaintext,
    Encrypted {
        algorithm: Algorithm,
        access: KeyAccess,
        allowed_cmks: Vec<KeyId>,
    },
}

impl ReaderOptions {
    /// Reads only files encrypted with `algorithm` whose keys (the file key and every column key)
    /// are wrapped under one of `allowed_cmks`, reaching the keys through `access`. Take both from
    /// the authenticated project settings or table manifest: a file naming another algorithm or
    /// key is refused. `algorithm` must not be [`Algorithm::None`] (use
    /// [`plaintext`](Self::plaintext)) and `allowed_cmks` must not be empty; opening a file with
    /// such options fails with [`Error::InvalidArgument`].
    pub fn encrypted(algorithm: Algorithm, access: KeyAccess, allowed_cmks: impl IntoIterator<Item = KeyId>) -> Self {
        ReaderOptions {
            expected: Expected::Encrypted {
                algorithm,
                access,
                allowed_cmks: allowed_cmks.into_iter().collect(),
            },
            provider: None,
        }
    }

    /// Reads only files that are not encrypted (algorithm `none`, checksummed): an encrypted file
    /// is refused, since nothing here can reach its keys.
    pub fn plaintext() -> Self {
        ReaderOptions {
            expected: Expected::Plaintext,
            provider: None,
        }
    }

    /// The AES implementation that opens the chunks, instead of the process-wide
    /// [`default_provider`](crate::crypto::default_provider). Any provider opens any file.
    pub fn cipher_provider(mut self, provider: &'static dyn CipherProvider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The algorithm a file must have.
    pub fn expected_algorithm(&self) -> Algorithm {
        match &self.expected {
            Expected::Plaintext => Algorithm::None,
            Expected::Encrypted { algorithm, .. } => *algorithm,
        }
    }

    /// The provider in use: the one set here, else the process-wide default.
    pub(crate) fn provider(&self) -> &'static dyn CipherProvider {
        self.provider.unwrap_or_else(crate::crypto::default_provider)
    }

    /// Refuses options that cannot describe any file, then a file whose algorithm is not the
    /// expected one; gives the key access and allowed CMKs of an encrypted file.
    fn check(&self, found: Algorithm) -> Result<Option<(&KeyAccess, &[KeyId])>> {
        let keys = match &self.expected {
            Expected::Plaintext => None,
            Expected::Encrypted {
                algorithm,
                access,
                allowed_cmks,
            } => {
                if !algorithm.is_encrypted() {
                    return Err(Error::InvalidArgument(
                        "ReaderOptions::encrypted was given the algorithm none: name the project's encryption algorithm, or read plaintext data with ReaderOptions::plaintext()".into(),
                    ));
                }
                if allowed_cmks.is_empty() {
                    return Err(Error::InvalidArgument(
                        "ReaderOptions::encrypted was given no CMK: name the keys the project's settings or the table's manifest allow".into(),
                    ));
                }
                Some((access, allowed_cmks.as_slice()))
            }
        };
        let expected = self.expected_algorithm();
        if found != expected {
            return Err(Error::AlgorithmMismatch {
                expected: expected.to_string(),
                found: found.to_string(),
            });
        }
        Ok(keys)
    }
}

/// A column's key state inside a reader.
enum ColumnKey {
    File,
    Own { field: usize, entry: usize },
}

/// An open colvault file: its footer authenticated and decoded, its chunks not yet read.
pub struct FileReader {
    source: Arc<dyn ReadAt>,
    envelope: Envelope,
    body: FooterBody,
    metadata: ArrowReaderMetadata,
    leaf_field: Vec<usize>,
    leaf_key: Vec<ColumnKey>,
    file_dek: Option<SecretKey>,
    column_deks: Mutex<HashMap<usize, SecretKey>>,
    opts: ReaderOptions,
    file_len: u64,
    footer_digest: [u8; 32],
}

impl fmt::Debug for FileReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileReader")
            .field("file_id", &self.envelope.file_id)
            .field("algorithm", &self.envelope.algorithm)
            .field("rows", &self.num_rows())
            .field("row_groups", &self.num_row_groups())
            .finish_non_exhaustive()
    }
}

fn pq_err(e: ParquetError) -> Error {
    Error::Parquet(e.to_string())
}

fn read_vec(source: &dyn ReadAt, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    source.read_exact_at(offset, &mut buf)?;
    Ok(buf)
}

/// The parts of a file that can be read without any key: the envelope and the layout.
#[derive(Clone, Debug)]
pub struct EnvelopeInfo {
    /// The decoded envelope.
    pub envelope: Envelope,
    /// Total file length.
    pub file_len: u64,
    /// Length of the sealed footer body.
    pub sealed_body_len: u64,
    /// Bytes taken by chunks.
    pub chunk_bytes: u64,
    /// The trailer.
    pub trailer: [u8; TRAILER_LEN],
}

/// Reads and checks the trailer and envelope of a file, without keys (what `inspect` shows).
pub fn read_envelope(source: &dyn ReadAt) -> Result<(EnvelopeInfo, Vec<u8>)> {
    let file_len = source.len()?;
    let min = (MAGIC.len() + TRAILER_LEN) as u64;
    if file_len < min {
        return Err(Error::NotColvault(format!(
            "{file_len} bytes is shorter than the smallest colvault file"
        )));
    }
    let head = read_vec(source, 0, 4)?;
    let trailer = read_vec(source, file_len - TRAILER_LEN as u64, TRAILER_LEN)?;
    if head != MAGIC || trailer[8..] != MAGIC {
        return Err(Error::NotColvault(
            "wrong magic at the start or end (truncated, or not colvault)".into(),
        ));
    }
    let env_len = u32::from_be_bytes(trailer[0..4].try_into().expect("4 bytes")) as u64;
    let body_len = u32::from_be_bytes(trailer[4..8].try_into().expect("4 bytes")) as u64;
    if env_len as usize > MAX_ENVELOPE_LEN || body_len as usize > MAX_BODY_LEN || env_len + body_len + min > file_len {
        return Err(Error::integrity(format!(
            "trailer (envelope {env_len} and body {body_len} bytes do not fit a {file_len}-byte file)"
        )));
    }
    let env_start = file_len - TRAILER_LEN as u64 - body_len - env_len;
    let env_bytes = read_vec(source, env_start, env_len as usize)?;
    let envelope = Envelope::decode(&env_bytes)?;
    Ok((
        EnvelopeInfo {
            envelope,
            file_len,
            sealed_body_len: body_len,
            chunk_bytes: env_start - MAGIC.len() as u64,
            trailer: trailer.as_slice().try_into().expect("12 bytes"),
        },
        env_bytes,
    ))
}

/// Opens the sealed statistics of the columns whose keys were unwrapped and puts them back into the
/// Parquet metadata.
fn restore_stats(
    pq: ParquetMetaData,
    body: &FooterBody,
    leaf_field: &[usize],
    deks: &HashMap<usize, SecretKey>,
    envelope: &Envelope,
    provider: &dyn CipherProvider,
) -> Result<ParquetMetaData> {
    let mut stats: HashMap<(u32, u32), parquet::file::statistics::Statistics> = HashMap::new();
    for st in &body.sealed_stats {
        let Some(dek) = deks.get(&leaf_field[st.leaf as usize]) else {
            continue;
        };
        let opener = ChunkOpener::with_provider(provider, envelope.algorithm, dek, envelope.file_id, st.leaf)?;
        let mut buf = st.sealed.clone();
        opener.open(st.row_group, ChunkKind::Metadata, &mut buf)?;
        stats.insert((st.row_group, st.leaf), crate::format::stats::decode(&buf)?);
    }
    if stats.is_empty() {
        return Ok(pq);
    }
    crate::format::stats::map_column_chunks(pq, |r, leaf, col| {
        stats
            .remove(&(r as u32, leaf as u32))
            .map(|st| col.clone().into_builder().set_statistics(st).build().map_err(pq_err))
            .transpose()
    })
}

impl FileReader {
    /// Opens a file: checks magic and trailer, decodes the envelope, unwraps the file key (checking
    /// its commitment), authenticates and decodes the footer body, and checks that the parts tile
    /// the file exactly. Reads nothing but the envelope, the body and the trailer.
    pub fn open(source: impl ReadAt + 'static, opts: ReaderOptions) -> Result<Self> {
        Self::open_shared(Arc::new(source), opts)
    }

    /// [`open`](Self::open) for a source already shared.
    pub fn open_shared(source: Arc<dyn ReadAt>, opts: ReaderOptions) -> Result<Self> {
        let (info, env_bytes) = read_envelope(&*source)?;
        let envelope = info.envelope;
        let alg = envelope.algorithm;
        let keys = opts.check(alg)?;
        let file_id = envelope.file_id;
        let file_dek = match keys {
            Some((access, allowed)) => {
                let entry = envelope
                    .keys
                    .first()
                    .ok_or_else(|| Error::integrity("envelope (an encrypted file without a file key)"))?;
                let dek = access.open_data_key(&entry.wrapped, &file_id, None, Some(allowed))?;
                verify_commitment(&dek, &entry.commitment)?;
                Some(dek)
            }
            None => None,
        };
        let body_start = info.file_len - TRAILER_LEN as u64 - info.sealed_body_len;
        let mut body = read_vec(&*source, body_start, info.sealed_body_len as usize)?;
        let footer_digest = *blake3::Hasher::new()
            .update(&env_bytes)
            .update(&body)
            .update(&info.trailer)
            .finalize()
            .as_bytes();
        let aad = body_aad(&env_bytes, info.file_len, info.sealed_body_len);
        let footer_key = match &file_dek {
            Some(dek) => Some(derive_key(dek, Purpose::FooterKey, &[&file_id.0])?),
            None => None,
        };
        open_body(footer_key.as_ref(), &envelope.footer_nonce, &aad, &mut body)?;
        let body = FooterBody::decode(&body)?;

        // The chunks tile [4, envelope start) exactly.
        let mut at = MAGIC.len() as u64;
        for c in &body.chunks {
            if c.offset != at || c.len > info.chunk_bytes {
                return Err(Error::integrity("chunk table (chunks do not tile the file)"));
            }
            at += c.len;
        }
        if at != MAGIC.len() as u64 + info.chunk_bytes {
            return Err(Error::integrity("chunk table (chunks do not tile the file)"));
        }

        // Everything that decodes or rebuilds Parquet metadata runs contained: for `none` these are
        // bytes only a checksum protects, and a panic in the `parquet` crate becomes Malformed.
        crate::format::thrift::check_file_metadata(&body.parquet_metadata)?;
        let pq = contain("footer", || {
            ParquetMetaDataReader::decode_metadata(&body.parquet_metadata).map_err(pq_err)
        })?;
        let schema_descr = pq.file_metadata().schema_descr_ptr();
        if pq.num_row_groups() != body.row_groups as usize || schema_descr.num_columns() != body.leaves as usize {
            return Err(Error::integrity(
                "footer (row groups or columns disagree with the chunk table)",
            ));
        }
        // The virtual Parquet file: its chunks start after parquet's 4-byte magic and follow each
        // other in order, each as long as the opened chunk. Checked before anything trusts an offset.
        let mut expected_start = 4u64;
        for (r, rg) in pq.row_groups().iter().enumerate() {
            for (l, col) in rg.columns().iter().enumerate() {
                let entry = &body.chunks[r * body.leaves as usize + l];
                let bad = || Error::integrity(format!("footer (chunk {r}/{l} position)"));
                let start = match col.dictionary_page_offset() {
                    Some(d) => d,
                    None => col.data_page_offset(),
                };
                if start < 0 || col.data_page_offset() < 0 || col.compressed_size() < 0 {
                    return Err(bad());
                }
                let (start, len) = (start as u64, col.compressed_size() as u64);
                if start != expected_start
                    || (col.data_page_offset() as u64) < start
                    || col.data_page_offset() as u64 >= start + len.max(1)
                    || plaintext_len(alg, entry.len as usize)? as u64 != len
                {
                    return Err(bad());
                }
                expected_start = start + len;
            }
        }
        let arrow_schema = Arc::new(crate::format::schema::decode(&body.arrow_schema)?);
        if arrow_schema.fields().len() != schema_descr.root_schema().get_fields().len() {
            return Err(Error::malformed(
                "footer",
                "the Arrow schema and the Parquet schema disagree",
            ));
        }
        let leaf_field: Vec<usize> = (0..schema_descr.num_columns())
            .map(|i| schema_descr.get_column_root_idx(i))
            .collect();
        // Columns with their own key: unwrap what this principal may, and put those columns'
        // statistics back for pruning. A key it may not use leaves the column unreadable (the
        // error comes when the column is projected) and without statistics.
        let mut column_deks = HashMap::new();
        let mut pq = pq;
        if envelope.keys.len() > 1 {
            for (entry, k) in envelope.keys.iter().enumerate() {
                let KeyRole::Column(f) = k.role else { continue };
                let f = f as usize;
                if f >= arrow_schema.fields().len() {
                    return Err(Error::integrity(
                        "envelope (a column key for a field that does not exist)",
                    ));
                }
                if let Ok(dek) = unwrap_column_key(&opts, &envelope, entry, f, arrow_schema.field(f).name()) {
                    column_deks.insert(f, dek);
                }
            }
            pq = contain("footer", || {
                restore_stats(pq, &body, &leaf_field, &column_deks, &envelope, opts.provider())
            })?;
        }
        // The Arrow schema comes from colvault's own encoding, never from arrow-ipc. Matching it to
        // the Parquet schema is parquet's code over bytes a `none` file only checksums, so a panic
        // there is still contained and reported as malformed input (defence in depth).
        let options = ArrowReaderOptions::new().with_schema(as_parquet_reads(&arrow_schema));
        // Both values move into the closure and are dropped if it panics.
        let metadata = contain("footer", || {
            ArrowReaderMetadata::try_new(Arc::new(pq), options).map_err(pq_err)
        })?;
        let leaf_key = leaf_field
            .iter()
            .map(
                |&f| match envelope.keys.iter().position(|k| k.role == KeyRole::Column(f as u32)) {
                    Some(entry) => ColumnKey::Own { field: f, entry },
                    None => ColumnKey::File,
                },
            )
            .collect();
        Ok(FileReader {
            source,
            envelope,
            body,
            metadata,
            leaf_field,
            leaf_key,
            file_dek,
            column_deks: Mutex::new(column_deks),
            opts,
            file_len: info.file_len,
            footer_digest,
        })
    }

    /// The Arrow schema, with its metadata.
    pub fn schema(&self) -> SchemaRef {
        self.metadata.schema().clone()
    }
    /// The file's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.envelope.algorithm
    }
    /// The file's id.
    pub fn file_id(&self) -> FileId {
        self.envelope.file_id
    }
    /// The file's length.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
    /// BLAKE3 of the envelope, sealed body and trailer: what a table manifest records.
    pub fn footer_digest(&self) -> [u8; 32] {
        self.footer_digest
    }
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    /// Total rows.
    pub fn num_rows(&self) -> u64 {
        self.metadata.metadata().file_metadata().num_rows() as u64
    }
    /// Number of row groups.
    pub fn num_row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }
    /// The rows of row group `rg`, or `None` if the file has no such row group.
    pub fn row_group_rows(&self, rg: usize) -> Option<u64> {
        let meta = self.metadata.metadata();
        (rg < meta.num_row_groups()).then(|| meta.row_group(rg).num_rows().max(0) as u64)
    }
    /// The Parquet metadata: row groups, column chunks, encodings and statistics.
    pub fn parquet_metadata(&self) -> &Arc<ParquetMetaData> {
        self.metadata.metadata()
    }
    /// The sealed length of each chunk of row group `rg`, in leaf-column order.
    pub fn chunk_lengths(&self, rg: usize) -> Vec<u64> {
        let l = self.body.leaves as usize;
        self.body.chunks[rg * l..(rg + 1) * l].iter().map(|c| c.len).collect()
    }

    /// A scan of this file.
    pub fn scan(&self) -> ScanBuilder<'_> {
        ScanBuilder::new(self)
    }

    /// The DEK of a leaf, unwrapping a column key on first use.
    fn leaf_dek(&self, leaf: usize) -> Result<Option<SecretKey>> {
        match &self.leaf_key[leaf] {
            ColumnKey::File => Ok(self.file_dek.clone()),
            ColumnKey::Own { field, entry } => {
                if let Some(k) = self.column_deks.lock().map_err(|_| Error::Poisoned)?.get(field) {
                    return Ok(Some(k.clone()));
                }
                let name = self.schema().field(*field).name().clone();
                let dek = unwrap_column_key(&self.opts, &self.envelope, *entry, *field, &name)?;
                self.column_deks
                    .lock()
                    .map_err(|_| Error::Poisoned)?
                    .insert(*field, dek.clone());
                Ok(Some(dek))
            }
        }
    }
}

/// Unwraps the DEK of a field with its own key; an access error names the column.
fn unwrap_column_key(
    opts: &ReaderOptions,
    envelope: &Envelope,
    entry: usize,
    field: usize,
    name: &str,
) -> Result<SecretKey> {
    let Expected::Encrypted {
        access, allowed_cmks, ..
    } = &opts.expected
    else {
        return Err(Error::KeysRequired {
            algorithm: envelope.algorithm.to_string(),
        });
    };
    let e = &envelope.keys[entry];
    let dek = access
        .open_data_key(&e.wrapped, &envelope.file_id, Some(field as u32), Some(allowed_cmks))
        .map_err(|err| match err {
            Error::AccessDenied { principal, key } => Error::AccessDenied {
                principal: format!("{principal} (reading column {name:?})"),
                key,
            },
            other => other,
        })?;
    verify_commitment(&dek, &e.commitment)?;
    Ok(dek)
}

/// The schema as the `parquet` crate's reader produces it from a file written with `schema`:
/// run-end encoded columns are stored as their values and read back as plain arrays (as plain
/// Parquet does), every other type exactly.
fn as_parquet_reads(schema: &Schema) -> SchemaRef {
    fn field(f: &FieldRef) -> FieldRef {
        let dt = data_type(f.data_type());
        if &dt == f.data_type() {
            f.clone()
        } else {
            Arc::new(f.as_ref().clone().with_data_type(dt))
        }
    }
    fn data_type(dt: &DataType) -> DataType {
        match dt {
            DataType::RunEndEncoded(_, values) => data_type(values.data_type()),
            DataType::List(f) => DataType::List(field(f)),
            DataType::LargeList(f) => DataType::LargeList(field(f)),
            DataType::ListView(f) => DataType::ListView(field(f)),
            DataType::LargeListView(f) => DataType::LargeListView(field(f)),
            DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
            DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
            DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
            other => other.clone(),
        }
    }
    Arc::new(Schema::new_with_metadata(
        schema.fields().iter().map(field).collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}
