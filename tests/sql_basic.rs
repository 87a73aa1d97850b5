//! SQL over colvault tables (feature `datafusion`): queries over an encrypted table against the
//! same queries over a DataFusion MemTable of the same rows, statistics pruning and partitions,
//! a pinned snapshot, INSERT INTO (one commit), CREATE TABLE AS, DROP TABLE, and errors. A row
//! group too big for one partition is read by several.
#![cfg(feature = "datafusion")]

mod common;

use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use colvault::kms::KmsAdmin;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sql::SqlSession;
use colvault::table::{Table, TableWriteOptions};
use colvault::{Algorithm, Error};
use common::{keys, rt, text, Fixture};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

const CITIES: [Option<&str>; 5] = [Some("Oslo"), Some("Lima"), None, Some("Quito"), Some("Accra")];

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("qty", DataType::Int32, false),
    ]))
}

/// Rows `start .. start + n`: ids ascending, so row groups have disjoint id ranges.
fn rows(start: i64, n: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n).collect();
    let city: Vec<Option<&str>> = ids.iter().map(|i| CITIES[(*i % 5) as usize]).collect();
    // Quarters add up exactly in any order, so sums match whatever the plan.
    let amount: Vec<Option<f64>> = ids
        .iter()
        .map(|i| (i % 7 != 0).then_some((i % 40) as f64 * 0.25))
        .collect();
    let qty: Vec<i32> = ids.iter().map(|i| (i % 6) as i32).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(city)),
            Arc::new(Float64Array::from(amount)),
            Arc::new(Int32Array::from(qty)),
        ],
    )
    .unwrap()
}

fn project(fx: &Fixture, alg: Algorithm) -> Project {
    let settings = ProjectSettings::encrypted(alg, KeyChoice::ProjectDefault);
    Project::create(&fx.catalog, fx.dir.path().join("sales"), "sales", settings, keys(fx)).unwrap()
}

/// The table `orders` of 1000 rows in four commits (files of at most 300 rows, row groups of at
/// most 100: 11 row groups in 4 files).
fn orders(p: &Project) -> (Table, Vec<RecordBatch>) {
    let opts = TableWriteOptions {
        row_group_rows: 100,
        file_rows: 300,
        ..TableWriteOptions::default()
    };
    let t = p.create_table("orders", schema()).unwrap().with_write_options(opts);
    let mut all = Vec::new();
    for (start, n) in [(0, 250), (250, 250), (500, 300), (800, 200)] {
        let b = rows(start, n);
        t.append([b.clone()]).unwrap();
        all.push(b);
    }
    (t, all)
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    let b = batches.iter().find(|b| b.num_rows() > 0).unwrap();
    b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0)
}

const QUERIES: [&str; 12] = [
    "SELECT id, city FROM orders WHERE id > 870 ORDER BY id",
    "SELECT city, count(*) AS n, sum(amount) AS s, min(id) AS lo, max(qty) AS hi FROM orders GROUP BY city ORDER BY city",
    "SELECT * FROM orders WHERE city = 'Oslo' AND id < 300 ORDER BY id",
    "SELECT id FROM orders ORDER BY id DESC LIMIT 7",
    "SELECT count(*) FROM orders",
    "SELECT count(*) FROM orders WHERE city IS NULL",
    "SELECT count(amount), count(city) FROM orders",
    "SELECT qty, count(*) AS n, avg(amount) AS a FROM orders WHERE qty >= 3 GROUP BY qty ORDER BY qty",
    "SELECT id FROM orders WHERE id >= 250 AND id <= 260 OR id = 999 ORDER BY id",
    "SELECT a.id, b.city FROM orders a JOIN orders b ON a.id = b.id + 1 WHERE a.id < 20 ORDER BY a.id",
    "SELECT min(id), max(id), min(city), max(city) FROM orders WHERE 400 < id",
    "SELECT id, amount FROM orders WHERE amount IS NULL AND id BETWEEN 100 AND 200 ORDER BY id",
];

#[test]
fn queries_match_a_memtable_of_the_same_rows() {
    let fx = Fixture::new();
    for alg in [Algorithm::Aes256Gcm, Algorithm::Aes256Ctr] {
        let dir = fx.dir.path().join(format!("p_{alg}"));
        let name = format!("sales_{alg}");
        let p = Project::create(
            &fx.catalog,
            dir,
            &name,
            ProjectSettings::encrypted(alg, KeyChoice::ProjectDefault),
            keys(&fx),
        )
        .unwrap();
        let (_t, batches) = orders(&p);
        let session = SqlSession::for_project(&p);
        let mem = SessionContext::new();
        mem.register_table("orders", Arc::new(MemTable::try_new(schema(), vec![batches]).unwrap()))
            .unwrap();
        let rt = rt();
        for q in QUERIES {
            let ours = rt.block_on(session.query(q)).unwrap_or_else(|e| panic!("{q}: {e}"));
            let theirs = rt.block_on(async { mem.sql(q).await?.collect().await }).unwrap();
            assert_eq!(text(&ours), text(&theirs), "{alg}: {q}");
        }
        // The same with the project named: sales_x.orders.
        let q = format!("SELECT count(*) FROM {name}.orders WHERE id < 10");
        assert_eq!(single_i64(&rt.block_on(session.query(&q)).unwrap()), 10);
    }
}

#[test]
fn scans_prune_row_groups_and_use_partitions() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    orders(&p);
    let session = SqlSession::for_project(&p);
    let rt = rt();
    let plan = |q: &str| text(&rt.block_on(session.query(&format!("EXPLAIN {q}"))).unwrap());
    // Ids ascend through the files, so only the last row group can hold id > 900.
    // A limit with no filter opens only the files that hold enough rows.
    let limited = plan("SELECT * FROM orders LIMIT 5");
    assert!(limited.contains("files=1, row_groups=3,"), "{limited}");
    assert!(limited.contains("limit=5"), "{limited}");
    let five = rt.block_on(session.query("SELECT * FROM orders LIMIT 5")).unwrap();
    assert_eq!(five.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);
    let pruned = plan("SELECT * FROM orders WHERE id > 900");
    assert!(pruned.contains("ColvaultScanExec"), "{pruned}");
    assert!(pruned.contains("files=1, row_groups=1,"), "{pruned}");
    assert!(pruned.contains("pruning=["), "{pruned}");
    let all = plan("SELECT * FROM orders");
    assert!(all.contains("files=4, row_groups=11,"), "{all}");
    // One partition per file or row-group range: as many as the session asks for.
    rt.block_on(session.query("SET datafusion.execution.target_partitions = 4"))
        .unwrap();
    let four = plan("SELECT sum(amount) FROM orders");
    assert!(four.contains("partitions=4"), "{four}");
    let sum = rt.block_on(session.query("SELECT sum(id) FROM orders")).unwrap();
    assert_eq!(single_i64(&sum), (0..1000).sum::<i64>());
    // A filter statistics cannot decide is not pushed down, and still answered right.
    let odd = plan("SELECT * FROM orders WHERE id % 2 = 1");
    assert!(!odd.contains("pruning=["), "{odd}");
    let n = rt
        .block_on(session.query("SELECT count(*) FROM orders WHERE id % 2 = 1"))
        .unwrap();
    assert_eq!(single_i64(&n), 500);
}

#[test]
fn one_big_row_group_is_read_by_several_partitions() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    // 200,000 rows in one row group (the default holds 1 Mi rows): each of two partitions reads
    // its half of the rows.
    let t = p.create_table("orders", schema()).unwrap();
    let batch = rows(0, 200_000);
    t.append([batch.clone()]).unwrap();
    let session = SqlSession::for_project(&p);
    let mem = SessionContext::new();
    mem.register_table(
        "orders",
        Arc::new(MemTable::try_new(schema(), vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    let rt = rt();
    rt.block_on(session.query("SET datafusion.execution.target_partitions = 2"))
        .unwrap();
    let plan = text(
        &rt.block_on(session.query("EXPLAIN SELECT sum(amount) FROM orders"))
            .unwrap(),
    );
    assert!(plan.contains("files=1, row_groups=1, partitions=2,"), "{plan}");
    for q in [
        "SELECT count(*) AS n, sum(id) AS s, sum(amount) AS a, count(city) AS c FROM orders",
        "SELECT city, count(*) AS n, sum(amount) AS s, min(id) AS lo, max(id) AS hi FROM orders GROUP BY city ORDER BY city",
        "SELECT id, city, amount FROM orders WHERE id BETWEEN 99990 AND 100010 ORDER BY id",
        "SELECT qty, count(*) AS n FROM orders WHERE id % 1000 = 999 GROUP BY qty ORDER BY qty",
        "SELECT id FROM orders ORDER BY amount DESC, id LIMIT 5",
    ] {
        let ours = rt.block_on(session.query(q)).unwrap_or_else(|e| panic!("{q}: {e}"));
        let theirs = rt.block_on(async { mem.sql(q).await?.collect().await }).unwrap();
        assert_eq!(text(&ours), text(&theirs), "{q}");
    }
}

/// Join selection sees the bytes of the columns a query reads, not of whole rows, as DataFusion's
/// Parquet scan reports them: a table whose rows are wide but whose key column is small is
/// broadcast as a join's build side (`CollectLeft`) instead of repartitioning the other side.
#[test]
fn statistics_count_the_bytes_of_the_projected_columns() {
    use datafusion::common::stats::Precision;
    use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let wide = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("note", DataType::Utf8, false),
    ]));
    let n = 20_000;
    // 20,000 rows of 8 + 100 bytes: 2 MB of rows, 160 kB of ids (the broadcast bound is 1 MB).
    let dim = RecordBatch::try_new(
        wide.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("{i:0100}")))),
        ],
    )
    .unwrap();
    p.create_table("dim", wide).unwrap().append([dim]).unwrap();
    p.create_table("orders", schema())
        .unwrap()
        .append([rows(0, 200_000)])
        .unwrap();
    let session = SqlSession::for_project(&p);
    let rt = rt();
    let provider = rt.block_on(session.context().table_provider("dim")).unwrap();
    let state = session.context().state();
    let ids = rt.block_on(provider.scan(&state, Some(&vec![0]), &[], None)).unwrap();
    let stats_of = |plan| StatisticsContext::new().compute(plan, &StatisticsArgs::new()).unwrap();
    let stats = stats_of(ids.as_ref());
    assert_eq!(stats.num_rows, Precision::Exact(n as usize));
    assert_eq!(stats.total_byte_size, Precision::Exact(n as usize * 8));
    let both = rt.block_on(provider.scan(&state, None, &[], None)).unwrap();
    let whole = stats_of(both.as_ref()).total_byte_size;
    assert!(
        whole.get_value().is_some_and(|b| *b > 2_000_000),
        "a string column has no fixed width: the footers' size stands, {whole:?}"
    );
    rt.block_on(session.query("SET datafusion.execution.target_partitions = 2"))
        .unwrap();
    let q = "SELECT count(*) FROM orders o JOIN dim d ON o.id = d.id";
    let plan = text(&rt.block_on(session.query(&format!("EXPLAIN {q}"))).unwrap());
    assert!(plan.contains("HashJoinExec: mode=CollectLeft"), "{plan}");
    assert_eq!(single_i64(&rt.block_on(session.query(q)).unwrap()), n);
}

#[test]
fn a_plan_reads_the_version_it_was_planned_against() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let (t, _) = orders(&p);
    let session = SqlSession::for_project(&p);
    let rt = rt();
    let df = rt
        .block_on(session.sql("SELECT count(*) FROM orders WHERE id >= 0"))
        .unwrap();
    let task = df.task_ctx();
    let physical = rt.block_on(df.create_physical_plan()).unwrap();
    t.append([rows(1000, 500)]).unwrap();
    let before = rt
        .block_on(datafusion::physical_plan::collect(physical, Arc::new(task)))
        .unwrap();
    assert_eq!(single_i64(&before), 1000);
    let after = rt
        .block_on(session.query("SELECT count(*) FROM orders WHERE id >= 0"))
        .unwrap();
    assert_eq!(single_i64(&after), 1500);
}

#[test]
fn insert_into_commits_once_and_round_trips() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let (t, _) = orders(&p);
    let session = SqlSession::for_project(&p);
    let rt = rt();
    let v0 = t.head().unwrap().version;
    let out = rt
        .block_on(session.query("INSERT INTO orders SELECT id + 1000, city, amount, qty FROM orders WHERE id < 450"))
        .unwrap();
    assert_eq!(single_i64_u64(&out), 450);
    let head = t.head().unwrap();
    assert_eq!(head.version, v0 + 1, "one commit for the whole statement");
    assert_eq!(head.rows(), 1450);
    // What SQL wrote, colvault reads: encrypted like the rest.
    let read = t.scan().columns(["id", "city"]).build().unwrap().read_all().unwrap();
    let mut ids: Vec<i64> = read
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<i64> = (0..1000).chain(1000..1450).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let copied = rt
        .block_on(session.query("SELECT city FROM orders WHERE id = 1003"))
        .unwrap();
    assert!(text(&copied).contains("Quito"), "{}", text(&copied));
    // VALUES, with a cast to the table's types; then a statement of no rows commits nothing.
    rt.block_on(session.query("INSERT INTO orders VALUES (5000, 'Bergen', 1.5, 2)"))
        .unwrap();
    assert_eq!(t.head().unwrap().version, v0 + 2);
    rt.block_on(session.query("INSERT INTO orders SELECT * FROM orders WHERE id < 0"))
        .unwrap();
    assert_eq!(t.head().unwrap().version, v0 + 2);
    // A row the table cannot hold (a null id) fails the statement and commits nothing.
    let err = rt
        .block_on(session.query("INSERT INTO orders VALUES (NULL, 'x', 1.0, 1)"))
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("null"), "{err}");
    assert_eq!(t.head().unwrap().version, v0 + 2);
    assert_eq!(t.head().unwrap().rows(), 1451);
}

fn single_i64_u64(batches: &[RecordBatch]) -> u64 {
    let c = batches[0].column(0);
    match c.as_any().downcast_ref::<arrow::array::UInt64Array>() {
        Some(a) => a.value(0),
        None => c.as_any().downcast_ref::<Int64Array>().unwrap().value(0) as u64,
    }
}

#[test]
fn create_table_as_select_and_drop_table() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    orders(&p);
    let session = SqlSession::for_project(&p);
    let rt = rt();
    rt.block_on(
        session.query("CREATE TABLE oslo AS SELECT id, city, amount * 2 AS twice FROM orders WHERE city = 'Oslo'"),
    )
    .unwrap();
    let oslo = p.table("oslo").unwrap();
    let head = oslo.head().unwrap();
    assert_eq!(head.version, 1, "created with its rows in one commit");
    assert_eq!(head.rows(), 200);
    assert_eq!(head.algorithm, Algorithm::Aes256Gcm);
    let n = rt
        .block_on(session.query("SELECT count(*) FROM sales.oslo WHERE city = 'Oslo'"))
        .unwrap();
    assert_eq!(single_i64(&n), 200);
    // CREATE TABLE with columns: an empty table.
    rt.block_on(session.query("CREATE TABLE empty_one (a BIGINT, b VARCHAR)"))
        .unwrap();
    assert_eq!(p.table("empty_one").unwrap().head().unwrap().rows(), 0);
    // An existing name is refused; CREATE OR REPLACE is refused before the old table is touched.
    assert!(rt
        .block_on(session.query("CREATE TABLE oslo AS SELECT 1 AS x"))
        .is_err());
    let err = rt
        .block_on(session.query("CREATE OR REPLACE TABLE oslo AS SELECT 1 AS x"))
        .unwrap_err();
    assert!(err.to_string().contains("INSERT OVERWRITE"), "{err}");
    assert_eq!(p.table("oslo").unwrap().head().unwrap().rows(), 200);
    // DROP TABLE drops the colvault table.
    rt.block_on(session.query("DROP TABLE oslo")).unwrap();
    assert!(matches!(p.table("oslo"), Err(Error::NotRegistered { .. })));
    rt.block_on(session.query("DROP TABLE IF EXISTS oslo")).unwrap();
    assert!(rt.block_on(session.query("DROP TABLE oslo")).is_err());
    let names = rt.block_on(session.query("SHOW TABLES")).unwrap();
    assert!(text(&names).contains("empty_one"), "{}", text(&names));
    // Views live in the session, not in the project.
    rt.block_on(session.query("CREATE VIEW big AS SELECT id FROM orders WHERE id >= 990"))
        .unwrap();
    let n = rt.block_on(session.query("SELECT count(*) FROM big")).unwrap();
    assert_eq!(single_i64(&n), 10);
    assert!(matches!(p.table("big"), Err(Error::NotRegistered { .. })));
    assert!(rt
        .block_on(session.query("CREATE VIEW orders AS SELECT 1 AS x"))
        .is_err());
    rt.block_on(session.query("DROP VIEW big")).unwrap();
    assert!(rt.block_on(session.query("SELECT * FROM big")).is_err());
}

#[test]
fn errors_are_typed_and_clear() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    orders(&p);
    let session = SqlSession::for_project(&p);
    let rt = rt();
    let err = rt.block_on(session.query("SELECT * FROM nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = rt.block_on(session.query("SELECT * FROM other.orders")).unwrap_err();
    assert!(err.to_string().contains("other"), "{err}");
    let err = rt.block_on(session.query("SELEC 1")).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // The project's key disabled: the query fails with the KMS's error, typed.
    let cmk = p.settings().cmk.clone().unwrap();
    fx.kms.disable(&cmk).unwrap();
    fx.cache.invalidate();
    let err = rt
        .block_on(session.query("SELECT count(*) FROM orders WHERE id > 3"))
        .unwrap_err();
    assert!(matches!(err, Error::KeyDisabled { .. }), "{err:?}");
    fx.kms.enable(&cmk).unwrap();
    let n = rt
        .block_on(session.query("SELECT count(*) FROM orders WHERE id > 3"))
        .unwrap();
    assert_eq!(single_i64(&n), 996);
}

#[test]
fn a_session_over_the_whole_catalog() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    orders(&p);
    let session = SqlSession::new(fx.catalog.clone(), keys(&fx));
    let rt = rt();
    let n = rt
        .block_on(session.query("SELECT count(*) FROM sales.orders WHERE city = 'Lima'"))
        .unwrap();
    assert_eq!(single_i64(&n), 200);
    let n = rt
        .block_on(session.query("SELECT count(*) FROM colvault.sales.orders"))
        .unwrap();
    assert_eq!(single_i64(&n), 1000);
    assert!(matches!(
        SqlSession::with_default_project(fx.catalog.clone(), keys(&fx), "nosuch"),
        Err(Error::NotRegistered { .. })
    ));
    // A project as a schema of any DataFusion context.
    let ctx = SessionContext::new();
    colvault::sql::register_project(&ctx, &p).unwrap();
    let out = rt
        .block_on(async { ctx.sql("SELECT max(id) FROM sales.orders").await?.collect().await })
        .unwrap();
    assert_eq!(single_i64(&out), 999);
}

/// Queries, INSERT and CTAS on each data-plane backend (local, memory, S3 when moto is here): the
/// blocking object-store reads run under DataFusion's runtime.
fn sql_on_backend(backend: common::stores::Backend) {
    let fx = Fixture::new();
    let Some(loc) = common::stores::location(backend, fx.dir.path(), "sql_on_backend") else {
        return;
    };
    let settings = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault);
    let p = Project::create(&fx.catalog, &loc, "sales", settings, keys(&fx)).unwrap();
    let (t, batches) = orders(&p);
    let session = SqlSession::for_project(&p);
    let mem = SessionContext::new();
    mem.register_table("orders", Arc::new(MemTable::try_new(schema(), vec![batches]).unwrap()))
        .unwrap();
    let rt = rt();
    for q in &QUERIES[..4] {
        let ours = rt.block_on(session.query(q)).unwrap_or_else(|e| panic!("{q}: {e}"));
        let theirs = rt.block_on(async { mem.sql(q).await?.collect().await }).unwrap();
        assert_eq!(text(&ours), text(&theirs), "{backend:?}: {q}");
    }
    let v = t.head().unwrap().version;
    rt.block_on(session.query("INSERT INTO orders SELECT * FROM orders WHERE id < 10"))
        .unwrap();
    assert_eq!(t.head().unwrap().version, v + 1);
    rt.block_on(session.query("CREATE TABLE lima AS SELECT * FROM orders WHERE city = 'Lima'"))
        .unwrap();
    assert_eq!(p.table("lima").unwrap().head().unwrap().rows(), 202);
}

crate::backend_tests!(sql_on_backend);

#[test]
fn columns_added_later_read_as_null() {
    let fx = Fixture::new();
    let p = project(&fx, Algorithm::Aes256Gcm);
    let (t, _) = orders(&p);
    t.add_column(Field::new("note", DataType::Utf8, true)).unwrap();
    let session = SqlSession::for_project(&p);
    let rt = rt();
    rt.block_on(session.query("INSERT INTO orders VALUES (2000, 'Oslo', 1.0, 1, 'late')"))
        .unwrap();
    let out = rt
        .block_on(session.query("SELECT count(*) AS n, count(note) AS notes FROM orders"))
        .unwrap();
    assert_eq!(
        text(&out),
        "+------+-------+\n| n    | notes |\n+------+-------+\n| 1001 | 1     |\n+------+-------+"
    );
    // Only the new column: the old files' rows come from their row counts, all null.
    let out = rt
        .block_on(session.query("SELECT note, count(*) AS n FROM orders GROUP BY note ORDER BY note"))
        .unwrap();
    assert!(text(&out).contains("| late | 1    |"), "{}", text(&out));
    assert!(text(&out).contains("|      | 1000 |"), "{}", text(&out));
    let out = rt
        .block_on(session.query("SELECT id FROM orders WHERE note = 'late'"))
        .unwrap();
    assert_eq!(single_i64(&out), 2000);
}
