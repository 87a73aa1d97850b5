//! SQL over partitioned tables (feature `datafusion`): filters on partition columns alone are
//! decided exactly from the sealed manifest's partition values, so the files of other partitions
//! are never opened (counted by object on an instrumented store) and the planner applies no filter
//! of its own; every answer equals DataFusion's over a MemTable of the same rows; INSERT INTO
//! writes a file per partition.
#![cfg(feature = "datafusion")]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::util::pretty::pretty_format_batches;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sql::SqlSession;
use colvault::storage::Instrumented;
use colvault::table::{Table, TableOptions};
use colvault::Algorithm;
use common::events::{batch, schema};
use common::{keys, Fixture};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

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
