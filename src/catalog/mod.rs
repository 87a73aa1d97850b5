//! The control plane's catalog: the trust anchor for everything a reader must *expect*.
//!
//! Storage (a project's directory or object-store prefix) is untrusted: whoever can write it can
//! replace files with older or foreign copies. So what a reader expects comes from the catalog, never
//! from the storage it is about to read:
//!
//! * per project: its immutable random id, its location, its encryption policy (algorithm, CMK, an
//!   ongoing migration's from-settings), and the generation and digest of its settings; the settings
//!   file on storage is a sealed copy that must match;
//! * per table: its immutable random id, its location under the project, its head (version and
//!   BLAKE3 digest of the head manifest), which the manifest chain on storage must reach, and its
//!   column keys (the columns kept under a CMK of their own), which every manifest and file must keep;
//! * per KMS that keeps its state in a file (the local keystore): the highest generation seen, so an
//!   older copy of the keystore is refused.
//!
//! Every change is a compare-and-swap, as in Iceberg's JDBC catalog: registering a name that exists
//! fails, a settings update names the settings it replaces, a table commit names the head it
//! replaces (`UPDATE … WHERE head_version = $expected AND head_digest = $expected`). A commit writes
//! its files and manifest to storage first, then swaps the head here: a crash before the swap leaves
//! an orphan manifest that no reader uses and `vacuum` removes.
//!
//! Implementations: [`SqlCatalog`] over SQLite (the embedded default, `sqlite:PATH`) and, with the
//! `postgres` feature, PostgreSQL (`postgres://…`), sharing one SQL layer ([`sql`]).

mod records;
pub mod sql;
pub mod sqlite;

#[cfg(feature = "postgres")]
pub mod postgres;

use std::fmt;
use std::sync::Arc;

pub use records::{ColumnKey, EncryptionPolicy, ProjectRecord, TableHead, TableRecord};
pub use sql::SqlCatalog;

use crate::error::{Error, Result};
use crate::kms::KmsAdmin;

/// The catalog seam: projects, tables and KMS generation marks, each change a compare-and-swap.
///
/// Object safe, `Send + Sync`: share it as `Arc<dyn Catalog>`.
pub trait Catalog: Send + Sync + fmt::Debug {
    /// A name for messages (the URL without credentials).
    fn describe(&self) -> String;

    /// Registers a project (and the tables it already holds, when adopting one). Fails with
    /// [`Error::AlreadyExists`] if the name (or id) is taken; then nothing is recorded.
    fn create_project(&self, project: &ProjectRecord, tables: &[TableRecord]) -> Result<()>;

    /// The project named `name`.
    fn project(&self, name: &str) -> Result<Option<ProjectRecord>>;

    /// The project with id `project_id`.
    fn project_by_id(&self, project_id: &str) -> Result<Option<ProjectRecord>>;

    /// Every project, by name.
    fn list_projects(&self) -> Result<Vec<ProjectRecord>>;

    /// Replaces a project's settings state (policy, generation, digest) if it still is `expected`
    /// (compared by generation and settings digest). `Ok(false)` when another change came first.
    fn update_project(&self, expected: &ProjectRecord, new: &ProjectRecord) -> Result<bool>;

    /// Removes a project's registration and its tables' (its storage is removed by the caller
    /// afterwards).
    fn drop_project(&self, project_id: &str) -> Result<()>;

    /// Registers a table. Fails with [`Error::AlreadyExists`] if the project holds that name.
    fn create_table(&self, table: &TableRecord) -> Result<()>;

    /// The table `name` of project `project_id`.
    fn table(&self, project_id: &str, name: &str) -> Result<Option<TableRecord>>;

    /// The table with id `table_id`.
    fn table_by_id(&self, table_id: &str) -> Result<Option<TableRecord>>;

    /// The tables of a project, by name.
    fn list_tables(&self, project_id: &str) -> Result<Vec<TableRecord>>;

    /// Swaps a table's head from `expected` to `new`. `Ok(false)` when the head moved meanwhile.
    fn swap_head(&self, table_id: &str, expected: &TableHead, new: &TableHead) -> Result<bool>;

    /// Removes a table's registration (its storage is removed by the caller afterwards).
    fn drop_table(&self, table_id: &str) -> Result<()>;

    /// Records that KMS `kms` is at `generation`: raises the high-water mark, or fails with
    /// [`Error::KeystoreRollback`] if the catalog has seen a higher one.
    fn observe_kms_generation(&self, kms: &str, generation: u64) -> Result<()>;

    /// The highest generation recorded for KMS `kms`.
    fn kms_generation(&self, kms: &str) -> Result<Option<u64>>;
}

/// Opens a catalog from a URL: `sqlite:PATH` (created on first use), `sqlite::memory:`, or with the
/// `postgres` feature `postgres://user@host:port/db` (also `postgresql://`).
pub fn open(url: &str) -> Result<Arc<dyn Catalog>> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        return Ok(Arc::new(SqlCatalog::sqlite(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(SqlCatalog::postgres(url)?));
        #[cfg(not(feature = "postgres"))]
        return Err(Error::InvalidArgument(
            "this colvault was built without the postgres feature; rebuild with --features postgres".into(),
        ));
    }
    Err(Error::InvalidArgument(format!(
        "unknown catalog URL {:?}: expected sqlite:PATH or postgres://…",
        sql::redact(url)
    )))
}

/// The project a command line names: by its name, else by its directory (the recorded location,
/// compared as given and canonicalised).
pub fn find_project(catalog: &dyn Catalog, name_or_dir: &std::path::Path) -> Result<Option<ProjectRecord>> {
    if let Some(rec) = catalog.project(&name_or_dir.to_string_lossy())? {
        return Ok(Some(rec));
    }
    if let Some(url) = name_or_dir.to_str().filter(|s| s.contains("://")) {
        let wanted = crate::storage::Location::parse(url)?.to_url();
        return Ok(catalog.list_projects()?.into_iter().find(|rec| rec.location == wanted));
    }
    let wanted = [std::path::absolute(name_or_dir).ok(), name_or_dir.canonicalize().ok()];
    Ok(catalog.list_projects()?.into_iter().find(|rec| {
        let loc = std::path::Path::new(&rec.location);
        wanted
            .iter()
            .flatten()
            .any(|w| w == loc || loc.canonicalize().ok().as_deref() == Some(w))
    }))
}

/// Reports the KMS's state generation to the catalog, if the KMS keeps its state where storage
/// could roll it back (the local keystore): a keystore older than the catalog's high-water mark is
/// refused with [`Error::KeystoreRollback`].
///
/// Another process (or thread) may commit a change, and raise the mark, between this call's read of
/// the generation and its report; so a refusal is checked against a fresh read (a few times): a
/// genuine rollback stays below the mark, a stale read does not.
pub fn anchor_kms(catalog: &dyn Catalog, kms: &dyn KmsAdmin) -> Result<()> {
    let mut attempt = 0;
    loop {
        let Some((id, generation)) = kms.state_generation()? else {
            return Ok(());
        };
        match catalog.observe_kms_generation(&id, generation) {
            Err(Error::KeystoreRollback { .. }) if attempt < 3 => attempt += 1,
            other => return other,
        }
    }
}

/// A fresh random id: 16 bytes from the OS CSPRNG, as 32 lowercase hex digits.
// Unused until projects and tables register themselves (issue 14, under way); clippy -D warnings.
#[allow(dead_code)]
pub(crate) fn new_id() -> Result<String> {
    Ok(crate::codec::hex(&crate::crypto::random_array::<16>()?))
}

/// Checks a stored id (32 lowercase hex digits).
pub(crate) fn check_id(id: &str, what: &str) -> Result<()> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(Error::integrity(format!("the {what} id {id:?}")))
    }
}
