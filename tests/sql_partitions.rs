//! SQL over partitioned tables (feature `datafusion`): filters on partition columns alone are
//! decided exactly from the sealed manifest's partition values, so the files of other partitions
//! are never opened (counted by object on an instrumented store) and the planner applies no filter
//! of its own; every answer equals DataFusion's over a MemTable of the same rows; INSERT INTO
//! writes a file per partition; CREATE TABLE ... PARTITIONED BY makes partitioned tables.
#![cfg(feature = "datafusion")]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sql::SqlSession;
use colvault::storage::Instrumented;
use colvault::table::{Table, TableOptions};
use colvault::Algorithm;
use common::events::{batch, schema};
use common::{keys, rt, text, Fixture};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

/// Table `events`, partitioned by `ds` (30 days, plus a null day), in two appends: 62 files, on
/// an instrumented in-memory store named `root`. Returns the project, the table, the counter and
/// every row written.
fn events(fx: &Fixture, root: &str) -> (Project, Table, Instrumented, Vec<RecordBatch>) {
    let counted = Instrumented::new(Arc::new(object_store::memory::InMemory::new()), Duration::ZERO);
    colvault::storage::register_store(root, Arc::new(counted.clone()));
    let p = Project::create(
        &fx.catalog,
        format!("{root}/p"),
        "sales",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(fx),
    )
    .unwrap();
    let t = p
        .create_table_with("events", schema(), TableOptions::new().partition_by(["ds"]))
        .unwrap();
    let rows = vec![batch(0, 3000, 30, true), batch(3000, 3000, 30, true)];
    for b in &rows {
        t.append([b.clone()]).unwrap();
    }
    (p, t, counted, rows)
}

/// The data files the store served GETs of since `counted` was reset.
fn data_files_read(counted: &Instrumented) -> BTreeSet<String> {
    counted
        .objects_read()
        .into_iter()
        .filter_map(|(path, _)| path.split("/data/").nth(1).map(str::to_string))
        .collect()
}

const QUERIES: [&str; 11] = [
    "SELECT count(*), sum(amount) FROM events WHERE ds = '2024-01-17'",
    "SELECT id, region FROM events WHERE ds = '2024-01-03' ORDER BY id",
    "SELECT ds, count(*) FROM events WHERE ds IN ('2024-01-02', '2024-01-29', '2031-01-01') GROUP BY ds ORDER BY ds",
    "SELECT ds, count(*) FROM events WHERE ds LIKE '2024-01-1%' GROUP BY ds ORDER BY ds",
    "SELECT count(*) FROM events WHERE ds = '2024-01-05' OR ds = '2024-01-06'",
    "SELECT count(*) FROM events WHERE ds > '2024-01-25' AND id % 2 = 0",
    "SELECT count(*) FROM events WHERE substr(ds, 9, 2) = '07'",
    "SELECT count(*), min(id) FROM events WHERE ds IS NULL",
    "SELECT count(*) FROM events WHERE ds IS NOT NULL AND ds <> '2024-01-01'",
    "SELECT count(*) FROM events WHERE ds = '2024-01-08' OR id < 40",
    "SELECT region, count(*) FROM events WHERE ds BETWEEN '2024-01-10' AND '2024-01-12' GROUP BY region ORDER BY region",
];

#[test]
fn partition_filters_match_a_memtable_of_the_same_rows() {
    let fx = Fixture::new();
    let (p, _t, _counted, rows) = events(&fx, "counted://sql-partitions-match");
    let session = SqlSession::for_project(&p);
    let mem = SessionContext::new();
    mem.register_table("events", Arc::new(MemTable::try_new(schema(), vec![rows]).unwrap()))
        .unwrap();
    let rt = rt();
    for q in QUERIES {
        let ours = rt.block_on(session.query(q)).unwrap_or_else(|e| panic!("{q}: {e}"));
        let theirs = rt.block_on(async { mem.sql(q).await?.collect().await }).unwrap();
        assert_eq!(text(&ours), text(&theirs), "{q}");
    }
}

/// The proof by counting, through SQL: a query on one of 30 partitions reads only that
/// partition's two data files, and its plan keeps no filter of its own.
#[test]
fn a_query_on_one_of_30_partitions_opens_only_its_files() {
    let fx = Fixture::new();
    let (p, t, counted, _) = events(&fx, "counted://sql-partitions-count");
    let head = t.head().unwrap();
    assert_eq!(t.partitions().unwrap().len(), 31);
    assert_eq!(head.files.len(), 62);
    let wanted = t.parse_partition("ds=2024-01-17").unwrap();
    let wanted_files: BTreeSet<String> = head
        .files
        .iter()
        .filter(|f| f.partition == wanted.values())
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(wanted_files.len(), 2);
    let session = SqlSession::for_project(&p);
    let rt = rt();

    counted.reset();
    let got = rt
        .block_on(session.query("SELECT count(*) AS n, sum(amount) AS s FROM events WHERE ds = '2024-01-17'"))
        .unwrap();
    let n = got[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    assert_eq!(n, 200);
    assert_eq!(
        data_files_read(&counted),
        wanted_files,
        "only the partition's files are opened"
    );

    // The counter sees every file when no partition filter applies (so the check can fail).
    counted.reset();
    rt.block_on(session.query("SELECT count(*) FROM events WHERE amount > 1"))
        .unwrap();
    assert_eq!(data_files_read(&counted).len(), 62);

    // The plan: two files, the filter shown on the scan, and no FilterExec above it (Exact).
    let plan = text(
        &rt.block_on(session.query("EXPLAIN SELECT id FROM events WHERE ds = '2024-01-17'"))
            .unwrap(),
    );
    assert!(plan.contains("files=2,"), "{plan}");
    assert!(
        plan.contains("pruning=[events.ds = Utf8(\"2024-01-17\")]") || plan.contains("pruning=[ds"),
        "{plan}"
    );
    assert!(!plan.contains("FilterExec"), "{plan}");
    // EXPLAIN ANALYZE shows what the scan produced and read.
    let analyzed = text(
        &rt.block_on(session.query("EXPLAIN ANALYZE SELECT id FROM events WHERE ds = '2024-01-17'"))
            .unwrap(),
    );
    let scan = analyzed
        .lines()
        .find(|l| l.contains("ColvaultScanExec"))
        .unwrap_or_else(|| panic!("{analyzed}"));
    assert!(scan.contains("output_rows=200"), "{scan}");
    assert!(scan.contains("row_groups_read=2"), "{scan}");
    assert!(scan.contains("time_elapsed_scanning_total="), "{scan}");
    // A filter that also reads another column keeps its FilterExec.
    let mixed = text(
        &rt.block_on(session.query("EXPLAIN SELECT id FROM events WHERE ds = '2024-01-17' OR id < 5"))
            .unwrap(),
    );
    assert!(mixed.contains("FilterExec"), "{mixed}");
    assert!(mixed.contains("files=62,"), "{mixed}");

    // A limit under a partition filter holds: only the files needed are opened.
    counted.reset();
    let limited = rt
        .block_on(session.query("SELECT id FROM events WHERE ds = '2024-01-17' LIMIT 3"))
        .unwrap();
    assert_eq!(limited.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    let read = data_files_read(&counted);
    assert_eq!(read.len(), 1, "{read:?}");
    assert!(read.is_subset(&wanted_files));
}

#[test]
fn insert_into_writes_a_file_per_partition_in_one_commit() {
    let fx = Fixture::new();
    let (p, t, _counted, _) = events(&fx, "counted://sql-partitions-insert");
    let before = t.head().unwrap();
    let session = SqlSession::for_project(&p);
    let rt = rt();
    rt.block_on(session.query(
        "INSERT INTO events VALUES (10000, '2024-02-01', 'eu', 1.5), (10001, '2024-02-02', 'us', 2.5), \
         (10002, '2024-02-01', 'us', 3.5), (10003, NULL, 'eu', 4.5)",
    ))
    .unwrap();
    let after = t.head().unwrap();
    assert_eq!(after.version, before.version + 1, "one commit");
    assert_eq!(after.files.len(), before.files.len() + 3, "one file per new partition");
    let feb1 = t.parse_partition("ds=2024-02-01").unwrap();
    let info = t
        .partitions()
        .unwrap()
        .into_iter()
        .find(|i| i.partition == feb1)
        .unwrap();
    assert_eq!((info.files, info.rows), (1, 2));
    let got = rt
        .block_on(session.query("SELECT sum(amount) FROM events WHERE ds >= '2024-02-01'"))
        .unwrap();
    let s = got[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap()
        .value(0);
    assert_eq!(s, 7.5);
}

/// `CREATE TABLE ... PARTITIONED BY` in Hive's form (MaxCompute's DDL: typed partition columns
/// after the others) and Spark's (listed columns named), and with `AS SELECT`; mistakes are
/// refused with nothing created.
#[test]
fn create_table_partitioned_by() {
    let fx = Fixture::new();
    let (p, _t, _counted, _) = events(&fx, "counted://sql-partitions-ddl");
    let session = SqlSession::for_project(&p);
    let rt = rt();
    let run = |q: &str| rt.block_on(session.query(q));

    // Hive: ds is declared in PARTITIONED BY only, and comes last.
    run("CREATE TABLE daily (id BIGINT NOT NULL, amount DOUBLE) PARTITIONED BY (ds STRING)").unwrap();
    let daily = p.table("daily").unwrap();
    assert_eq!(daily.partition_by(), ["ds"]);
    let names: Vec<String> = daily
        .head()
        .unwrap()
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "amount", "ds"]);
    run("INSERT INTO daily VALUES (1, 2.5, '2024-01-01'), (2, 3.5, '2024-01-02'), (3, 1.0, '2024-01-01')").unwrap();
    let parts = daily.partitions().unwrap();
    assert_eq!(
        parts
            .iter()
            .map(|i| (i.partition.to_string(), i.rows))
            .collect::<Vec<_>>(),
        [("ds=2024-01-01".to_string(), 2), ("ds=2024-01-02".to_string(), 1)]
    );
    // IF NOT EXISTS on an existing table changes nothing.
    run("CREATE TABLE IF NOT EXISTS daily (id BIGINT) PARTITIONED BY (ds STRING)").unwrap();
    assert_eq!(p.table("daily").unwrap().partitions().unwrap().len(), 2);

    // Spark: a listed column named without a type.
    run("CREATE TABLE spark (id BIGINT, region VARCHAR NOT NULL) PARTITIONED BY (region)").unwrap();
    assert_eq!(p.table("spark").unwrap().partition_by(), ["region"]);

    // AS SELECT: the partition columns are the query's.
    run("CREATE TABLE fifth PARTITIONED BY (region) AS SELECT * FROM events WHERE ds = '2024-01-05'").unwrap();
    let fifth = p.table("fifth").unwrap();
    assert_eq!(fifth.partition_by(), ["region"]);
    let parts = fifth.partitions().unwrap();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts.iter().map(|i| i.rows).sum::<u64>(), 200);

    // Mistakes: typed and listed, neither typed nor listed, typed with AS SELECT, a type that
    // cannot partition; none creates a table.
    let before = p.list_tables().unwrap();
    for bad in [
        "CREATE TABLE bad (id BIGINT, ds STRING) PARTITIONED BY (ds STRING)",
        "CREATE TABLE bad (id BIGINT) PARTITIONED BY (ds)",
        "CREATE TABLE bad PARTITIONED BY (ds STRING) AS SELECT * FROM events",
        "CREATE TABLE bad (id BIGINT, amount DOUBLE) PARTITIONED BY (amount)",
        "CREATE OR REPLACE TABLE daily (id BIGINT) PARTITIONED BY (ds STRING)",
    ] {
        match run(bad) {
            Err(colvault::Error::InvalidArgument(msg)) => eprintln!("{bad}: {msg}"),
            other => panic!("{bad}: expected InvalidArgument, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(p.list_tables().unwrap(), before);
}
