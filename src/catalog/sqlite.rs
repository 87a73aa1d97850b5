//! The embedded catalog: a SQLite database file (by default `~/.colvault/catalog.db`, beside the
//! keystore), through `rusqlite` with SQLite compiled in.
//!
//! Many processes may share the file: SQLite serialises writers with its file lock (WAL mode, a
//! 30-second busy timeout), and every swap is one `UPDATE … WHERE` statement.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value as SqliteValue;
use rusqlite::{params_from_iter, Connection, ErrorCode};

use super::sql::{SqlCatalog, SqlConn, SqlError, Value};
use crate::error::Result;

/// A SQLite connection behind [`SqlConn`].
pub struct SqliteConn {
    conn: Connection,
}

/// SQLite numbers parameters `?n`; the shared SQL writes `$n`.
fn dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn to_sqlite(params: &[Value]) -> Vec<SqliteValue> {
    params
        .iter()
        .map(|v| match v {
            Value::Int(i) => SqliteValue::Integer(*i),
            Value::Text(s) => SqliteValue::Text(s.clone()),
        })
        .collect()
}

fn map_err(e: rusqlite::Error) -> SqlError {
    // Only a UNIQUE or PRIMARY KEY violation is a name or id already taken; a foreign-key or NOT
    // NULL violation is another constraint failure and must not read as "already exists".
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if matches!(
            f.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        ) {
            return SqlError::Unique;
        }
    }
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SqlError::Other {
            detail: e.to_string(),
            retriable: true,
        },
        _ => SqlError::Other {
            detail: e.to_string(),
            retriable: false,
        },
    }
}

impl SqliteConn {
    /// Opens (creating if needed) the database at `path`; `:memory:` for a private in-memory one.
    pub fn open(path: &str) -> Result<Self, SqlError> {
        if path != ":memory:" {
            if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| SqlError::Other {
                    detail: format!("creating {}: {e}", dir.display()),
                    retriable: false,
                })?;
            }
        }
        let conn = Connection::open(path).map_err(map_err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(map_err)?;
        if path != ":memory:" {
            // WAL: readers do not block the writer; FULL sync: a swap that returned is durable.
            conn.pragma_update(None, "journal_mode", "WAL").map_err(map_err)?;
            conn.pragma_update(None, "synchronous", "FULL").map_err(map_err)?;
        }
        conn.pragma_update(None, "foreign_keys", "ON").map_err(map_err)?;
        Ok(SqliteConn { conn })
    }
}

impl SqlConn for SqliteConn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        self.conn
            .execute(&dialect(sql), params_from_iter(to_sqlite(params)))
            .map(|n| n as u64)
            .map_err(map_err)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, SqlError> {
        let mut stmt = self.conn.prepare(&dialect(sql)).map_err(map_err)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(params_from_iter(to_sqlite(params))).map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_err)? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match row.get::<_, SqliteValue>(i).map_err(map_err)? {
                    SqliteValue::Integer(v) => Value::Int(v),
                    SqliteValue::Text(s) => Value::Text(s),
                    other => {
                        return Err(SqlError::Other {
                            detail: format!("unexpected value {other:?} in the catalog"),
                            retriable: false,
                        })
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn begin_write(&mut self) -> Result<(), SqlError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)
    }
}

impl SqlCatalog {
    /// The SQLite catalog at `path` (created on first use), or a private in-memory one for
    /// `:memory:`.
    pub fn sqlite(path: impl AsRef<Path>) -> Result<SqlCatalog> {
        let path = path.as_ref().to_string_lossy().to_string();
        let url = format!("sqlite:{path}");
        let conn = SqliteConn::open(&path).map_err(|e| match e {
            SqlError::Other { detail, retriable } => crate::Error::Catalog {
                catalog: url.clone(),
                detail,
                retriable,
            },
            SqlError::Unique => crate::Error::Catalog {
                catalog: url.clone(),
                detail: "opening the database".into(),
                retriable: false,
            },
        })?;
        SqlCatalog::new(Box::new(conn), &url)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollar_placeholders_become_numbered() {
        assert_eq!(
            super::dialect("a = $1 AND b = $12 AND c = '$x'"),
            "a = ?1 AND b = ?12 AND c = '$x'"
        );
    }
}
