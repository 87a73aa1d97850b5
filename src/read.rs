//! Reading colvault files: [`FileReader`], scans with projection, row-group selection and pruning.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchReader, Scalar};
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use bytes::Bytes;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use rayon::prelude::*;

use crate::access::KeyAccess;
use crate::crypto::{
    derive_key, plaintext_len, verify_commitment, Algorithm, ChunkKind, ChunkOpener, FileId, Purpose, SecretKey,
};
use crate::error::{Error, Result};
use crate::format::envelope::{Envelope, KeyRole};
use crate::format::footer::{body_aad, open_body, FooterBody};
use crate::format::{ReadAt, MAGIC, MAX_BODY_LEN, MAX_ENVELOPE_LEN, TRAILER_LEN};
use crate::kms::KeyId;

/// What a reader expects and how it reaches keys.
#[derive(Clone, Debug, Default)]
pub struct ReaderOptions {
    keys: Option<KeyAccess>,
    expected_algorithm: Option<Algorithm>,
    allowed_keys: Option<Vec<KeyId>>,
}

impl ReaderOptions {
    /// Reads encrypted files through `access`.
    pub fn with_keys(mut self, access: KeyAccess) -> Self {
        self.keys = Some(access);
        self
    }
    /// Refuses any file not written with `algorithm` (no downgrade: project settings say which).
    pub fn expect_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.expected_algorithm = Some(algorithm);
        self
    }
    /// Refuses any file whose keys are wrapped under a CMK not in `keys`.
    pub fn allow_keys(mut self, keys: Vec<KeyId>) -> Self {
        self.allowed_keys = Some(keys);
        self
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
) -> Result<ParquetMetaData> {
    let mut stats: HashMap<(u32, u32), parquet::file::statistics::Statistics> = HashMap::new();
    for st in &body.sealed_stats {
        let Some(dek) = deks.get(&leaf_field[st.leaf as usize]) else {
            continue;
        };
        let opener = ChunkOpener::new(envelope.algorithm, dek, envelope.file_id, st.leaf)?;
        let mut buf = st.sealed.clone();
        opener.open(st.row_group, ChunkKind::Metadata, &mut buf)?;
        stats.insert((st.row_group, st.leaf), crate::format::stats::decode(&buf)?);
    }
    if stats.is_empty() {
        return Ok(pq);
    }
    let mut builder = pq.into_builder();
    let mut rgs = builder.take_row_groups();
    for (r, rg) in rgs.iter_mut().enumerate() {
        let mut b = rg.clone().into_builder();
        let mut cols = b.take_columns();
        for (l, col) in cols.iter_mut().enumerate() {
            if let Some(st) = stats.remove(&(r as u32, l as u32)) {
                *col = col.clone().into_builder().set_statistics(st).build().map_err(pq_err)?;
            }
        }
        *rg = b.set_column_metadata(cols).build().map_err(pq_err)?;
    }
    Ok(builder.set_row_groups(rgs).build())
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
        if let Some(expected) = opts.expected_algorithm {
            if expected != alg {
                return Err(Error::AlgorithmMismatch {
                    expected: expected.to_string(),
                    found: alg.to_string(),
                });
            }
        }
        let file_id = envelope.file_id;
        let file_dek = if alg.is_encrypted() {
            let access = opts.keys.as_ref().ok_or_else(|| Error::KeysRequired {
                algorithm: alg.to_string(),
            })?;
            let entry = &envelope.keys[0];
            let dek = access.open_data_key(&entry.wrapped, &file_id, None, opts.allowed_keys.as_deref())?;
            verify_commitment(&dek, &entry.commitment)?;
            Some(dek)
        } else {
            None
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

        let pq = ParquetMetaDataReader::decode_metadata(&body.parquet_metadata).map_err(pq_err)?;
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
            pq = restore_stats(pq, &body, &leaf_field, &column_deks, &envelope)?;
        }
        // The Arrow schema comes from colvault's own encoding, never from arrow-ipc. Matching it to
        // the Parquet schema is parquet's code over bytes a `none` file only checksums, so a panic
        // there is still contained and reported as malformed input (defence in depth).
        let options = ArrowReaderOptions::new().with_schema(as_parquet_reads(&arrow_schema));
        // Both values move into the closure and are dropped if it panics: nothing is observed
        // in a broken state afterwards, so asserting unwind safety is sound.
        let try_new = std::panic::AssertUnwindSafe(|| ArrowReaderMetadata::try_new(Arc::new(pq), options));
        let metadata = std::panic::catch_unwind(try_new)
            .map_err(|_| Error::malformed("footer", "the Arrow schema does not match the Parquet schema"))?
            .map_err(pq_err)?;
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
        ScanBuilder {
            reader: self,
            projection: None,
            row_groups: None,
            batch_size: 8192,
            predicates: Vec::new(),
        }
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
    let access = opts.keys.as_ref().ok_or_else(|| Error::KeysRequired {
        algorithm: envelope.algorithm.to_string(),
    })?;
    let e = &envelope.keys[entry];
    let dek = access
        .open_data_key(
            &e.wrapped,
            &envelope.file_id,
            Some(field as u32),
            opts.allowed_keys.as_deref(),
        )
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

/// A comparison for row-group pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `IS NULL`
    IsNull,
}

/// A simple predicate on a top-level primitive or string column, used to skip row groups whose
/// statistics prove that no row matches. Pruning is conservative: kept row groups are returned
/// whole, so apply the predicate to the rows as well if you need exact results.
#[derive(Clone, Debug)]
pub struct Predicate {
    column: String,
    op: CmpOp,
    value: Option<ArrayRef>,
}

impl Predicate {
    /// `column op value`, where `value` is a one-element array (cast to the column's type).
    pub fn compare(column: impl Into<String>, op: CmpOp, value: ArrayRef) -> Self {
        Predicate {
            column: column.into(),
            op,
            value: Some(value),
        }
    }
    /// The column the predicate is on.
    pub fn column(&self) -> &str {
        &self.column
    }
    /// `column IS NULL`.
    pub fn is_null(column: impl Into<String>) -> Self {
        Predicate {
            column: column.into(),
            op: CmpOp::IsNull,
            value: None,
        }
    }

    /// Which row groups may hold a match.
    fn keep(&self, reader: &FileReader) -> Result<Vec<bool>> {
        let meta = reader.parquet_metadata();
        let n = meta.num_row_groups();
        let schema = reader.schema();
        let conv = StatisticsConverter::try_new(&self.column, &schema, meta.file_metadata().schema_descr())
            .map_err(|e| Error::InvalidArgument(format!("predicate on {:?}: {e}", self.column)))?;
        if self.op == CmpOp::IsNull {
            let nulls = conv.row_group_null_counts(meta.row_groups().iter()).map_err(pq_err)?;
            return Ok((0..n).map(|i| nulls.is_null(i) || nulls.value(i) > 0).collect());
        }
        let value = self
            .value
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("predicate without a value".into()))?;
        if value.len() != 1 {
            return Err(Error::InvalidArgument(
                "a predicate value is a one-element array".into(),
            ));
        }
        let field_type = schema
            .field_with_name(&self.column)
            .map_err(|e| Error::Arrow(e.to_string()))?
            .data_type()
            .clone();
        let value = arrow::compute::cast(value, &field_type).map_err(|e| Error::Arrow(e.to_string()))?;
        let v = Scalar::new(value);
        let mins = conv.row_group_mins(meta.row_groups().iter()).map_err(pq_err)?;
        let maxes = conv.row_group_maxes(meta.row_groups().iter()).map_err(pq_err)?;
        use arrow::compute::kernels::cmp;
        let a = |r: std::result::Result<BooleanArray, ArrowError>| r.map_err(|e| Error::Arrow(e.to_string()));
        // prune[i] is true when statistics prove no row of group i matches.
        let prune: BooleanArray = match self.op {
            CmpOp::Eq => {
                let gt = a(cmp::gt(&mins, &v))?;
                let lt = a(cmp::lt(&maxes, &v))?;
                arrow::compute::or(&gt, &lt).map_err(|e| Error::Arrow(e.to_string()))?
            }
            CmpOp::Lt => a(cmp::gt_eq(&mins, &v))?,
            CmpOp::LtEq => a(cmp::gt(&mins, &v))?,
            CmpOp::Gt => a(cmp::lt_eq(&maxes, &v))?,
            CmpOp::GtEq => a(cmp::lt(&maxes, &v))?,
            CmpOp::IsNull => unreachable!(),
        };
        Ok((0..n).map(|i| prune.is_null(i) || !prune.value(i)).collect())
    }
}

/// Builds a scan: projection, row groups, batch size and pruning predicates.
pub struct ScanBuilder<'a> {
    reader: &'a FileReader,
    projection: Option<Vec<usize>>,
    row_groups: Option<Vec<usize>>,
    batch_size: usize,
    predicates: Vec<Predicate>,
}

impl<'a> ScanBuilder<'a> {
    /// Reads only these top-level fields, by index.
    pub fn project(mut self, fields: Vec<usize>) -> Self {
        self.projection = Some(fields);
        self
    }
    /// Reads only these top-level fields, by name.
    pub fn project_names<S: AsRef<str>>(mut self, names: &[S]) -> Result<Self> {
        let schema = self.reader.schema();
        let idx = names
            .iter()
            .map(|n| {
                schema
                    .index_of(n.as_ref())
                    .map_err(|_| Error::InvalidArgument(format!("no column named {:?}", n.as_ref())))
            })
            .collect::<Result<_>>()?;
        self.projection = Some(idx);
        Ok(self)
    }
    /// Reads only these row groups.
    pub fn row_groups(mut self, rgs: Vec<usize>) -> Self {
        self.row_groups = Some(rgs);
        self
    }
    /// Rows per batch (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    /// Skips row groups whose statistics rule out `p`.
    pub fn filter(mut self, p: Predicate) -> Self {
        self.predicates.push(p);
        self
    }

    /// The row groups this scan will read, after selection and pruning.
    pub fn selected_row_groups(&self) -> Result<Vec<usize>> {
        let n = self.reader.num_row_groups();
        let mut keep = vec![true; n];
        if let Some(rgs) = &self.row_groups {
            keep = vec![false; n];
            for &r in rgs {
                *keep
                    .get_mut(r)
                    .ok_or_else(|| Error::InvalidArgument(format!("row group {r} of {n}")))? = true;
            }
        }
        for p in &self.predicates {
            for (k, p) in keep.iter_mut().zip(p.keep(self.reader)?) {
                *k &= p;
            }
        }
        Ok((0..n).filter(|&i| keep[i]).collect())
    }

    /// The reader of record batches.
    pub fn build(self) -> Result<BatchReader> {
        let reader = self.reader;
        let fields = reader.schema().fields().len();
        let projection: Vec<usize> = match &self.projection {
            Some(p) => {
                if let Some(bad) = p.iter().find(|&&i| i >= fields) {
                    return Err(Error::InvalidArgument(format!("column {bad} of {fields}")));
                }
                p.clone()
            }
            None => (0..fields).collect(),
        };
        let row_groups = self.selected_row_groups()?;
        let wanted_leaves: Vec<usize> = (0..reader.leaf_field.len())
            .filter(|l| projection.contains(&reader.leaf_field[*l]))
            .collect();
        // Keys first: a projection of a column whose key is unavailable fails here, by name.
        let mut openers: HashMap<usize, Arc<ChunkOpener>> = HashMap::new();
        let none_key = SecretKey::from_slice(&[0u8; 32])?;
        for &leaf in &wanted_leaves {
            let dek = reader.leaf_dek(leaf)?;
            let opener = ChunkOpener::new(
                reader.algorithm(),
                dek.as_ref().unwrap_or(&none_key),
                reader.envelope.file_id,
                leaf as u32,
            )?;
            openers.insert(leaf, Arc::new(opener));
        }
        let meta = reader.parquet_metadata();
        let mut by_start = BTreeMap::new();
        let leaves = reader.body.leaves as usize;
        for (r, rg) in meta.row_groups().iter().enumerate() {
            for (l, col) in rg.columns().iter().enumerate() {
                let (start, len) = col.byte_range();
                by_start.insert(start, (r, l, len));
            }
        }
        let by_start = Arc::new(by_start);
        let entries = Arc::new(reader.body.chunks.clone());
        let error = Arc::new(Mutex::new(None));
        let mut fields: Vec<usize> = projection.clone();
        fields.sort_unstable();
        fields.dedup();
        // One Parquet decoder per projected field when there are several, so that fields decode
        // (and their chunks open) in parallel; one decoder otherwise.
        let groups: Vec<Vec<usize>> = if fields.len() > 1 {
            fields.iter().map(|&f| vec![f]).collect()
        } else {
            vec![fields.clone()]
        };
        let schema_descr = meta.file_metadata().schema_descr();
        let mut readers = Vec::with_capacity(groups.len());
        for group in groups {
            let group_leaves: Vec<usize> = wanted_leaves
                .iter()
                .copied()
                .filter(|l| group.contains(&reader.leaf_field[*l]))
                .collect();
            let vfile = VirtualFile {
                inner: Arc::new(VirtualInner {
                    source: reader.source.clone(),
                    algorithm: reader.algorithm(),
                    entries: entries.clone(),
                    leaves,
                    by_start: by_start.clone(),
                    openers: group_leaves.iter().map(|l| (*l, openers[l].clone())).collect(),
                    wanted_leaves: group_leaves,
                    cache: Mutex::new(ChunkCache::default()),
                    error: error.clone(),
                    virtual_len: reader.file_len,
                }),
            };
            let mask = ProjectionMask::roots(schema_descr, group.iter().copied());
            readers.push(
                ParquetRecordBatchReaderBuilder::new_with_metadata(vfile, reader.metadata.clone())
                    .with_projection(mask)
                    .with_row_groups(row_groups.clone())
                    .with_batch_size(self.batch_size)
                    .build()
                    .map_err(pq_err)?,
            );
        }
        let schema = Arc::new(
            reader
                .schema()
                .project(&fields)
                .map_err(|e| Error::Arrow(e.to_string()))?,
        );
        let ahead = readers.iter().map(|_| VecDeque::new()).collect();
        Ok(BatchReader {
            readers,
            ahead,
            schema,
            error,
        })
    }
}

/// Record batches of a scan. Implements [`RecordBatchReader`]; errors are
/// `ArrowError::ExternalError` wrapping a [`crate::Error`] where colvault knows the cause (use
/// [`BatchReader::next_batch`] to get the typed error directly).
pub struct BatchReader {
    readers: Vec<ParquetRecordBatchReader>,
    /// Batches each field's reader decoded ahead (an error ends its queue), so the fields are
    /// decoded in parallel [`DECODE_AHEAD`] batches at a time rather than one barrier per batch.
    ahead: Vec<VecDeque<std::result::Result<RecordBatch, ArrowError>>>,
    schema: SchemaRef,
    error: Arc<Mutex<Option<Error>>>,
}

impl fmt::Debug for BatchReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchReader").field("schema", &self.schema).finish()
    }
}

/// Batches each field's decoder produces per parallel step of a multi-column [`BatchReader`].
const DECODE_AHEAD: usize = 8;

impl BatchReader {
    /// The next batch, with colvault's typed error.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.readers.len() == 1 {
            return match self.readers[0].next() {
                None => Ok(None),
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(e)) => Err(self.take_error(e)),
            };
        }
        if self.ahead.iter().all(VecDeque::is_empty) {
            self.readers
                .par_iter_mut()
                .zip(self.ahead.par_iter_mut())
                .for_each(|(r, q)| {
                    for _ in 0..DECODE_AHEAD {
                        match r.next() {
                            None => break,
                            Some(item) => {
                                let failed = item.is_err();
                                q.push_back(item);
                                if failed {
                                    break;
                                }
                            }
                        }
                    }
                });
        }
        let parts: Vec<Option<std::result::Result<RecordBatch, ArrowError>>> =
            self.ahead.iter_mut().map(VecDeque::pop_front).collect();
        if parts.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(parts.len());
        let mut rows = None;
        for part in parts {
            match part {
                None => return Err(Error::integrity("column readers ended at different rows")),
                Some(Err(e)) => return Err(self.take_error(e)),
                Some(Ok(b)) => {
                    if *rows.get_or_insert(b.num_rows()) != b.num_rows() {
                        return Err(Error::integrity("column readers returned batches of different lengths"));
                    }
                    columns.extend(b.columns().iter().cloned());
                }
            }
        }
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(rows);
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &opts)
            .map(Some)
            .map_err(|e| Error::Arrow(e.to_string()))
    }

    /// All remaining batches.
    pub fn read_all(mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(b) = self.next_batch()? {
            out.push(b);
        }
        Ok(out)
    }

    fn take_error(&self, e: ArrowError) -> Error {
        match self.error.lock().ok().and_then(|mut g| g.take()) {
            Some(err) => err,
            None => Error::Parquet(e.to_string()),
        }
    }
}

impl Iterator for BatchReader {
    type Item = std::result::Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))
            .transpose()
    }
}

impl RecordBatchReader for BatchReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The plaintext Parquet file that parquet's reader sees: column chunk byte ranges map to sealed
/// chunks, read and opened on demand (a row group's wanted chunks in parallel).
#[derive(Clone)]
struct VirtualFile {
    inner: Arc<VirtualInner>,
}

/// Opened chunks not yet served to their end, and the chunks already served.
#[derive(Default)]
struct ChunkCache {
    chunks: HashMap<(usize, usize), Bytes>,
    served: std::collections::HashSet<(usize, usize)>,
}

struct VirtualInner {
    source: Arc<dyn ReadAt>,
    algorithm: Algorithm,
    entries: Arc<Vec<crate::format::ChunkEntry>>,
    leaves: usize,
    by_start: Arc<BTreeMap<u64, (usize, usize, u64)>>,
    openers: HashMap<usize, Arc<ChunkOpener>>,
    wanted_leaves: Vec<usize>,
    cache: Mutex<ChunkCache>,
    error: Arc<Mutex<Option<Error>>>,
    virtual_len: u64,
}

impl VirtualInner {
    fn open_chunk(&self, rg: usize, leaf: usize) -> Result<Bytes> {
        let entry = &self.entries[rg * self.leaves + leaf];
        let opener = self
            .openers
            .get(&leaf)
            .ok_or_else(|| Error::InvalidArgument(format!("column chunk {leaf} was not projected")))?;
        let mut buf = vec![0u8; usize::try_from(entry.len).map_err(|_| Error::integrity("chunk length"))?];
        self.source.read_exact_at(entry.offset, &mut buf)?;
        let n = plaintext_len(self.algorithm, buf.len())?;
        if !crate::crypto::ct_eq(blake3::hash(&buf[n..]).as_bytes(), &entry.tags_digest) {
            return Err(Error::integrity(format!(
                "row group {rg} column {leaf} chunk (tags differ from the footer)"
            )));
        }
        opener.open(rg as u32, ChunkKind::Data, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// The plaintext of chunk (rg, leaf). On a miss, opens in parallel every wanted chunk of the
    /// row group that is neither cached nor already served. A chunk leaves the cache once it has
    /// been served to its end, so each chunk is read and opened once, even when the decoder walks
    /// the leaves of a nested field across row groups one leaf at a time.
    fn chunk(&self, rg: usize, leaf: usize) -> Result<Bytes> {
        {
            let cache = self.cache.lock().map_err(|_| Error::Poisoned)?;
            if let Some(b) = cache.chunks.get(&(rg, leaf)) {
                return Ok(b.clone());
            }
        }
        let todo: Vec<usize> = {
            let cache = self.cache.lock().map_err(|_| Error::Poisoned)?;
            let mut todo: Vec<usize> = self
                .wanted_leaves
                .iter()
                .copied()
                .filter(|l| *l != leaf && !cache.served.contains(&(rg, *l)) && !cache.chunks.contains_key(&(rg, *l)))
                .collect();
            todo.push(leaf);
            todo
        };
        let opened: Vec<(usize, Bytes)> = todo
            .par_iter()
            .map(|&l| self.open_chunk(rg, l).map(|b| (l, b)))
            .collect::<Result<_>>()?;
        let mut cache = self.cache.lock().map_err(|_| Error::Poisoned)?;
        let mut out = None;
        for (l, b) in opened {
            if l == leaf {
                out = Some(b.clone());
            }
            cache.chunks.insert((rg, l), b);
        }
        out.ok_or_else(|| Error::integrity("chunk cache"))
    }

    /// Records that chunk (rg, leaf) was served to its end and drops it from the cache.
    fn served(&self, rg: usize, leaf: usize) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.chunks.remove(&(rg, leaf));
            cache.served.insert((rg, leaf));
        }
    }

    fn bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let end = start + length as u64;
        let mut out: Vec<Bytes> = Vec::new();
        let mut at = start;
        while at < end {
            let (&cstart, &(rg, leaf, clen)) = self
                .by_start
                .range(..=at)
                .next_back()
                .ok_or_else(|| Error::integrity(format!("no column chunk at virtual offset {at}")))?;
            if at >= cstart + clen {
                return Err(Error::integrity(format!("no column chunk at virtual offset {at}")));
            }
            let chunk = self.chunk(rg, leaf)?;
            let from = (at - cstart) as usize;
            let to = ((end.min(cstart + clen)) - cstart) as usize;
            out.push(chunk.slice(from..to));
            if to as u64 == clen {
                self.served(rg, leaf);
            }
            at = cstart + to as u64;
        }
        Ok(match out.len() {
            0 => Bytes::new(),
            1 => out.pop().expect("one"),
            _ => Bytes::from(out.concat()),
        })
    }
}

impl Length for VirtualFile {
    fn len(&self) -> u64 {
        self.inner.virtual_len
    }
}

impl ChunkReader for VirtualFile {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // A reader over the rest of the chunk, for a page header: it does not count as serving the
        // chunk to its end (the page body comes next, through get_bytes).
        let located = self.inner.by_start.range(..=start).next_back().map(|(&s, &v)| (s, v));
        let result = match located {
            Some((cstart, (rg, leaf, clen))) if start < cstart + clen => self
                .inner
                .chunk(rg, leaf)
                .map(|c| c.slice((start - cstart) as usize..clen as usize)),
            _ => Err(Error::integrity(format!("no column chunk at virtual offset {start}"))),
        };
        result.map(bytes::Buf::reader).map_err(|e| self.record(e))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.inner.bytes(start, length).map_err(|e| self.record(e))
    }
}

impl VirtualFile {
    /// Keeps the first typed error for the batch reader and hands parquet a message.
    fn record(&self, e: Error) -> ParquetError {
        let msg = e.to_string();
        if let Ok(mut slot) = self.inner.error.lock() {
            slot.get_or_insert(e);
        }
        ParquetError::General(msg)
    }
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
