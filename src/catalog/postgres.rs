//! The PostgreSQL catalog (feature `postgres`): many processes and machines share one database,
//! through the synchronous `postgres` client.
//!
//! Every swap is one `UPDATE … WHERE` in autocommit: under PostgreSQL's default `READ COMMITTED`
//! isolation a concurrent `UPDATE` of the same row waits for the first to commit, then re-checks
//! its `WHERE` against the new row, so exactly one of two racing swaps changes a row. Schema
//! migrations hold a transaction-scoped advisory lock ([`SqlConn::lock_schema`]), so processes
//! opening a fresh database at once migrate it one after another.
//!
//! No TLS in this build: the connection is plaintext. A loopback host or a Unix socket is accepted
//! as is; any other host only with `sslmode=disable` in the URL, an explicit opt-in, because whoever
//! can alter the traffic can alter the trust anchor.

use std::net::IpAddr;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, NoTls, Row};

use super::sql::{redact, SqlCatalog, SqlConn, SqlError, Value};
use crate::error::{Error, Result};

/// The advisory lock key that serialises schema migrations: "colvault" in ASCII.
const SCHEMA_LOCK: i64 = 0x636f_6c76_6175_6c74;

/// A PostgreSQL connection behind [`SqlConn`]. A connection found broken outside a transaction
/// is replaced once before the next statement; a read that fails because the connection broke is
/// tried once more on a new one (a write is not: it may have taken effect).
pub struct PostgresConn {
    config: Config,
    /// Always set until the connection is dropped (see `Drop`).
    client: Option<Client>,
    in_transaction: bool,
    /// The last failure said the connection is gone (the client may not know yet).
    broken: bool,
}

impl std::fmt::Debug for PostgresConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConn")
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Whether the connection is gone: closed, an I/O error (reset, refused, timed out), a connection
/// exception (class 08), or the server ending the session (57P01 admin shutdown, 57P02 crash
/// shutdown, 57P03 cannot connect now; the server's FATAL message arrives as the answer to the next
/// statement, before the client sees the connection close).
fn broken(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => c.code().starts_with("08") || c.code().starts_with("57P"),
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            false
        }
    }
}

/// Whether a failure may go away when tried again: a broken connection, a serialization failure
/// or a deadlock.
fn retriable(e: &postgres::Error) -> bool {
    broken(e)
        || e.code()
            .is_some_and(|c| *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

fn map_err(e: postgres::Error) -> SqlError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        return SqlError::Unique;
    }
    let retriable = retriable(&e);
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    };
    SqlError::Other { detail, retriable }
}

fn to_pg(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|v| match v {
            Value::Int(i) => i as &(dyn ToSql + Sync),
            Value::Text(s) => s as &(dyn ToSql + Sync),
        })
        .collect()
}

fn from_row(row: &Row) -> Result<Vec<Value>, SqlError> {
    let bad = |i: usize, detail: String| SqlError::Other {
        detail: format!("column {i} of a catalog row: {detail}"),
        retriable: false,
    };
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            Value::Int(row.try_get::<_, i64>(i).map_err(|e| bad(i, e.to_string()))?)
        } else if *t == Type::INT4 {
            Value::Int(row.try_get::<_, i32>(i).map_err(|e| bad(i, e.to_string()))?.into())
        } else if *t == Type::INT2 {
            Value::Int(row.try_get::<_, i16>(i).map_err(|e| bad(i, e.to_string()))?.into())
        } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(t) {
            Value::Text(row.try_get::<_, String>(i).map_err(|e| bad(i, e.to_string()))?)
        } else {
            return Err(bad(i, format!("unexpected type {t}")));
        };
        out.push(v);
    }
    Ok(out)
}

impl PostgresConn {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, also `postgresql://`
    /// and the key-value form). Refuses a host other than loopback unless the URL says
    /// `sslmode=disable` (this build has no TLS).
    pub fn connect(url: &str) -> Result<Self, SqlError> {
        let mut config: Config = url.parse().map_err(|e: postgres::Error| SqlError::Other {
            detail: format!("parsing the URL: {e}"),
            retriable: false,
        })?;
        let remote = config.get_hosts().iter().any(|h| !is_loopback(h))
            || config.get_hostaddrs().iter().any(|a| !a.is_loopback());
        if remote && config.get_ssl_mode() != SslMode::Disable {
            return Err(SqlError::Other {
                detail: "this colvault has no TLS for PostgreSQL, so it connects in plaintext only to a \
                         loopback address or a Unix socket; add sslmode=disable to the URL to accept a \
                         plaintext connection to another host"
                    .into(),
                retriable: false,
            });
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(30));
        }
        if config.get_application_name().is_none() {
            config.application_name("colvault");
        }
        let client = off_runtime(|| config.connect(NoTls)).map_err(map_err)?;
        Ok(PostgresConn {
            config,
            client: Some(client),
            in_transaction: false,
            broken: false,
        })
    }

    /// Replaces a connection found broken, once, unless a transaction was under way on it (then
    /// the caller's `ROLLBACK` ends the transaction first and the next call reconnects).
    fn ensure_connected(&mut self) -> Result<(), SqlError> {
        if (self.broken || self.closed()) && !self.in_transaction {
            self.reconnect()?;
        }
        Ok(())
    }

    fn reconnect(&mut self) -> Result<(), SqlError> {
        self.client = Some(self.config.connect(NoTls).map_err(map_err)?);
        self.broken = false;
        Ok(())
    }

    /// Maps a failure, remembering a broken connection for the next call.
    fn fail(&mut self, e: postgres::Error) -> SqlError {
        self.broken |= broken(&e);
        map_err(e)
    }
}

/// Runs `f`, which blocks on the synchronous client. That client drives its own runtime, which
/// cannot start on a thread that already drives one (a DataFusion planner asking a catalog
/// provider, a task on an executor): there, `f` runs on a scoped thread of its own.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl SqlConn for PostgresConn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        off_runtime(|| self.execute_here(sql, params))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, SqlError> {
        off_runtime(|| self.query_here(sql, params))
    }

    fn begin_write(&mut self) -> Result<(), SqlError> {
        off_runtime(|| self.begin_write_here())
    }

    fn lock_schema(&mut self) -> Result<(), SqlError> {
        off_runtime(|| self.lock_schema_here())
    }
}

impl Drop for PostgresConn {
    /// The client's own drop blocks on its runtime (closing the session): off any runtime here.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            off_runtime(move || drop(client));
        }
    }
}

impl PostgresConn {
    fn client(&mut self) -> Result<&mut Client, SqlError> {
        self.client.as_mut().ok_or_else(|| SqlError::Other {
            detail: "the connection to the catalog is closed".into(),
            retriable: true,
        })
    }

    fn closed(&self) -> bool {
        self.client.as_ref().is_none_or(|c| c.is_closed())
    }

    fn execute_here(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let ends = ["COMMIT", "ROLLBACK"]
            .iter()
            .any(|k| sql.trim().eq_ignore_ascii_case(k));
        if ends {
            self.in_transaction = false;
            if self.broken || self.closed() {
                // The server ended the transaction with the connection; a COMMIT must not look
                // like it succeeded.
                return Err(SqlError::Other {
                    detail: "the connection to the catalog closed during a transaction".into(),
                    retriable: true,
                });
            }
            return self.client()?.batch_execute(sql).map(|()| 0).map_err(|e| self.fail(e));
        }
        self.ensure_connected()?;
        match self.client()?.execute(sql, &to_pg(params)) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn query_here(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, SqlError> {
        self.ensure_connected()?;
        let rows = match self.client()?.query(sql, &to_pg(params)) {
            Ok(rows) => rows,
            Err(e) if broken(&e) && !self.in_transaction => {
                // A read is safe to repeat: once more on a new connection.
                self.reconnect()?;
                match self.client()?.query(sql, &to_pg(params)) {
                    Ok(rows) => rows,
                    Err(e) => return Err(self.fail(e)),
                }
            }
            Err(e) => return Err(self.fail(e)),
        };
        rows.iter().map(from_row).collect()
    }

    fn begin_write_here(&mut self) -> Result<(), SqlError> {
        self.ensure_connected()?;
        match self.client()?.batch_execute("BEGIN") {
            Ok(()) => {
                self.in_transaction = true;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn lock_schema_here(&mut self) -> Result<(), SqlError> {
        // Released by the transaction's COMMIT or ROLLBACK.
        match self
            .client()?
            .batch_execute(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl SqlCatalog {
    /// The PostgreSQL catalog at `url` (`postgres://user@host:port/db`), its schema migrated to
    /// the newest version. The database must exist; the tables are created on first use.
    pub fn postgres(url: &str) -> Result<SqlCatalog> {
        let conn = PostgresConn::connect(url).map_err(|e| match e {
            SqlError::Other { detail, retriable } => Error::Catalog {
                catalog: redact(url),
                detail,
                retriable,
            },
            SqlError::Unique => Error::Catalog {
                catalog: redact(url),
                detail: "connecting".into(),
                retriable: false,
            },
        })?;
        SqlCatalog::new(Box::new(conn), url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_hosts_need_an_explicit_plaintext_opt_in() {
        // Refused before any connection attempt.
        let e = PostgresConn::connect("postgres://u@db.example.com:5432/x").unwrap_err();
        assert!(matches!(e, SqlError::Other { ref detail, retriable: false } if detail.contains("sslmode=disable")));
        let e = PostgresConn::connect("postgres://u@10.1.2.3/x").unwrap_err();
        assert!(matches!(e, SqlError::Other { retriable: false, .. }));
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        assert!(is_loopback(&Host::Tcp("localhost".into())));
        assert!(is_loopback(&Host::Tcp("127.0.0.1".into())));
        assert!(is_loopback(&Host::Tcp("::1".into())));
        assert!(!is_loopback(&Host::Tcp("127.example.com".into())));
        assert!(!is_loopback(&Host::Tcp("192.168.1.1".into())));
    }
}
