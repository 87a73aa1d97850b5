//! Tables: a schema plus a chain of sealed manifest versions listing committed files.
//!
//! Layout under the project directory:
//! ```text
//! tables/<name>/table.id                    the table's random id (bound into every manifest)
//! tables/<name>/_manifest/v<20 digits>.cvm  one sealed manifest per version, created with
//!                                           create-new semantics (the commit point)
//! tables/<name>/data/<file id>.cvlt         data files, published by rename before their commit
//! ```
//! A commit writes its data files, then publishes manifest version `head + 1` with create-new
//! semantics; if another writer got there first it re-reads the head, re-applies its change and
//! tries again. A reader only ever sees complete versions; files no version references (left by a
//! crash, or no longer needed after expiry) are removed by [`Table::vacuum`].

pub mod lifecycle;
pub mod manifest;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{new_null_array, RecordBatch, RecordBatchReader};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::crypto::{random_array, FileId};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::kms::KeyId;
use crate::project::Project;
use crate::read::{BatchReader, FileReader, Predicate, ReaderOptions};
use crate::write::{Compression, FileWriter, WriterOptions};
use crate::KeyAccess;
pub use manifest::{FileRef, Manifest};

const MAX_COMMIT_ATTEMPTS: usize = 100_000;

/// Checks a table name: 1 to 128 characters, a letter first, then letters, digits, underscores.
pub fn validate_table_name(name: &str) -> Result<()> {
    crate::project::check_identifier(name, "table", 1, 128)
}

impl Project {
    /// Creates a table with `schema`.
    pub fn create_table(&self, name: &str, schema: SchemaRef) -> Result<Table> {
        validate_table_name(name)?;
        let dir = self.tables_dir().join(name);
        fs::create_dir_all(self.tables_dir()).map_err(|e| Error::io("creating the tables directory", e))?;
        fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::InvalidArgument(format!("table {name} already exists")),
            _ => Error::io(format!("creating table {name}"), e),
        })?;
        for sub in ["_manifest", "data"] {
            fs::create_dir(dir.join(sub)).map_err(|e| Error::io(format!("creating table {name}"), e))?;
        }
        let table_id: String = random_array::<16>()?.iter().map(|b| format!("{b:02x}")).collect();
        fsutil::write_new_atomic(&dir.join("table.id"), table_id.as_bytes())?;
        let table = Table::new(self.clone(), name, dir, table_id.clone());
        let genesis = Manifest::genesis(table_id, schema, self.settings().algorithm);
        table.publish(&genesis, None, "create")?;
        Ok(table)
    }

    /// Opens the table `name`.
    pub fn table(&self, name: &str) -> Result<Table> {
        validate_table_name(name)?;
        let dir = self.tables_dir().join(name);
        let id = fs::read_to_string(dir.join("table.id")).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::InvalidArgument(format!("no table named {name}")),
            _ => Error::io(format!("opening table {name}"), e),
        })?;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::integrity(format!("table {name} id file")));
        }
        Ok(Table::new(self.clone(), name, dir, id))
    }

    /// The names of the tables, sorted.
    pub fn list_tables(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(self.tables_dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("listing tables", e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("listing tables", e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if validate_table_name(&name).is_ok() && entry.path().join("table.id").exists() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Drops a table: its directory is moved aside atomically, then removed.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        let table = self.table(name)?;
        let graveyard = self.dir().join("dropped");
        fs::create_dir_all(&graveyard).map_err(|e| Error::io("dropping a table", e))?;
        let dest = graveyard.join(format!("{name}-{}", table.table_id));
        fs::rename(&table.dir, &dest).map_err(|e| Error::io(format!("dropping table {name}"), e))?;
        fsutil::sync_dir(&self.tables_dir())?;
        fs::remove_dir_all(&dest).map_err(|e| Error::io(format!("removing dropped table {name}"), e))
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
    dir: PathBuf,
    table_id: String,
    verified: Arc<Mutex<BTreeMap<u64, [u8; 32]>>>,
    write: TableWriteOptions,
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

fn now_ms() -> u64 {
    UNIX_EPOCH.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Table {
    fn new(project: Project, name: &str, dir: PathBuf, table_id: String) -> Self {
        Table {
            project,
            name: name.to_string(),
            dir,
            table_id,
            verified: Arc::new(Mutex::new(BTreeMap::new())),
            write: TableWriteOptions::default(),
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
    fn access(&self) -> Option<KeyAccess> {
        let s = self.project.settings();
        let migrating_key = s.migrating_from.as_ref().and_then(|(_, k)| k.as_ref());
        (s.cmk.is_some() || migrating_key.is_some()).then(|| self.project.access(&self.table_id))
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

    fn manifest_path(&self, version: u64) -> PathBuf {
        self.dir.join("_manifest").join(format!("v{version:020}.cvm"))
    }

    fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join("data").join(name)
    }

    /// Manifest versions present on storage, ascending.
    fn versions(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let dir = self.dir.join("_manifest");
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))? {
            let name = entry.map_err(|e| Error::io("listing manifests", e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(v) = name.strip_prefix('v').and_then(|n| n.strip_suffix(".cvm")) {
                if let Ok(v) = v.parse::<u64>() {
                    out.push(v);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn read_manifest(&self, version: u64) -> Result<(Manifest, [u8; 32])> {
        let path = self.manifest_path(version);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::integrity(format!("manifest version {version} is missing")),
            _ => Error::io(format!("reading {}", path.display()), e),
        })?;
        if self.require_sealed() && Manifest::sealed_key_version(&bytes)?.is_none() {
            return Err(Error::integrity(format!(
                "manifest version {version} of table {} is not sealed, but the project is encrypted",
                self.name
            )));
        }
        let access = self.access();
        let cmks = self.manifest_cmks();
        let keys = access.as_ref().map(|a| (a, cmks.as_slice()));
        let m = Manifest::open(&bytes, version, Some(&self.table_id), keys)?;
        Ok((m, *blake3::hash(&bytes).as_bytes()))
    }

    /// The newest version, with the chain from its oldest retained version checked (each version's
    /// previous digest matches the version before it, none missing).
    ///
    /// A writer may commit, and `expire`/`vacuum` remove old manifests, while this runs: a read
    /// that fails while the newest version moves on is tried again on the new head (a bounded
    /// number of times), so a concurrent change never surfaces as damage.
    pub fn head(&self) -> Result<Manifest> {
        let mut attempt = 0;
        loop {
            let seen = self.versions()?.last().copied();
            match self.head_at(seen) {
                Ok(m) => return Ok(m),
                Err(_) if attempt < 16 && self.versions()?.last().copied() != seen => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Version `head` (the newest listed), with its chain checked.
    fn head_at(&self, head: Option<u64>) -> Result<Manifest> {
        let head = head.ok_or_else(|| Error::integrity(format!("table {} has no manifest", self.name)))?;
        let (m, digest) = self.read_manifest(head)?;
        self.verify_chain(&m, digest)?;
        Ok(m)
    }

    /// Checks the chain below `head` down to its oldest retained version, remembering verified
    /// digests so each version is checked once per table handle.
    fn verify_chain(&self, head: &Manifest, digest: [u8; 32]) -> Result<()> {
        let mut verified = self.verified.lock().map_err(|_| Error::Poisoned)?;
        if verified.get(&head.version) == Some(&digest) {
            return Ok(());
        }
        let horizon = head.oldest_retained.max(1);
        let mut v = head.version;
        let mut prev_digest = head.prev_digest;
        let mut chain = vec![(v, digest)];
        while v > horizon {
            let (prev, d) = self.read_manifest(v - 1)?;
            if d != prev_digest {
                return Err(Error::integrity(format!(
                    "manifest chain (version {v} does not follow version {})",
                    v - 1
                )));
            }
            if verified.get(&(v - 1)) == Some(&d) {
                break;
            }
            chain.push((v - 1, d));
            v -= 1;
            prev_digest = prev.prev_digest;
        }
        if v == 1 && prev_digest != [0; 32] {
            return Err(Error::integrity("manifest chain (version 1 has a predecessor)"));
        }
        verified.retain(|k, _| *k >= horizon);
        verified.extend(chain);
        Ok(())
    }

    /// Version `version`: a retained version of the verified chain.
    pub fn snapshot(&self, version: u64) -> Result<Manifest> {
        let head = self.head()?;
        if version == head.version {
            return Ok(head);
        }
        if version < head.oldest_retained.max(1) || version > head.version {
            return Err(Error::InvalidArgument(format!(
                "table {} has no version {version} (retained: {} to {})",
                self.name,
                head.oldest_retained.max(1),
                head.version
            )));
        }
        let (m, digest) = self.read_manifest(version)?;
        let known = self
            .verified
            .lock()
            .map_err(|_| Error::Poisoned)?
            .get(&version)
            .copied();
        if known != Some(digest) {
            return Err(Error::integrity(format!(
                "manifest version {version} (not the one the chain verified)"
            )));
        }
        Ok(m)
    }

    fn publish(&self, m: &Manifest, prev: Option<&Manifest>, op: &str) -> Result<Option<Manifest>> {
        let mut next = m.clone();
        next.version = prev.map_or(1, |p| p.version + 1);
        next.prev_digest = match prev {
            Some(p) => *blake3::hash(
                &fs::read(self.manifest_path(p.version)).map_err(|e| Error::io("reading the head manifest", e))?,
            )
            .as_bytes(),
            None => [0; 32],
        };
        next.timestamp_ms = now_ms();
        next.operation = op.to_string();
        let access = self.access();
        let cmk = self.project.settings().cmk.clone();
        let sealed = next.seal(access.as_ref().zip(cmk.as_ref()))?;
        if fsutil::write_new_atomic(&self.manifest_path(next.version), &sealed)? {
            Ok(Some(next))
        } else {
            Ok(None)
        }
    }

    /// Commits a change: `change` gets the current head and returns the next manifest's content
    /// (its version and chain fields are filled in here), or an error to abort. On a conflict the
    /// change is re-applied to the new head.
    fn commit<F>(&self, op: &str, mut change: F) -> Result<Manifest>
    where
        F: FnMut(&Manifest) -> Result<Manifest>,
    {
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            let head = self.head()?;
            let next = change(&head)?;
            if let Some(done) = self.publish(&next, Some(&head), op)? {
                return Ok(done);
            }
            // Lost the race: back off a little, with jitter, and retry on the new head.
            let jitter = random_array::<1>()?[0] as u64;
            std::thread::sleep(Duration::from_micros((attempt.min(20) as u64 * 50) + jitter));
        }
        Err(Error::InvalidArgument(format!(
            "could not commit to table {} after {MAX_COMMIT_ATTEMPTS} attempts",
            self.name
        )))
    }

    fn writer_options(&self) -> WriterOptions {
        let s = self.project.settings();
        let b = match &s.cmk {
            Some(cmk) => WriterOptions::encrypted(s.algorithm, self.project.access(&self.table_id), cmk.clone()),
            None => WriterOptions::plaintext(),
        };
        b.compression(self.write.compression)
            .max_row_group_rows(self.write.row_group_rows)
            .allow_legacy_rc4(s.allow_legacy_rc4)
            .build()
    }

    /// Writes `batches` into new data files (published, not yet committed).
    fn write_files(&self, schema: &SchemaRef, batches: impl IntoIterator<Item = RecordBatch>) -> Result<Vec<FileRef>> {
        let mut out = Vec::new();
        let mut current: Option<(FileWriter<File>, PathBuf, FileId)> = None;
        for batch in batches {
            if batch.schema().fields() != schema.fields() {
                return Err(Error::SchemaMismatch(format!(
                    "table {} has fields {:?}, the batch {:?}",
                    self.name,
                    schema.fields(),
                    batch.schema().fields()
                )));
            }
            if current.is_none() {
                current = Some(self.start_file(schema)?);
            }
            let (w, _, _) = current.as_mut().expect("a writer was started");
            w.write(&batch)?;
            if w.num_rows() >= self.write.file_rows as u64 {
                out.push(self.finish_file(current.take().expect("a writer is open"))?);
            }
        }
        if let Some(c) = current {
            out.push(self.finish_file(c)?);
        }
        Ok(out)
    }

    fn start_file(&self, schema: &SchemaRef) -> Result<(FileWriter<File>, PathBuf, FileId)> {
        let w_tmp = fsutil::temp_path(&self.dir.join("data").join("new.cvlt"))?;
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(&w_tmp)
            .map_err(|e| Error::io(format!("creating {}", w_tmp.display()), e))?;
        let w = FileWriter::try_new(f, schema.clone(), self.writer_options())?;
        let id = w.file_id();
        Ok((w, w_tmp, id))
    }

    fn finish_file(&self, (w, tmp, id): (FileWriter<File>, PathBuf, FileId)) -> Result<FileRef> {
        let (meta, f) = w.close_into_sink()?;
        f.sync_all().map_err(|e| Error::io("syncing a data file", e))?;
        let name = format!("{id}.cvlt");
        let dest = self.data_path(&name);
        fs::rename(&tmp, &dest).map_err(|e| Error::io(format!("publishing {}", dest.display()), e))?;
        fsutil::sync_dir(&self.dir.join("data"))?;
        Ok(FileRef {
            file_id: meta.file_id,
            name,
            len: meta.file_len,
            rows: meta.num_rows,
            footer_digest: meta.footer_digest,
            key_ids: meta.key_ids,
            key_version: meta.key_version,
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

    /// Writes `batches` into new files, then commits them added to (or replacing) the head's files.
    fn write_and_commit(
        &self,
        op: &str,
        batches: impl IntoIterator<Item = RecordBatch>,
        replace: bool,
    ) -> Result<CommitInfo> {
        let schema = self.head()?.schema;
        let files = self.write_files(&schema, batches)?;
        let m = self.commit(op, |head| {
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
            batches.extend(self.read_file(f, &head)?);
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

    /// Expires every version older than `keep_from` (the head is always kept): their manifests are
    /// deleted, and [`vacuum`](Self::vacuum) may then delete the files only they referenced.
    pub fn expire_snapshots(&self, keep_from: u64) -> Result<usize> {
        let head = self.head()?;
        let keep_from = keep_from.min(head.version).max(1);
        if keep_from <= head.oldest_retained {
            return Ok(0);
        }
        // First commit the new horizon, then delete below it: a crash in between leaves old
        // manifests that the chain no longer needs, which a later expiry removes.
        self.commit("expire snapshots", |h| {
            let mut next = h.clone();
            next.oldest_retained = keep_from.max(h.oldest_retained);
            Ok(next)
        })?;
        let mut removed = 0;
        for v in self.versions()? {
            if v < keep_from {
                fs::remove_file(self.manifest_path(v)).map_err(|e| Error::io("expiring a manifest", e))?;
                removed += 1;
            }
        }
        self.verified
            .lock()
            .map_err(|_| Error::Poisoned)?
            .retain(|v, _| *v >= keep_from);
        fsutil::sync_dir(&self.dir.join("_manifest"))?;
        Ok(removed)
    }

    /// Expires versions older than `age` (by commit time).
    pub fn expire_older_than(&self, age: Duration) -> Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let head = self.head()?;
        let mut keep_from = head.version;
        for v in (head.oldest_retained.max(1)..head.version).rev() {
            if self.snapshot(v)?.timestamp_ms < cutoff {
                break;
            }
            keep_from = v;
        }
        self.expire_snapshots(keep_from)
    }

    /// Deletes data files that no retained version references and that are older than `grace`
    /// (so a concurrent writer's files, published but not yet committed, survive), and leftover
    /// temporary files. Returns how many files were removed.
    pub fn vacuum(&self, grace: Duration) -> Result<usize> {
        let head = self.head()?;
        let mut live = HashSet::new();
        for v in head.oldest_retained.max(1)..=head.version {
            for f in self.snapshot(v)?.files {
                live.insert(f.name);
            }
        }
        let data = self.dir.join("data");
        let mut removed = fsutil::remove_files_where(&data, grace, |name| !live.contains(name))?;
        removed += fsutil::remove_stale_temps(&self.dir.join("_manifest"), grace)?;
        Ok(removed)
    }

    /// All rows of one committed file, in the manifest's schema (columns added after the file was
    /// written read as null), for rewriting it.
    fn read_file(&self, f: &FileRef, m: &Manifest) -> Result<Vec<RecordBatch>> {
        TableReader {
            table: self.clone(),
            manifest: m.clone(),
            files: VecDeque::from([f.clone()]),
            schema: m.schema.clone(),
            names: m.schema.fields().iter().map(|f| f.name().clone()).collect(),
            predicates: Vec::new(),
            batch_size: 8192,
            current: None,
        }
        .read_all()
    }

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

    /// Opens one committed file, checking it against the manifest: its id, length and footer digest,
    /// the project's algorithm and the keys the manifest allows.
    fn open_file(&self, f: &FileRef, m: &Manifest) -> Result<FileReader> {
        let path = self.data_path(&f.name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Expired and vacuumed by a concurrent change (retriable), or lost (damage)?
                return Err(match self.head() {
                    Ok(h) if m.version < h.oldest_retained.max(1) => Error::SnapshotExpired {
                        table: self.name.clone(),
                        version: m.version,
                    },
                    _ => Error::integrity(format!("data file {} is missing", f.file_id)),
                });
            }
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        let r = FileReader::open(file, self.reader_options(f, m)?)?;
        if r.file_id() != f.file_id || r.file_len() != f.len || r.footer_digest() != f.footer_digest {
            return Err(Error::integrity(format!(
                "data file {} (it is not the file the manifest committed)",
                f.file_id
            )));
        }
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
    /// Prunes row groups with a predicate.
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
        let m = match self.version {
            Some(v) => self.table.snapshot(v)?,
            None => self.table.head()?,
        };
        if let Some(min) = self.min_version {
            if m.version < min {
                return Err(Error::integrity(format!(
                    "table {} is at version {}, older than the minimum {min} (a rollback?)",
                    self.table.name, m.version
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
        Ok(TableReader {
            table: self.table,
            files: m.files.iter().cloned().collect(),
            manifest: m,
            schema,
            names,
            predicates: self.predicates,
            batch_size: self.batch_size,
            current: None,
        })
    }
}

/// Batches of a table snapshot, file after file. Columns added after a file was written read as
/// null for that file's rows.
pub struct TableReader {
    table: Table,
    manifest: Manifest,
    files: VecDeque<FileRef>,
    schema: SchemaRef,
    names: Vec<String>,
    predicates: Vec<Predicate>,
    batch_size: usize,
    current: Option<(BatchReader, Vec<Option<usize>>)>,
}

impl fmt::Debug for TableReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableReader")
            .field("version", &self.manifest.version)
            .field("files_left", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl TableReader {
    /// The snapshot's version.
    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// The next batch, with colvault's typed error.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some((reader, map)) = &mut self.current {
                if let Some(b) = reader.next_batch()? {
                    let columns = map
                        .iter()
                        .zip(self.schema.fields())
                        .map(|(src, field)| match src {
                            Some(i) => b.column(*i).clone(),
                            None => new_null_array(field.data_type(), b.num_rows()),
                        })
                        .collect();
                    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
                    return RecordBatch::try_new_with_options(self.schema.clone(), columns, &opts)
                        .map(Some)
                        .map_err(|e| Error::Arrow(e.to_string()));
                }
                self.current = None;
            }
            let Some(f) = self.files.pop_front() else {
                return Ok(None);
            };
            let reader = self.table.open_file(&f, &self.manifest)?;
            let file_schema = reader.schema();
            let present: Vec<usize> = self.names.iter().filter_map(|n| file_schema.index_of(n).ok()).collect();
            let mut scan = reader.scan().project(present.clone()).batch_size(self.batch_size);
            for p in &self.predicates {
                if file_schema.index_of(p.column()).is_ok() {
                    scan = scan.filter(p.clone());
                }
            }
            let batches = scan.build()?;
            // Where each output column comes from in this file's (projected, schema-ordered) batches.
            let mut sorted = present.clone();
            sorted.sort_unstable();
            let map = self
                .names
                .iter()
                .map(|n| {
                    file_schema
                        .index_of(n)
                        .ok()
                        .and_then(|i| sorted.iter().position(|&s| s == i))
                })
                .collect();
            self.current = Some((batches, map));
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
        self.schema.clone()
    }
}
