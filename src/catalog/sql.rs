//! One SQL layer for every SQL catalog: the schema, its versioned migrations, and each
//! compare-and-swap, written once over a small connection seam ([`SqlConn`]) that SQLite
//! ([`super::sqlite`]) and PostgreSQL (`super::postgres`, feature `postgres`) implement.
//!
//! The SQL is the portable subset both speak: `TEXT` and `BIGINT` columns only (digests as hex,
//! optional values as empty strings, so no typed `NULL`s), `$n` placeholders (the SQLite backend
//! rewrites them to `?n`), `UPDATE … WHERE` for every swap, `BEGIN` (SQLite: `BEGIN IMMEDIATE`)
//! around multi-row changes.

use std::fmt;
use std::sync::Mutex;

use super::{check_id, Catalog, ColumnKey, EncryptionPolicy, ProjectRecord, TableHead, TableRecord};
use crate::codec::hex;
use crate::crypto::Algorithm;
use crate::error::{Error, Result};
use crate::kms::KeyId;

/// A value bound to or read from a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A 64-bit integer (`BIGINT`).
    Int(i64),
    /// Text (`TEXT`).
    Text(String),
}

/// How a statement failed.
#[derive(Debug)]
pub enum SqlError {
    /// A `UNIQUE` or primary-key constraint refused a row.
    Unique,
    /// Anything else, with whether trying again may succeed (a lost connection, a busy database).
    Other {
        /// What the database said.
        detail: String,
        /// Whether the same call may succeed later.
        retriable: bool,
    },
}

/// One connection to a SQL database: the seam a SQL catalog backend implements.
pub trait SqlConn: Send {
    /// Runs a statement without results; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError>;
    /// Runs a query; every row as values (`BIGINT` as [`Value::Int`], `TEXT` as [`Value::Text`]).
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, SqlError>;
    /// Starts a transaction that will write (SQLite takes its write lock at once).
    fn begin_write(&mut self) -> Result<(), SqlError>;
    /// Inside a transaction from [`SqlConn::begin_write`]: waits until no other connection is
    /// migrating the schema, until the transaction ends. The default does nothing, which suffices
    /// where `begin_write` already excludes every other writer (SQLite's `BEGIN IMMEDIATE`);
    /// PostgreSQL takes a transaction-scoped advisory lock.
    fn lock_schema(&mut self) -> Result<(), SqlError> {
        Ok(())
    }
}

/// The schema version this colvault writes: the number of [`MIGRATIONS`]. A catalog whose
/// `cv_schema` records a higher one is refused.
pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// The schema migrations, applied in order on open; `cv_schema` records how many ran. Never edit a
/// released step: add one.
const MIGRATIONS: &[&str] = &[
    // 1: projects, tables, KMS generation marks.
    "CREATE TABLE cv_projects (
        project_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        location TEXT NOT NULL,
        kms TEXT NOT NULL,
        algorithm BIGINT NOT NULL,
        cmk TEXT NOT NULL,
        migrating BIGINT NOT NULL,
        migrating_algorithm BIGINT NOT NULL,
        migrating_cmk TEXT NOT NULL,
        generation BIGINT NOT NULL,
        settings_digest TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE cv_tables (
        table_id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES cv_projects(project_id),
        name TEXT NOT NULL,
        location TEXT NOT NULL,
        head_version BIGINT NOT NULL,
        head_digest TEXT NOT NULL,
        UNIQUE (project_id, name)
    );
    CREATE TABLE cv_kms_marks (
        kms TEXT PRIMARY KEY,
        generation BIGINT NOT NULL
    )",
    // 2: each table's column keys (a JSON array of [column, key id] pairs; '' for none).
    "ALTER TABLE cv_tables ADD COLUMN column_keys TEXT NOT NULL DEFAULT ''",
    // 3: each table's partition columns (a JSON array of column names; '' for none).
    "ALTER TABLE cv_tables ADD COLUMN partition_by TEXT NOT NULL DEFAULT ''",
];

const PROJECT_COLUMNS: &str = "project_id, name, location, kms, algorithm, cmk, migrating, migrating_algorithm, \
     migrating_cmk, generation, settings_digest, created_ms";
const TABLE_COLUMNS: &str =
    "table_id, project_id, name, location, head_version, head_digest, column_keys, partition_by";

/// A catalog over a SQL database (SQLite or PostgreSQL).
pub struct SqlCatalog {
    conn: Mutex<Box<dyn SqlConn>>,
    url: String,
}

impl fmt::Debug for SqlCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlCatalog")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// `url` without a password (`postgres://user:secret@host` shows as `postgres://user:***@host`).
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

fn unhex32(s: &str, what: &'static str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 || !s.is_ascii() {
        return Err(Error::malformed(what, format!("{s:?} is not a 32-byte hex digest")));
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| Error::malformed(what, format!("{s:?} is not a 32-byte hex digest")))?;
    }
    Ok(out)
}

fn int(v: u64, what: &str) -> Result<Value> {
    i64::try_from(v)
        .map(Value::Int)
        .map_err(|_| Error::InvalidArgument(format!("{what} {v} does not fit the catalog")))
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// Reads typed columns from a row, in order.
struct RowReader<'a> {
    row: &'a [Value],
    at: usize,
}

impl RowReader<'_> {
    fn text(&mut self) -> Result<String> {
        let v = self.row.get(self.at);
        self.at += 1;
        match v {
            Some(Value::Text(s)) => Ok(s.clone()),
            other => Err(Error::malformed("catalog row", format!("expected text, got {other:?}"))),
        }
    }
    fn u64(&mut self) -> Result<u64> {
        let v = self.row.get(self.at);
        self.at += 1;
        match v {
            Some(Value::Int(i)) if *i >= 0 => Ok(*i as u64),
            other => Err(Error::malformed(
                "catalog row",
                format!("expected a count, got {other:?}"),
            )),
        }
    }
    fn algorithm(&mut self) -> Result<Algorithm> {
        let id = self.u64()?;
        Algorithm::from_id(u8::try_from(id).map_err(|_| Error::UnknownAlgorithmId { id: u8::MAX })?)
    }
    fn key(&mut self) -> Result<Option<KeyId>> {
        let s = self.text()?;
        if s.is_empty() {
            Ok(None)
        } else {
            KeyId::new(s).map(Some)
        }
    }
}

fn project_from(row: &[Value]) -> Result<ProjectRecord> {
    let mut r = RowReader { row, at: 0 };
    let project_id = r.text()?;
    check_id(&project_id, "project")?;
    let name = r.text()?;
    let location = r.text()?;
    let kms = r.text()?;
    let algorithm = r.algorithm()?;
    let cmk = r.key()?;
    let migrating = r.u64()? != 0;
    let m_alg = r.algorithm()?;
    let m_cmk = r.key()?;
    let generation = r.u64()?;
    let settings_digest = unhex32(&r.text()?, "catalog settings digest")?;
    let created_ms = r.u64()?;
    Ok(ProjectRecord {
        project_id,
        name,
        location,
        kms,
        policy: EncryptionPolicy {
            algorithm,
            cmk,
            migrating_from: migrating.then_some((m_alg, m_cmk)),
        },
        generation,
        settings_digest,
        created_ms,
    })
}

fn project_values(p: &ProjectRecord) -> Result<Vec<Value>> {
    let (migrating, m_alg, m_cmk) = match &p.policy.migrating_from {
        None => (0, Algorithm::None, None),
        Some((a, k)) => (1, *a, k.clone()),
    };
    Ok(vec![
        text(&p.project_id),
        text(&p.name),
        text(&p.location),
        text(&p.kms),
        Value::Int(p.policy.algorithm.id() as i64),
        text(p.policy.cmk.as_ref().map(|k| k.as_str()).unwrap_or("")),
        Value::Int(migrating),
        Value::Int(m_alg.id() as i64),
        text(m_cmk.as_ref().map(|k| k.as_str()).unwrap_or("")),
        int(p.generation, "settings generation")?,
        text(hex(&p.settings_digest)),
        int(p.created_ms, "creation time")?,
    ])
}

fn table_from(row: &[Value]) -> Result<TableRecord> {
    let mut r = RowReader { row, at: 0 };
    let table_id = r.text()?;
    check_id(&table_id, "table")?;
    let project_id = r.text()?;
    let name = r.text()?;
    let location = r.text()?;
    let version = r.u64()?;
    let digest = unhex32(&r.text()?, "catalog head digest")?;
    let column_keys = column_keys_from(&r.text()?)?;
    let partition_by = partition_by_from(&r.text()?)?;
    Ok(TableRecord {
        table_id,
        project_id,
        name,
        location,
        head: TableHead { version, digest },
        column_keys,
        partition_by,
    })
}

fn table_values(t: &TableRecord) -> Result<Vec<Value>> {
    Ok(vec![
        text(&t.table_id),
        text(&t.project_id),
        text(&t.name),
        text(&t.location),
        int(t.head.version, "table version")?,
        text(hex(&t.head.digest)),
        text(column_keys_text(&t.column_keys)),
        text(partition_by_text(&t.partition_by)?),
    ])
}

/// A table's partition columns as the catalog stores them: `''` for none, else a JSON array of
/// names.
fn partition_by_text(columns: &[String]) -> Result<String> {
    if columns.is_empty() {
        return Ok(String::new());
    }
    serde_json::to_string(columns).map_err(|e| Error::InvalidArgument(format!("partition columns: {e}")))
}

fn partition_by_from(s: &str) -> Result<Vec<String>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |detail: String| Error::malformed("catalog partition columns", detail);
    let columns: Vec<String> = serde_json::from_str(s).map_err(|e| bad(e.to_string()))?;
    if columns.is_empty() || columns.len() > crate::table::MAX_PARTITION_COLUMNS {
        return Err(bad(format!("{} columns", columns.len())));
    }
    Ok(columns)
}

/// A table's column keys as the catalog stores them: `''` for none, else a JSON array of
/// `[column, key id]` pairs.
fn column_keys_text(keys: &[ColumnKey]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    serde_json::Value::Array(
        keys.iter()
            .map(|k| serde_json::json!([k.column, k.cmk.as_str()]))
            .collect(),
    )
    .to_string()
}

fn column_keys_from(s: &str) -> Result<Vec<ColumnKey>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |detail: String| Error::malformed("catalog column keys", detail);
    let pairs: Vec<(String, String)> = serde_json::from_str(s).map_err(|e| bad(e.to_string()))?;
    if pairs.is_empty() {
        return Err(bad("an empty list is stored as ''".into()));
    }
    pairs
        .into_iter()
        .map(|(column, cmk)| {
            Ok(ColumnKey {
                column,
                cmk: KeyId::new(cmk).map_err(|e| bad(e.to_string()))?,
            })
        })
        .collect()
}

fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl SqlCatalog {
    /// A catalog over `conn`, its schema migrated to the newest version. `url` names it in messages
    /// (credentials are removed).
    pub fn new(mut conn: Box<dyn SqlConn>, url: &str) -> Result<Self> {
        let url = redact(url);
        migrate(conn.as_mut()).map_err(|e| sql_err(&url, e))?;
        Ok(SqlCatalog {
            conn: Mutex::new(conn),
            url,
        })
    }

    fn err(&self, e: SqlError) -> Error {
        sql_err(&self.url, e)
    }

    /// Runs `f` on the connection.
    fn with<T>(&self, f: impl FnOnce(&mut dyn SqlConn) -> Result<T, SqlError>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| Error::Poisoned)?;
        f(conn.as_mut()).map_err(|e| self.err(e))
    }

    /// Runs `f` inside a write transaction: committed if it returns `Ok`, rolled back otherwise.
    fn transaction<T>(&self, f: impl FnOnce(&mut dyn SqlConn) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| Error::Poisoned)?;
        conn.begin_write().map_err(|e| self.err(e))?;
        match f(conn.as_mut()) {
            Ok(v) => {
                conn.execute("COMMIT", &[]).map_err(|e| self.err(e))?;
                Ok(v)
            }
            Err(e) => {
                let _ = conn.execute("ROLLBACK", &[]);
                Err(e)
            }
        }
    }

    fn query_one<T>(&self, sql: &str, params: &[Value], parse: fn(&[Value]) -> Result<T>) -> Result<Option<T>> {
        let rows = self.with(|c| c.query(sql, params))?;
        rows.first().map(|r| parse(r)).transpose()
    }
}

fn sql_err(url: &str, e: SqlError) -> Error {
    match e {
        SqlError::Unique => Error::Catalog {
            catalog: url.to_string(),
            detail: "a unique constraint refused the change".into(),
            retriable: false,
        },
        SqlError::Other { detail, retriable } => Error::Catalog {
            catalog: url.to_string(),
            detail,
            retriable,
        },
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], in one transaction that excludes every other migrating
/// connection (so processes opening a fresh catalog at once neither race `CREATE TABLE` nor both
/// insert the `cv_schema` row): PostgreSQL's `CREATE TABLE IF NOT EXISTS` is not safe against a
/// concurrent creator, and its `READ COMMITTED` would let two openers both see no version row.
fn migrate(conn: &mut dyn SqlConn) -> Result<(), SqlError> {
    conn.begin_write()?;
    let run = || -> Result<(), SqlError> {
        conn.lock_schema()?;
        conn.execute("CREATE TABLE IF NOT EXISTS cv_schema (version BIGINT NOT NULL)", &[])?;
        let rows = conn.query("SELECT version FROM cv_schema", &[])?;
        let done = match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(v)) => *v as usize,
            _ => {
                conn.execute("INSERT INTO cv_schema (version) VALUES (0)", &[])?;
                0
            }
        };
        if done > MIGRATIONS.len() {
            return Err(SqlError::Other {
                detail: format!(
                    "the catalog's schema is version {done}, newer than this colvault knows ({}); upgrade colvault",
                    MIGRATIONS.len()
                ),
                retriable: false,
            });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(done) {
            for stmt in step.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                conn.execute(stmt, &[])?;
            }
            conn.execute("UPDATE cv_schema SET version = $1", &[Value::Int(i as i64 + 1)])?;
        }
        Ok(())
    };
    let mut run = run;
    match run() {
        Ok(()) => conn.execute("COMMIT", &[]).map(|_| ()),
        Err(e) => {
            let _ = conn.execute("ROLLBACK", &[]);
            Err(e)
        }
    }
}

impl Catalog for SqlCatalog {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn create_project(&self, project: &ProjectRecord, tables: &[TableRecord]) -> Result<()> {
        let insert_project = format!(
            "INSERT INTO cv_projects ({PROJECT_COLUMNS}) VALUES ({})",
            placeholders(12)
        );
        let insert_table = format!("INSERT INTO cv_tables ({TABLE_COLUMNS}) VALUES ({})", placeholders(8));
        let taken = |e: SqlError| match e {
            SqlError::Unique => Error::AlreadyExists {
                kind: "project",
                name: project.name.clone(),
            },
            e => self.err(e),
        };
        if let Some(t) = tables.iter().find(|t| t.project_id != project.project_id) {
            return Err(Error::InvalidArgument(format!(
                "table {:?} belongs to project id {}, not to the project being registered",
                t.name, t.project_id
            )));
        }
        self.transaction(|c| {
            c.execute(&insert_project, &project_values(project)?).map_err(taken)?;
            for t in tables {
                c.execute(&insert_table, &table_values(t)?).map_err(|e| match e {
                    SqlError::Unique => Error::AlreadyExists {
                        kind: "table",
                        name: t.name.clone(),
                    },
                    e => self.err(e),
                })?;
            }
            Ok(())
        })
    }

    fn project(&self, name: &str) -> Result<Option<ProjectRecord>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM cv_projects WHERE name = $1");
        self.query_one(&sql, &[text(name)], project_from)
    }

    fn project_by_id(&self, project_id: &str) -> Result<Option<ProjectRecord>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM cv_projects WHERE project_id = $1");
        self.query_one(&sql, &[text(project_id)], project_from)
    }

    fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM cv_projects ORDER BY name");
        let mut all = self
            .with(|c| c.query(&sql, &[]))?
            .iter()
            .map(|r| project_from(r))
            .collect::<Result<Vec<_>>>()?;
        // By bytes, whatever the database's collation (PostgreSQL's follows its locale).
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn update_project(&self, expected: &ProjectRecord, new: &ProjectRecord) -> Result<bool> {
        if expected.project_id != new.project_id || expected.name != new.name {
            return Err(Error::InvalidArgument(
                "a settings update cannot change a project's id or name".into(),
            ));
        }
        let v = project_values(new)?;
        let sql = "UPDATE cv_projects SET kms = $1, algorithm = $2, cmk = $3, migrating = $4, \
                   migrating_algorithm = $5, migrating_cmk = $6, generation = $7, settings_digest = $8 \
                   WHERE project_id = $9 AND generation = $10 AND settings_digest = $11";
        let params = [
            v[3].clone(),
            v[4].clone(),
            v[5].clone(),
            v[6].clone(),
            v[7].clone(),
            v[8].clone(),
            v[9].clone(),
            v[10].clone(),
            text(&expected.project_id),
            int(expected.generation, "settings generation")?,
            text(hex(&expected.settings_digest)),
        ];
        Ok(self.with(|c| c.execute(sql, &params))? == 1)
    }

    fn drop_project(&self, project_id: &str) -> Result<()> {
        self.transaction(|c| {
            c.execute("DELETE FROM cv_tables WHERE project_id = $1", &[text(project_id)])
                .map_err(|e| self.err(e))?;
            c.execute("DELETE FROM cv_projects WHERE project_id = $1", &[text(project_id)])
                .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    fn create_table(&self, table: &TableRecord) -> Result<()> {
        let sql = format!("INSERT INTO cv_tables ({TABLE_COLUMNS}) VALUES ({})", placeholders(8));
        let mut conn = self.conn.lock().map_err(|_| Error::Poisoned)?;
        conn.execute(&sql, &table_values(table)?)
            .map(|_| ())
            .map_err(|e| match e {
                SqlError::Unique => Error::AlreadyExists {
                    kind: "table",
                    name: table.name.clone(),
                },
                e => self.err(e),
            })
    }

    fn table(&self, project_id: &str, name: &str) -> Result<Option<TableRecord>> {
        let sql = format!("SELECT {TABLE_COLUMNS} FROM cv_tables WHERE project_id = $1 AND name = $2");
        self.query_one(&sql, &[text(project_id), text(name)], table_from)
    }

    fn table_by_id(&self, table_id: &str) -> Result<Option<TableRecord>> {
        let sql = format!("SELECT {TABLE_COLUMNS} FROM cv_tables WHERE table_id = $1");
        self.query_one(&sql, &[text(table_id)], table_from)
    }

    fn list_tables(&self, project_id: &str) -> Result<Vec<TableRecord>> {
        let sql = format!("SELECT {TABLE_COLUMNS} FROM cv_tables WHERE project_id = $1 ORDER BY name");
        let mut all = self
            .with(|c| c.query(&sql, &[text(project_id)]))?
            .iter()
            .map(|r| table_from(r))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn swap_head(&self, table_id: &str, expected: &TableHead, new: &TableHead) -> Result<bool> {
        let sql = "UPDATE cv_tables SET head_version = $1, head_digest = $2 \
                   WHERE table_id = $3 AND head_version = $4 AND head_digest = $5";
        let params = [
            int(new.version, "table version")?,
            text(hex(&new.digest)),
            text(table_id),
            int(expected.version, "table version")?,
            text(hex(&expected.digest)),
        ];
        Ok(self.with(|c| c.execute(sql, &params))? == 1)
    }

    fn drop_table(&self, table_id: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM cv_tables WHERE table_id = $1", &[text(table_id)]))?;
        Ok(())
    }

    fn observe_kms_generation(&self, kms: &str, generation: u64) -> Result<()> {
        let g = int(generation, "keystore generation")?;
        // Insert-if-absent, raise-if-lower, then read back, in one transaction: two first observers
        // racing on PostgreSQL (where `BEGIN` excludes no one) both succeed instead of one failing on
        // the primary key, and the mark only ever rises.
        self.transaction(|c| {
            c.execute(
                "INSERT INTO cv_kms_marks (kms, generation) VALUES ($1, $2) ON CONFLICT (kms) DO NOTHING",
                &[text(kms), g.clone()],
            )
            .map_err(|e| self.err(e))?;
            c.execute(
                "UPDATE cv_kms_marks SET generation = $1 WHERE kms = $2 AND generation < $1",
                &[g.clone(), text(kms)],
            )
            .map_err(|e| self.err(e))?;
            let rows = c
                .query("SELECT generation FROM cv_kms_marks WHERE kms = $1", &[text(kms)])
                .map_err(|e| self.err(e))?;
            let seen = match rows.first() {
                Some(r) => RowReader { row: r, at: 0 }.u64()?,
                None => return Err(Error::integrity(format!("the catalog lost the mark of KMS {kms:?}"))),
            };
            if seen > generation {
                return Err(Error::KeystoreRollback {
                    kms: kms.to_string(),
                    expected: seen,
                    found: generation,
                });
            }
            Ok(())
        })
    }

    fn kms_generation(&self, kms: &str) -> Result<Option<u64>> {
        self.query_one(
            "SELECT generation FROM cv_kms_marks WHERE kms = $1",
            &[text(kms)],
            |r| RowReader { row: r, at: 0 }.u64(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:/x/y.db"), "sqlite:/x/y.db");
    }

    #[test]
    fn column_keys_round_trip() {
        assert_eq!(column_keys_text(&[]), "");
        assert!(column_keys_from("").unwrap().is_empty());
        let keys = vec![ColumnKey {
            column: "sal\"a=ry,[x]".into(),
            cmk: KeyId::new("k-hr").unwrap(),
        }];
        assert_eq!(column_keys_from(&column_keys_text(&keys)).unwrap(), keys);
        assert!(matches!(column_keys_from("[]"), Err(Error::Malformed { .. })));
        assert!(matches!(
            column_keys_from("[[\"a\",\"bad key\"]]"),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn digests_round_trip_and_bad_ones_are_malformed() {
        let d = [7u8; 32];
        assert_eq!(unhex32(&hex(&d), "x").unwrap(), d);
        assert!(matches!(unhex32("zz", "x"), Err(Error::Malformed { .. })));
        assert!(matches!(unhex32(&"g".repeat(64), "x"), Err(Error::Malformed { .. })));
    }
}
