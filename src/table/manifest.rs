//! Table manifests: one sealed, chained file per committed version.
//!
//! ```text
//! manifest file = "CVMF" || u8 format (1, or 2 for a table with column keys) || u64 version
//!                 || bytes(4096) wrapped key || nonce (12)
//!                 || AES-256-GCM(key, nonce, AAD = everything before the ciphertext, body) || tag
//! key           = HKDF(fresh DEK wrapped under the project CMK with context
//!                      {project, table, aux = "manifest <version>"}, "colvault v1 manifest key", table id)
//! ```
//! The body chains the digest (BLAKE3 of the whole previous manifest file) of the version before it,
//! and lists every live file with its id, length, row count and footer digest. A table with column
//! keys (format 2) ends the body with them: u16 count (at least 1) then, per column in schema order,
//! str column || str CMK id. Format 1 bodies have none. A partitioned table (format 3) lists its
//! partition columns after the algorithm, each file's partition values after its key ids, and
//! always ends with its column keys (a count, maybe 0).

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};

use super::partition::{PartitionValue, MAX_PARTITION_COLUMNS};
use crate::access::KeyAccess;
use crate::catalog::ColumnKey;
use crate::codec::{Decoder, Encoder};
use crate::crypto::{derive_key, random_array, Algorithm, FileId, Purpose};
use crate::error::{Error, Result};
use crate::kms::{DataKeyEnvelope, KeyId};

const MAGIC: [u8; 4] = *b"CVMF";
const FORMAT: u8 = 1;
/// The format of a manifest of a table with column keys.
const FORMAT_COLUMN_KEYS: u8 = 2;
/// The format of a manifest of a partitioned table.
const FORMAT_PARTITIONED: u8 = 3;
const MAX_COLUMN_KEYS: usize = 4096;
const MAX_FILES: usize = 1 << 22;
const MAX_SCHEMA: usize = 16 << 20;

/// One committed data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// The file's id.
    pub file_id: FileId,
    /// Its name in the table's `data/` directory (`<id>.cvlt`, or `<id>-<tag>.cvlt` once rewrapped).
    pub name: String,
    /// Its length.
    pub len: u64,
    /// Its rows.
    pub rows: u64,
    /// BLAKE3 of its envelope, sealed body and trailer.
    pub footer_digest: [u8; 32],
    /// The CMK (and column CMKs) its keys are wrapped under.
    pub key_ids: Vec<KeyId>,
    /// The version of the file CMK's key its KEK is wrapped under.
    pub key_version: u32,
    /// Its partition: one value per partition column of the table (empty when the table is not
    /// partitioned). Every row of the file has these values.
    pub partition: Vec<PartitionValue>,
}

/// The content of one manifest version.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// This version (1, 2, ...).
    pub version: u64,
    /// BLAKE3 of the previous version's manifest file (zero for version 1).
    pub prev_digest: [u8; 32],
    /// Versions below this were expired on purpose; the chain is checked from here.
    pub oldest_retained: u64,
    /// The table's random id.
    pub table_id: String,
    /// Commit time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// What made this version (append, overwrite, compact, rewrap, ...).
    pub operation: String,
    /// The table schema.
    pub schema: SchemaRef,
    /// The algorithm every file must have.
    pub algorithm: Algorithm,
    /// The live files.
    pub files: Vec<FileRef>,
    /// The columns kept under a CMK of their own, in schema order (the catalog's record of the
    /// table must say the same).
    pub column_keys: Vec<ColumnKey>,
    /// The partition columns, in partition order (empty when the table is not partitioned; the
    /// catalog's record of the table must say the same).
    pub partition_by: Vec<String>,
}

fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    crate::format::schema::encode(schema)
}

fn schema_from(bytes: &[u8]) -> Result<SchemaRef> {
    crate::format::schema::decode(bytes).map(Arc::new)
}

impl Manifest {
    /// The body bytes.
    pub fn encode_body(&self) -> Result<Vec<u8>> {
        let mut e = Encoder::new();
        e.u64(self.version)
            .raw(&self.prev_digest)
            .u64(self.oldest_retained)
            .str(&self.table_id);
        e.u64(self.timestamp_ms)
            .str(&self.operation)
            .bytes(&schema_bytes(&self.schema)?);
        e.u8(self.algorithm.id());
        let partitioned = self.format() == FORMAT_PARTITIONED;
        if partitioned {
            e.u16(self.partition_by.len() as u16);
            for c in &self.partition_by {
                e.str(c);
            }
        }
        e.u32(self.files.len() as u32);
        for f in &self.files {
            e.raw(&f.file_id.0)
                .str(&f.name)
                .u64(f.len)
                .u64(f.rows)
                .raw(&f.footer_digest)
                .u32(f.key_version);
            e.u16(f.key_ids.len() as u16);
            for k in &f.key_ids {
                e.str(k.as_str());
            }
            if f.partition.len() != self.partition_by.len() {
                return Err(Error::InvalidArgument(format!(
                    "file {} has {} partition values for {} partition columns",
                    f.name,
                    f.partition.len(),
                    self.partition_by.len()
                )));
            }
            for v in &f.partition {
                v.encode(&mut e);
            }
        }
        if partitioned || !self.column_keys.is_empty() {
            e.u16(self.column_keys.len() as u16);
            for k in &self.column_keys {
                e.str(&k.column).str(k.cmk.as_str());
            }
        }
        Ok(e.finish())
    }

    /// Parses a body of manifest format `format` (the header's).
    pub fn decode_body(buf: &[u8], format: u8) -> Result<Self> {
        let mut d = Decoder::new(buf, "manifest");
        let version = d.u64()?;
        let prev_digest = d.array()?;
        let oldest_retained = d.u64()?;
        let table_id = d.str(64)?.to_string();
        let timestamp_ms = d.u64()?;
        let operation = d.str(256)?.to_string();
        let schema = schema_from(d.bytes(MAX_SCHEMA)?)?;
        let algorithm = Algorithm::from_id(d.u8()?)?;
        let mut partition_by = Vec::new();
        if format == FORMAT_PARTITIONED {
            let p = d.u16()? as usize;
            if p == 0 || p > MAX_PARTITION_COLUMNS {
                return Err(Error::malformed("manifest", format!("{p} partition columns")));
            }
            for _ in 0..p {
                partition_by.push(d.str(1 << 16)?.to_string());
            }
        }
        let n = d.count(MAX_FILES, 16 + 4 + 8 + 8 + 32 + 4 + 2 + partition_by.len())?;
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let file_id = FileId(d.array()?);
            let name = d.str(128)?.to_string();
            if !name.ends_with(".cvlt") || name.contains('/') || name.starts_with('.') {
                return Err(Error::malformed("manifest", format!("bad data file name {name:?}")));
            }
            let len = d.u64()?;
            let rows = d.u64()?;
            let footer_digest = d.array()?;
            let key_version = d.u32()?;
            let k = d.u16()? as usize;
            if k > 4097 {
                return Err(Error::malformed("manifest", "too many keys for a file"));
            }
            let mut key_ids = Vec::with_capacity(k.min(d.remaining()));
            for _ in 0..k {
                key_ids.push(KeyId::new(d.str(64)?)?);
            }
            let partition = (0..partition_by.len())
                .map(|_| PartitionValue::decode(&mut d))
                .collect::<Result<Vec<_>>>()?;
            files.push(FileRef {
                file_id,
                name,
                len,
                rows,
                footer_digest,
                key_ids,
                key_version,
                partition,
            });
        }
        let mut column_keys = Vec::new();
        if format != FORMAT {
            let n = d.u16()? as usize;
            if (n == 0 && format == FORMAT_COLUMN_KEYS) || n > MAX_COLUMN_KEYS {
                return Err(Error::malformed("manifest", format!("{n} column keys")));
            }
            for _ in 0..n {
                let column = d.str(1 << 16)?.to_string();
                let cmk = KeyId::new(d.str(64)?)?;
                column_keys.push(ColumnKey { column, cmk });
            }
        }
        d.finish()?;
        let m = Manifest {
            version,
            prev_digest,
            oldest_retained,
            table_id,
            timestamp_ms,
            operation,
            schema,
            algorithm,
            files,
            column_keys,
            partition_by,
        };
        m.check_partitions()?;
        Ok(m)
    }

    /// The format byte of this manifest's header.
    fn format(&self) -> u8 {
        if !self.partition_by.is_empty() {
            FORMAT_PARTITIONED
        } else if self.column_keys.is_empty() {
            FORMAT
        } else {
            FORMAT_COLUMN_KEYS
        }
    }

    /// Checks the partition columns (top-level columns of the schema, of a partition type, each
    /// named once) and every file's values (one per column, each fitting its column's type).
    fn check_partitions(&self) -> Result<()> {
        let bad = |detail: String| Error::malformed("manifest", detail);
        let mut types = Vec::with_capacity(self.partition_by.len());
        for (i, c) in self.partition_by.iter().enumerate() {
            let field = self
                .schema
                .field_with_name(c)
                .map_err(|_| bad(format!("partition column {c:?} is not in the schema")))?;
            if self.partition_by[..i].contains(c) || !super::partition::is_partition_type(field.data_type()) {
                return Err(bad(format!("partition column {c:?}")));
            }
            types.push(field.data_type());
        }
        for f in &self.files {
            if f.partition.len() != types.len() || !f.partition.iter().zip(&types).all(|(v, t)| v.fits(t)) {
                return Err(bad(format!("the partition values of file {}", f.name)));
            }
        }
        Ok(())
    }

    /// The partition of file `f` of this snapshot (`None` when the table is not partitioned).
    pub fn partition_of(&self, f: &FileRef) -> Option<super::Partition> {
        (!self.partition_by.is_empty()).then(|| super::Partition::new(&self.partition_by, f.partition.clone()))
    }

    /// Total rows.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Seals the manifest: under a fresh key from `access` and `cmk`, or with a checksum when the
    /// project is not encrypted.
    pub fn seal(&self, access: Option<(&KeyAccess, &KeyId)>) -> Result<Vec<u8>> {
        let mut body = self.encode_body()?;
        let mut e = Encoder::new();
        if self.column_keys.len() > MAX_COLUMN_KEYS {
            return Err(Error::InvalidArgument(format!(
                "a table has at most {MAX_COLUMN_KEYS} column keys"
            )));
        }
        e.raw(&MAGIC).u8(self.format()).u64(self.version);
        match access {
            Some((access, cmk)) => {
                let (key, env) = access.new_aux_key(cmk, &format!("manifest {}", self.version))?;
                let nonce: [u8; 12] = random_array()?;
                e.bytes(&env.to_bytes()).raw(&nonce);
                let k = derive_key(&key, Purpose::ManifestKey, &[self.table_id.as_bytes()])?;
                let tag =
                    crate::crypto::default_provider()
                        .aes256_gcm(&k)?
                        .seal_in_place(&nonce, e.as_slice(), &mut body)?;
                e.raw(&body).raw(&tag);
            }
            None => {
                e.bytes(&[]).raw(&[0u8; 12]);
                let mut h = blake3::Hasher::new();
                h.update(e.as_slice()).update(&body);
                let sum = *h.finalize().as_bytes();
                e.raw(&body).raw(&sum);
            }
        }
        Ok(e.finish())
    }

    /// Opens a sealed manifest that should be `version` of table `table_id`. `keys` is the key
    /// access and the CMKs the project allows for its manifests (its CMK, and during a migration the
    /// CMK it is leaving): a manifest whose key is wrapped under any other CMK is refused with
    /// [`Error::ManifestKeyMismatch`] before its key is unwrapped.
    pub fn open(
        bytes: &[u8],
        version: u64,
        table_id: Option<&str>,
        keys: Option<(&KeyAccess, &[KeyId])>,
    ) -> Result<Self> {
        let mut d = Decoder::new(bytes, "manifest");
        if d.array::<4>()? != MAGIC {
            return Err(Error::NotColvault("not a colvault manifest".into()));
        }
        let format = d.u8()?;
        if ![FORMAT, FORMAT_COLUMN_KEYS, FORMAT_PARTITIONED].contains(&format) {
            return Err(Error::UnsupportedVersion {
                found: format.to_string(),
                supported: FORMAT,
            });
        }
        if d.u64()? != version {
            return Err(Error::integrity(format!(
                "manifest version {version} (its header names another version)"
            )));
        }
        let env = d.bytes(4096)?;
        let nonce: [u8; 12] = d.array()?;
        let header_len = bytes.len() - d.remaining();
        let (header, rest) = bytes.split_at(header_len);
        let body = if env.is_empty() {
            if rest.len() < 32 {
                return Err(Error::integrity("manifest (too short)"));
            }
            let (body, sum) = rest.split_at(rest.len() - 32);
            let mut h = blake3::Hasher::new();
            h.update(header).update(body);
            if !crate::crypto::ct_eq(h.finalize().as_bytes(), sum) {
                return Err(Error::integrity(format!("manifest version {version}")));
            }
            body.to_vec()
        } else {
            let (access, allowed) = keys.ok_or_else(|| Error::KeysRequired {
                algorithm: "the table manifest".into(),
            })?;
            let env = DataKeyEnvelope::from_bytes(env)?;
            if !allowed.contains(env.key_id()) {
                return Err(Error::ManifestKeyMismatch {
                    version,
                    found: env.key_id().to_string(),
                    expected: allowed.iter().map(KeyId::as_str).collect::<Vec<_>>().join(", "),
                });
            }
            let key = access.open_aux_key(&env, &format!("manifest {version}"))?;
            let table_id = table_id.unwrap_or(access.table_id());
            let k = derive_key(&key, Purpose::ManifestKey, &[table_id.as_bytes()])?;
            if rest.len() < 16 {
                return Err(Error::integrity("manifest (too short)"));
            }
            let (ct, tag) = rest.split_at(rest.len() - 16);
            let mut body = ct.to_vec();
            let tag: [u8; 16] = tag.try_into().expect("16 bytes");
            crate::crypto::default_provider()
                .aes256_gcm(&k)?
                .open_in_place(&nonce, header, &mut body, &tag)
                .map_err(|_| Error::integrity(format!("manifest version {version}")))?;
            body
        };
        let m = Manifest::decode_body(&body, format)?;
        // The header's format (authenticated with the body) says whether column keys follow.
        if m.format() != format {
            return Err(Error::malformed(
                "manifest",
                format!(
                    "format {format} with {} column keys and {} partition columns",
                    m.column_keys.len(),
                    m.partition_by.len()
                ),
            ));
        }
        if m.version != version || table_id.is_some_and(|t| t != m.table_id) {
            return Err(Error::integrity(format!(
                "manifest version {version} (belongs elsewhere)"
            )));
        }
        Ok(m)
    }

    /// The CMK version a sealed manifest's key is wrapped under (`None` for a checksummed one).
    pub fn sealed_key_version(bytes: &[u8]) -> Result<Option<(KeyId, u32)>> {
        let mut d = Decoder::new(bytes, "manifest");
        d.raw(4 + 1 + 8)?;
        let env = d.bytes(4096)?;
        if env.is_empty() {
            return Ok(None);
        }
        let env = DataKeyEnvelope::from_bytes(env)?;
        Ok(Some((env.key_id().clone(), env.key_version())))
    }

    /// An empty version-0 manifest for a new table.
    pub fn genesis(table_id: String, schema: SchemaRef, algorithm: Algorithm) -> Self {
        Self::genesis_with(table_id, schema, algorithm, Vec::new())
    }

    /// An empty version-0 manifest for a new table with column keys.
    pub fn genesis_with(
        table_id: String,
        schema: SchemaRef,
        algorithm: Algorithm,
        column_keys: Vec<ColumnKey>,
    ) -> Self {
        Manifest {
            version: 0,
            prev_digest: [0; 32],
            oldest_retained: 1,
            table_id,
            timestamp_ms: 0,
            operation: "create".into(),
            schema: Arc::clone(&schema),
            algorithm,
            files: Vec::new(),
            column_keys,
            partition_by: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn manifest(column_keys: Vec<ColumnKey>) -> Manifest {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("salary", DataType::Float64, true),
        ]));
        let mut m = Manifest::genesis_with("t1".into(), schema, Algorithm::None, column_keys);
        m.version = 1;
        m
    }

    /// The checksummed form of `bytes` with its format byte set to `format`.
    fn with_format(bytes: &[u8], format: u8) -> Vec<u8> {
        let mut b = bytes[..bytes.len() - 32].to_vec();
        b[4] = format;
        let sum = *blake3::hash(&b).as_bytes();
        b.extend_from_slice(&sum);
        b
    }

    #[test]
    fn column_keys_need_format_2_and_round_trip() {
        let keys = vec![ColumnKey {
            column: "salary".into(),
            cmk: KeyId::new("k-hr").unwrap(),
        }];
        let with = manifest(keys.clone()).seal(None).unwrap();
        let without = manifest(Vec::new()).seal(None).unwrap();
        assert_eq!((with[4], without[4]), (FORMAT_COLUMN_KEYS, FORMAT));
        assert_eq!(Manifest::open(&with, 1, Some("t1"), None).unwrap().column_keys, keys);
        assert!(Manifest::open(&without, 1, Some("t1"), None)
            .unwrap()
            .column_keys
            .is_empty());
        // A format byte that disagrees with the body is refused either way.
        for bad in [with_format(&with, FORMAT), with_format(&without, FORMAT_COLUMN_KEYS)] {
            assert!(matches!(
                Manifest::open(&bad, 1, Some("t1"), None),
                Err(Error::Malformed { .. })
            ));
        }
        assert!(matches!(
            Manifest::open(&with_format(&without, 4), 1, Some("t1"), None),
            Err(Error::UnsupportedVersion { .. })
        ));
    }

    fn file(name: &str, partition: Vec<PartitionValue>) -> FileRef {
        FileRef {
            file_id: FileId([7; 16]),
            name: name.into(),
            len: 100,
            rows: 10,
            footer_digest: [1; 32],
            key_ids: Vec::new(),
            key_version: 0,
            partition,
        }
    }

    #[test]
    fn partitions_need_format_3_and_round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ds", DataType::Utf8, false),
            Field::new("salary", DataType::Float64, true),
        ]));
        let keys = vec![ColumnKey {
            column: "salary".into(),
            cmk: KeyId::new("k-hr").unwrap(),
        }];
        for column_keys in [Vec::new(), keys] {
            let mut m = Manifest::genesis_with("t1".into(), schema.clone(), Algorithm::None, column_keys);
            m.version = 1;
            m.partition_by = vec!["ds".into()];
            m.files = vec![
                file("a.cvlt", vec![PartitionValue::Str("2024-01-01".into())]),
                file("b.cvlt", vec![PartitionValue::Null]),
            ];
            let sealed = m.seal(None).unwrap();
            assert_eq!(sealed[4], FORMAT_PARTITIONED);
            let back = Manifest::open(&sealed, 1, Some("t1"), None).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.partition_of(&back.files[0]).unwrap().to_string(), "ds=2024-01-01");
            // Relabelled as an unpartitioned manifest: refused.
            for f in [FORMAT, FORMAT_COLUMN_KEYS] {
                assert!(Manifest::open(&with_format(&sealed, f), 1, Some("t1"), None).is_err());
            }
        }
        // A value of the wrong type for its column, or a partition column the schema lacks: refused.
        let mut m = manifest(Vec::new());
        m.partition_by = vec!["id".into()];
        m.files = vec![file("a.cvlt", vec![PartitionValue::Str("x".into())])];
        assert!(matches!(
            Manifest::open(&m.seal(None).unwrap(), 1, Some("t1"), None),
            Err(Error::Malformed { .. })
        ));
        m.partition_by = vec!["nope".into()];
        m.files = vec![file("a.cvlt", vec![PartitionValue::Int(1)])];
        assert!(matches!(
            Manifest::open(&m.seal(None).unwrap(), 1, Some("t1"), None),
            Err(Error::Malformed { .. })
        ));
        // A file with too few values cannot even be sealed.
        m.partition_by = vec!["id".into()];
        m.files = vec![file("a.cvlt", Vec::new())];
        assert!(m.seal(None).is_err());
    }
}
