//! One catalog test suite, run against every SQL backend: SQLite in a temporary file
//! (`sqlite::…`) and, with the `postgres` feature, a throwaway PostgreSQL server (`postgres::…`,
//! one server per test binary, a fresh database per test; skipped without PostgreSQL unless
//! `COLVAULT_REQUIRE_SERVICES=1`).
//!
//! The cross-process tests re-run this binary as children (the `catalog_child` test, selected by
//! `COLVAULT_CATALOG_CHILD`), each swapping the same table's head through its own catalog.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

use colvault::catalog::sql::{SqlConn, Value, SCHEMA_VERSION};
use colvault::catalog::{self, Catalog, EncryptionPolicy, ProjectRecord, SqlCatalog, TableHead, TableRecord};
use colvault::kms::KeyId;
use colvault::{Algorithm, Error};

/// Where a test's catalog lives: a URL for [`catalog::open`] and a raw connection for schema checks.
struct Backend {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("catalog.db").display());
        Backend { url, _dir: Some(dir) }
    }

    #[cfg(feature = "postgres")]
    fn postgres(test: &str) -> Option<Backend> {
        common::pg::database(test).map(|url| Backend { url, _dir: None })
    }

    /// A new catalog handle (its own connection).
    fn open(&self) -> Arc<dyn Catalog> {
        catalog::open(&self.url).unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }

    /// A new handle as the concrete type, or the open error.
    fn try_open(&self) -> colvault::Result<SqlCatalog> {
        if let Some(path) = self.url.strip_prefix("sqlite:") {
            return SqlCatalog::sqlite(path);
        }
        #[cfg(feature = "postgres")]
        return SqlCatalog::postgres(&self.url);
        #[cfg(not(feature = "postgres"))]
        unreachable!("{}", self.url)
    }

    /// A raw connection to the same database, under the catalog.
    fn conn(&self) -> Box<dyn SqlConn> {
        if let Some(path) = self.url.strip_prefix("sqlite:") {
            return Box::new(colvault::catalog::sqlite::SqliteConn::open(path).unwrap());
        }
        #[cfg(feature = "postgres")]
        return Box::new(colvault::catalog::postgres::PostgresConn::connect(&self.url).unwrap());
        #[cfg(not(feature = "postgres"))]
        unreachable!("{}", self.url)
    }

    /// The rows of `sql` through a raw connection.
    fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        self.conn().query(sql, &[]).unwrap()
    }
}

/// A valid id (32 lowercase hex digits), distinct per `n` and per call site's `kind`.
fn id(kind: u8, n: u64) -> String {
    format!("{kind:02x}{n:030x}")
}

fn project(n: u64, name: &str) -> ProjectRecord {
    ProjectRecord {
        project_id: id(0xa0, n),
        name: name.to_string(),
        location: format!("/data/{name}"),
        kms: "local".into(),
        policy: EncryptionPolicy {
            algorithm: Algorithm::Aes256Gcm,
            cmk: Some(KeyId::generate().unwrap()),
            migrating_from: None,
        },
        generation: 1,
        settings_digest: [1; 32],
        created_ms: 1_800_000_000_000,
    }
}

fn digest(writer: u8, version: u64) -> [u8; 32] {
    let mut d = [writer; 32];
    d[..8].copy_from_slice(&version.to_be_bytes());
    d
}

fn table(p: &ProjectRecord, n: u64, name: &str) -> TableRecord {
    TableRecord {
        table_id: id(0xb0, n),
        project_id: p.project_id.clone(),
        name: name.to_string(),
        location: format!("tables/{}", id(0xb0, n)),
        head: TableHead {
            version: 0,
            digest: digest(0, 0),
        },
        column_keys: Vec::new(),
        partition_by: Vec::new(),
    }
}

/// Registering a taken name (or id) fails with `AlreadyExists` and records nothing; a project
/// registered with tables is all or nothing.
fn existing_names_are_refused_and_nothing_is_recorded(b: &Backend) {
    let c = b.open();
    let p = project(1, "alpha");
    let t = table(&p, 1, "t");
    c.create_project(&p, std::slice::from_ref(&t)).unwrap();

    // Same name, new id.
    let same_name = project(2, "alpha");
    let e = c.create_project(&same_name, &[]).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { kind: "project", ref name } if name == "alpha"),
        "{e:?}"
    );
    assert!(c.project_by_id(&same_name.project_id).unwrap().is_none());
    assert_eq!(
        c.project("alpha").unwrap().unwrap(),
        p,
        "the existing project is unchanged"
    );

    // Same id, new name.
    let same_id = ProjectRecord {
        name: "beta".into(),
        ..p.clone()
    };
    assert!(matches!(
        c.create_project(&same_id, &[]),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(c.project("beta").unwrap().is_none());

    // A project with tables whose second insert fails (a table id already taken): all or nothing.
    let gamma = project(3, "gamma");
    let fresh = table(&gamma, 10, "fresh");
    let clash = TableRecord {
        project_id: gamma.project_id.clone(),
        name: "clash".into(),
        ..t.clone()
    };
    let e = c.create_project(&gamma, &[fresh.clone(), clash]).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { kind: "table", .. }), "{e:?}");
    assert!(c.project("gamma").unwrap().is_none(), "the project row was rolled back");
    assert!(c.project_by_id(&gamma.project_id).unwrap().is_none());
    assert!(
        c.table_by_id(&fresh.table_id).unwrap().is_none(),
        "the first table row was rolled back"
    );
    assert!(c.list_tables(&gamma.project_id).unwrap().is_empty());
    assert_eq!(
        c.table_by_id(&t.table_id).unwrap().unwrap(),
        t,
        "the existing table is unchanged"
    );

    // Two tables of the same name in one registration: all or nothing too.
    let twice = [table(&gamma, 11, "same"), table(&gamma, 12, "same")];
    assert!(matches!(
        c.create_project(&gamma, &twice),
        Err(Error::AlreadyExists { kind: "table", .. })
    ));
    assert!(c.project("gamma").unwrap().is_none());
    assert!(c.table_by_id(&twice[0].table_id).unwrap().is_none());

    // With valid tables it registers, and a table name taken in the project is refused.
    c.create_project(&gamma, std::slice::from_ref(&fresh)).unwrap();
    let e = c.create_table(&table(&gamma, 13, "fresh")).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { kind: "table", ref name } if name == "fresh"),
        "{e:?}"
    );
    assert!(c.table_by_id(&id(0xb0, 13)).unwrap().is_none());
    // The same table name in another project is fine.
    c.create_table(&table(&p, 14, "fresh")).unwrap();
    assert_eq!(c.list_projects().unwrap().len(), 2);
}

/// A settings update names the state it replaces: a stale generation or digest changes nothing.
fn update_project_is_a_compare_and_swap(b: &Backend) {
    let c = b.open();
    let p = project(1, "proj");
    c.create_project(&p, &[]).unwrap();
    let mut next = p.clone();
    next.generation = 2;
    next.settings_digest = [2; 32];
    next.policy.migrating_from = Some((Algorithm::Rc4, Some(KeyId::generate().unwrap())));

    let stale_generation = ProjectRecord {
        generation: 0,
        ..p.clone()
    };
    assert!(!c.update_project(&stale_generation, &next).unwrap());
    let stale_digest = ProjectRecord {
        settings_digest: [9; 32],
        ..p.clone()
    };
    assert!(!c.update_project(&stale_digest, &next).unwrap());
    assert_eq!(c.project("proj").unwrap().unwrap(), p, "nothing changed");

    assert!(c.update_project(&p, &next).unwrap());
    assert_eq!(c.project("proj").unwrap().unwrap(), next);
    // The replaced state is stale now.
    let mut third = next.clone();
    third.generation = 3;
    third.settings_digest = [3; 32];
    third.policy.migrating_from = None;
    assert!(!c.update_project(&p, &third).unwrap());
    assert_eq!(c.project_by_id(&p.project_id).unwrap().unwrap(), next);
    assert!(c.update_project(&next, &third).unwrap());
    assert_eq!(c.project("proj").unwrap().unwrap(), third);

    // An update cannot rename or re-identify a project.
    let renamed = ProjectRecord {
        name: "other".into(),
        ..third.clone()
    };
    assert!(matches!(
        c.update_project(&third, &renamed),
        Err(Error::InvalidArgument(_))
    ));
}

/// A commit names the head it replaces: a stale version or digest changes nothing.
fn swap_head_is_a_compare_and_swap(b: &Backend) {
    let c = b.open();
    let p = project(1, "proj");
    let t = table(&p, 1, "t");
    c.create_project(&p, std::slice::from_ref(&t)).unwrap();
    let v1 = TableHead {
        version: 1,
        digest: digest(1, 1),
    };
    assert!(c.swap_head(&t.table_id, &t.head, &v1).unwrap());
    assert_eq!(c.table(&p.project_id, "t").unwrap().unwrap().head, v1);

    let v2 = TableHead {
        version: 2,
        digest: digest(1, 2),
    };
    // The old head (a rollback or a lost race), the right version with another digest (a fork),
    // and a table that does not exist: all refused, nothing changed.
    assert!(!c.swap_head(&t.table_id, &t.head, &v2).unwrap());
    let fork = TableHead {
        version: 1,
        digest: digest(2, 1),
    };
    assert!(!c.swap_head(&t.table_id, &fork, &v2).unwrap());
    assert!(!c.swap_head(&id(0xb0, 99), &v1, &v2).unwrap());
    assert_eq!(c.table_by_id(&t.table_id).unwrap().unwrap().head, v1);

    assert!(c.swap_head(&t.table_id, &v1, &v2).unwrap());
    assert_eq!(c.table_by_id(&t.table_id).unwrap().unwrap().head, v2);

    // Dropping a table removes its registration and only it. (`u` keeps a column under a key of
    // its own and is partitioned: the catalog gives both back as recorded, and a swap keeps them.)
    let u = TableRecord {
        partition_by: vec!["ds".into(), "region".into()],
        column_keys: vec![colvault::catalog::ColumnKey {
            column: "salary".into(),
            cmk: colvault::kms::KeyId::new("k-hr").unwrap(),
        }],
        ..table(&p, 2, "u")
    };
    c.create_table(&u).unwrap();
    c.drop_table(&t.table_id).unwrap();
    assert!(c.table_by_id(&t.table_id).unwrap().is_none());
    assert!(!c.swap_head(&t.table_id, &v2, &v1).unwrap());
    assert_eq!(c.list_tables(&p.project_id).unwrap(), vec![u]);
}

/// The keystore generation mark rises and refuses a lower generation (a restored keystore).
fn kms_generation_mark_rises_and_refuses_rollback(b: &Backend) {
    let c = b.open();
    assert_eq!(c.kms_generation("ks").unwrap(), None);
    c.observe_kms_generation("ks", 3).unwrap();
    assert_eq!(c.kms_generation("ks").unwrap(), Some(3));
    c.observe_kms_generation("ks", 3).unwrap();
    c.observe_kms_generation("ks", 7).unwrap();
    assert_eq!(c.kms_generation("ks").unwrap(), Some(7));
    let e = c.observe_kms_generation("ks", 6).unwrap_err();
    assert!(
        matches!(e, Error::KeystoreRollback { ref kms, expected: 7, found: 6 } if kms == "ks"),
        "{e:?}"
    );
    assert_eq!(
        c.kms_generation("ks").unwrap(),
        Some(7),
        "a refused generation changes nothing"
    );
    // Marks are per KMS.
    c.observe_kms_generation("other", 1).unwrap();
    assert_eq!(c.kms_generation("other").unwrap(), Some(1));
    assert_eq!(c.kms_generation("ks").unwrap(), Some(7));
    // A second handle sees the same mark.
    let e = b.open().observe_kms_generation("ks", 0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KeystoreRollback {
                expected: 7,
                found: 0,
                ..
            }
        ),
        "{e:?}"
    );
}

fn schema_version(b: &Backend) -> Vec<Vec<Value>> {
    b.rows("SELECT version FROM cv_schema")
}

/// Migrations run on open, once; reopening changes nothing; a newer schema is refused.
fn migrations_apply_once_and_newer_schemas_are_refused(b: &Backend) {
    let c = b.open();
    assert_eq!(schema_version(b), vec![vec![Value::Int(SCHEMA_VERSION as i64)]]);
    let p = project(1, "kept");
    c.create_project(&p, &[table(&p, 1, "t")]).unwrap();
    drop(c);
    for _ in 0..2 {
        let c = b.open();
        assert_eq!(schema_version(b), vec![vec![Value::Int(SCHEMA_VERSION as i64)]]);
        assert_eq!(c.project("kept").unwrap().unwrap(), p);
        assert_eq!(c.list_tables(&p.project_id).unwrap().len(), 1);
    }

    let newer = SCHEMA_VERSION as i64 + 1;
    b.conn()
        .execute("UPDATE cv_schema SET version = $1", &[Value::Int(newer)])
        .unwrap();
    let e = b.try_open().unwrap_err();
    assert!(
        matches!(e, Error::Catalog { ref detail, retriable: false, .. } if detail.contains("newer")),
        "{e:?}"
    );
    assert_eq!(
        schema_version(b),
        vec![vec![Value::Int(newer)]],
        "a refused open writes nothing"
    );
}

/// Processes opening a fresh catalog at the same moment all succeed and migrate it once.
fn concurrent_first_opens_migrate_once(b: &Backend) {
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            // Connected first, so the migrations, not the connection set-ups, start together.
            let conn = b.conn();
            let url = b.url.clone();
            std::thread::spawn(move || {
                barrier.wait();
                SqlCatalog::new(conn, &url).map(|_| ())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(schema_version(b), vec![vec![Value::Int(SCHEMA_VERSION as i64)]]);
    // Two first observers of a KMS mark racing both succeed too.
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n as u64)
        .map(|g| {
            let barrier = barrier.clone();
            let c = b.open();
            std::thread::spawn(move || {
                barrier.wait();
                c.observe_kms_generation("fresh", 10 + g)
            })
        })
        .collect();
    for h in handles {
        match h.join().unwrap() {
            Ok(()) | Err(Error::KeystoreRollback { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(b.open().kms_generation("fresh").unwrap(), Some(10 + n as u64 - 1));
}

/// Lists are ordered by name and hold only what they should.
fn lists_are_ordered_by_name(b: &Backend) {
    let c = b.open();
    let names = ["mango", "apple", "zebra", "Banana", "cherry"];
    for (i, n) in names.iter().enumerate() {
        c.create_project(&project(i as u64, n), &[]).unwrap();
    }
    let listed: Vec<String> = c.list_projects().unwrap().into_iter().map(|p| p.name).collect();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort(); // byte order: "Banana" first (both backends use the C collation here)
    assert_eq!(listed, expected);

    let p = c.project("mango").unwrap().unwrap();
    let other = c.project("apple").unwrap().unwrap();
    for (i, n) in ["t3", "t1", "t2"].iter().enumerate() {
        c.create_table(&table(&p, i as u64, n)).unwrap();
    }
    c.create_table(&table(&other, 10, "t0")).unwrap();
    let listed: Vec<String> = c
        .list_tables(&p.project_id)
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(listed, ["t1", "t2", "t3"]);
    assert_eq!(c.list_tables(&other.project_id).unwrap().len(), 1);
    assert!(c.list_tables(&id(0xa0, 999)).unwrap().is_empty());
}

/// One compare-and-swap increment by `writer`: re-reads the head until its swap wins; the version
/// it committed.
fn increment(c: &dyn Catalog, table_id: &str, writer: u8) -> u64 {
    loop {
        let head = c.table_by_id(table_id).unwrap().unwrap().head;
        let next = TableHead {
            version: head.version + 1,
            digest: digest(writer, head.version + 1),
        };
        if c.swap_head(table_id, &head, &next).unwrap() {
            return next.version;
        }
    }
}

/// A catalog with one table at version 0; its id.
fn one_table(c: &dyn Catalog) -> String {
    let p = project(1, "counter");
    let t = table(&p, 1, "t");
    c.create_project(&p, std::slice::from_ref(&t)).unwrap();
    t.table_id
}

/// Checks that the versions committed (version -> writer) are exactly 1..=n, each once, and that
/// the head is the last writer's.
fn check_no_lost_update(c: &dyn Catalog, table_id: &str, committed: &[(u64, u8)], n: u64) {
    let mut by_version = BTreeMap::new();
    for &(v, w) in committed {
        assert!(by_version.insert(v, w).is_none(), "version {v} was committed twice");
    }
    assert_eq!(by_version.len() as u64, n, "commits reported");
    assert_eq!(
        by_version.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    let head = c.table_by_id(table_id).unwrap().unwrap().head;
    assert_eq!(head.version, n, "final version");
    assert_eq!(head.digest, digest(by_version[&n], n), "the head is the last winner's");
}

fn threads_swap(b: &Backend, separate_handles: bool) {
    const THREADS: u8 = 8;
    const EACH: u64 = 50;
    let shared = b.open();
    let table_id = one_table(shared.as_ref());
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (1..=THREADS)
        .map(|w| {
            let c = if separate_handles { b.open() } else { shared.clone() };
            let (table_id, barrier) = (table_id.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..EACH)
                    .map(|_| (increment(c.as_ref(), &table_id, w), w))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let committed: Vec<(u64, u8)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    check_no_lost_update(shared.as_ref(), &table_id, &committed, THREADS as u64 * EACH);
}

/// 8 threads x 50 increments through one shared catalog handle: 400, none lost.
fn threads_through_one_handle(b: &Backend) {
    threads_swap(b, false);
}

/// 8 threads x 50 increments, each thread with its own catalog handle (connection): 400, none lost.
fn threads_through_separate_handles(b: &Backend) {
    threads_swap(b, true);
}

const CHILD_ENV: &str = "COLVAULT_CATALOG_CHILD";

/// The child side of the cross-process tests (does nothing when run as a plain test): opens the
/// catalog `COLVAULT_CATALOG_URL` and makes `COLVAULT_CATALOG_EACH` increments of table
/// `COLVAULT_CATALOG_TABLE` as writer `COLVAULT_CATALOG_CHILD`, printing `committed VERSION` for
/// each.
#[test]
fn catalog_child() {
    let Ok(writer) = std::env::var(CHILD_ENV) else {
        return;
    };
    let writer: u8 = writer.parse().unwrap();
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let c = catalog::open(&var("COLVAULT_CATALOG_URL")).unwrap();
    let table_id = var("COLVAULT_CATALOG_TABLE");
    let each: u64 = var("COLVAULT_CATALOG_EACH").parse().unwrap();
    // Start together: say ready, wait for the parent's go (a line on stdin).
    println!("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    assert_eq!(go.trim(), "go");
    for _ in 0..each {
        let v = increment(c.as_ref(), &table_id, writer);
        println!("committed {v}");
    }
}

/// `processes` children x `each` increments of one table, each child with its own catalog.
fn processes_swap(b: &Backend, processes: u8, each: u64) {
    let c = b.open();
    let table_id = one_table(c.as_ref());
    let mut children: Vec<_> = (1..=processes)
        .map(|w| {
            Command::new(std::env::current_exe().unwrap())
                .args(["catalog_child", "--exact", "--nocapture", "--test-threads=1", "-q"])
                .env(CHILD_ENV, w.to_string())
                .env("COLVAULT_CATALOG_URL", &b.url)
                .env("COLVAULT_CATALOG_TABLE", &table_id)
                .env("COLVAULT_CATALOG_EACH", each.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every child has opened its catalog before any starts swapping.
    let mut outputs = Vec::new();
    for child in &mut children {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(line) if line.as_ref().unwrap() == "ready" => break,
                Some(_) => {}
                None => panic!("a child ended before it was ready: {:?}", child.wait()),
            }
        }
        outputs.push(lines);
    }
    for child in &mut children {
        writeln!(child.stdin.take().unwrap(), "go").unwrap();
    }
    let mut committed = Vec::new();
    for ((w, child), lines) in (1..=processes).zip(children).zip(outputs) {
        for line in lines {
            if let Some(v) = line.unwrap().strip_prefix("committed ") {
                committed.push((v.trim().parse::<u64>().unwrap(), w));
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child {w}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    check_no_lost_update(c.as_ref(), &table_id, &committed, processes as u64 * each);
}

/// 2 processes x 100 increments against SQLite, 4 x 100 against PostgreSQL: none lost.
fn processes_through_separate_catalogs(b: &Backend) {
    let processes = if b.url.starts_with("sqlite:") { 2 } else { 4 };
    processes_swap(b, processes, 100);
}

/// A catalog opened and used from a thread that drives an async runtime (a DataFusion planner
/// asking the SQL layer's catalog provider, a Ballista executor's task): PostgreSQL's
/// synchronous client cannot block there and once panicked ("Cannot start a runtime from within a
/// runtime"); every call works, on both flavours of runtime.
fn usable_from_async_code(b: &Backend) {
    for rt in [
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    ] {
        rt.block_on(async {
            let c = b.open();
            let p = project(7, "async_p");
            if c.project(&p.name).unwrap().is_none() {
                c.create_project(&p, &[]).unwrap();
            }
            assert_eq!(
                c.project("async_p").unwrap().map(|r| r.project_id),
                Some(p.project_id.clone())
            );
            assert!(c.list_projects().unwrap().iter().any(|r| r.name == "async_p"));
        });
    }
}

/// Declares each suite function as a test per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Backend::sqlite());
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(b) = super::Backend::postgres(stringify!($name)) {
                        super::$name(&b);
                    }
                }
            )*
        }
    };
}

suite!(
    existing_names_are_refused_and_nothing_is_recorded,
    update_project_is_a_compare_and_swap,
    swap_head_is_a_compare_and_swap,
    kms_generation_mark_rises_and_refuses_rollback,
    migrations_apply_once_and_newer_schemas_are_refused,
    concurrent_first_opens_migrate_once,
    lists_are_ordered_by_name,
    threads_through_one_handle,
    threads_through_separate_handles,
    processes_through_separate_catalogs,
    usable_from_async_code,
);

/// PostgreSQL only: a connection the server ended is replaced, so the catalog goes on.
#[cfg(feature = "postgres")]
#[test]
fn postgres_reconnects_after_the_server_ends_the_connection() {
    let Some(url) = common::pg::database("reconnect") else {
        return;
    };
    let b = Backend { url, _dir: None };
    let c = b.try_open().unwrap();
    let p = project(1, "p");
    let t = table(&p, 1, "t");
    c.create_project(&p, std::slice::from_ref(&t)).unwrap();
    // End every other session on this database from a second connection.
    let mut admin = b.conn();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    // Wait until those sessions are gone, so the next statement meets the ended connection.
    let others = "SELECT count(*) FROM pg_stat_activity \
                  WHERE datname = current_database() AND pid <> pg_backend_pid()";
    for i in 0.. {
        if admin.query(others, &[]).unwrap() == vec![vec![Value::Int(0)]] {
            break;
        }
        assert!(i < 1000, "the terminated session does not go away");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // A read is repeated once on a new connection; writes go on afterwards.
    assert_eq!(c.table_by_id(&t.table_id).unwrap().unwrap(), t);
    let v1 = TableHead {
        version: 1,
        digest: digest(1, 1),
    };
    assert!(c.swap_head(&t.table_id, &t.head, &v1).unwrap());
    assert_eq!(c.table_by_id(&t.table_id).unwrap().unwrap().head, v1);
}
