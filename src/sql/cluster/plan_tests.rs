//! The distributed plan in one process: encoded by a client's codec, decoded by an executor's, and
//! run. Answers equal the local engine's. Plans a scheduler or network could have rewritten are
//! refused before a byte is read. (`tests/sql_cluster.rs` runs the same on real processes.)

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::SessionContext;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;

use super::codec::{as_scan, scan_exec};
use super::source::{ClusterEnv, ColvaultFileSource, SliceRef};
use super::{distribute, ClusterCodec};
use crate::error::Error;
use crate::kms::{CacheOptions, KeyCache, LocalKms, LocalKmsOptions, RootSecret};
use crate::project::{KeyChoice, Keys, Project, ProjectSettings};
use crate::sql::SqlSession;
use crate::Algorithm;

struct Fixture {
    _dir: tempfile::TempDir,
    project: Project,
    env: Arc<ClusterEnv>,
}

/// A project with table `t` (id, city) written in two commits (two files of 3 and 2 rows).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog = crate::catalog::open(&format!("sqlite:{}", dir.path().join("catalog.db").display())).unwrap();
    let root = RootSecret::create_key_file(dir.path().join("root.key")).unwrap();
    let kms = Arc::new(LocalKms::create(dir.path().join("keystore"), root, LocalKmsOptions::new()).unwrap());
    let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default()).unwrap());
    let keys = Keys { kms, cache };
    let settings = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault);
    let project = Project::create(&catalog, dir.path().join("shop"), "shop", settings, keys.clone()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, true),
    ]));
    let batch = |ids: Vec<i64>, cities: Vec<Option<&str>>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(cities))],
        )
        .unwrap()
    };
    let t = project.create_table("t", schema.clone()).unwrap();
    t.append([batch(vec![1, 2, 3], vec![Some("Oslo"), None, Some("Lima")])])
        .unwrap();
    t.append([batch(vec![4, 5], vec![Some("Oslo"), Some("Quito")])])
        .unwrap();
    // The executor's own catalog client and keys (here: the same catalog and keystore).
    let env = Arc::new(ClusterEnv::new(catalog.clone(), keys));
    Fixture {
        _dir: dir,
        project,
        env,
    }
}

/// `plan` as an executor gets it: encoded by the planner's codec, decoded by the executor's.
fn ship(plan: Arc<dyn ExecutionPlan>, env: &Arc<ClusterEnv>) -> Arc<dyn ExecutionPlan> {
    let node = PhysicalPlanNode::try_from_physical_plan(plan, &ClusterCodec::planner()).unwrap();
    // An executor's context: DataFusion's functions registered, as Ballista's executors have them.
    let ctx = SessionContext::new().task_ctx();
    node.try_into_physical_plan(&ctx, &ClusterCodec::executor(env.clone()))
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn run(plan: Arc<dyn ExecutionPlan>) -> crate::Result<Vec<RecordBatch>> {
    rt().block_on(collect(plan, SessionContext::new().task_ctx()))
        .map_err(crate::sql::error_from_datafusion)
}

/// The physical plan `session` makes of `sql`, as a client makes it before distributing it.
fn physical_plan(session: &SqlSession, sql: &str) -> Arc<dyn ExecutionPlan> {
    rt().block_on(async {
        session
            .sql(sql)
            .await?
            .create_physical_plan()
            .await
            .map_err(crate::sql::error_from_datafusion)
    })
    .unwrap()
}

fn pretty(batches: &[RecordBatch]) -> String {
    datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string()
}

#[test]
fn shipped_plans_answer_as_the_local_engine() {
    let fx = fixture();
    let session = SqlSession::for_project(&fx.project);
    let rt = rt();
    for sql in [
        "SELECT id, city FROM t ORDER BY id",
        "SELECT city, count(*) AS n FROM t GROUP BY city ORDER BY city",
        "SELECT id FROM t WHERE id > 2 ORDER BY id",
        "SELECT * FROM t ORDER BY id LIMIT 2",
    ] {
        let local = rt.block_on(session.query(sql)).unwrap();
        let plan = physical_plan(&session, sql);
        let plan = distribute(plan).unwrap();
        let shipped = ship(plan, &fx.env);
        assert_eq!(pretty(&run(shipped).unwrap()), pretty(&local), "{sql}");
    }
}

/// The scan of `t` at its head, as the client planned it (the source and its file groups).
fn planned(fx: &Fixture) -> (ColvaultFileSource, Vec<Vec<SliceRef>>) {
    let session = SqlSession::for_project(&fx.project);
    let plan = physical_plan(&session, "SELECT id, city FROM t");
    let plan = distribute(plan).unwrap();
    let mut found = None;
    let mut stack = vec![plan];
    while let Some(p) = stack.pop() {
        if let Some((config, source)) = as_scan(p.as_ref()) {
            let groups = config
                .file_groups
                .iter()
                .map(|g| {
                    g.files()
                        .iter()
                        .map(|f| f.extension::<SliceRef>().unwrap().clone())
                        .collect()
                })
                .collect();
            found = Some((source.clone(), groups));
        }
        stack.extend(p.children().into_iter().cloned());
    }
    found.expect("the plan scans t")
}

/// Runs a scan of `groups` with `source`'s selection, on the executor of `fx`.
fn run_forged(
    fx: &Fixture,
    source: &ColvaultFileSource,
    groups: Vec<Vec<SliceRef>>,
) -> crate::Result<Vec<RecordBatch>> {
    let forged = ColvaultFileSource::new(
        source.target.clone(),
        source.version,
        source.schema().clone(),
        Some(fx.env.clone()),
    );
    run(scan_exec(forged, groups, None, None))
}

#[test]
fn forged_selections_are_refused_before_reading() {
    let fx = fixture();
    let (source, groups) = planned(&fx);
    let all: Vec<SliceRef> = groups.into_iter().flatten().collect();
    assert_eq!(all.len(), 2, "two files");
    // The planned selection reads.
    assert_eq!(
        run_forged(&fx, &source, vec![all.clone()])
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        5
    );

    // Rows past the end of the row group, and a row range over more than one row group.
    let mut r = all[0].clone();
    r.row_range = Some(0..1000);
    let e = run_forged(&fx, &source, vec![vec![r]]).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity { what } if what.contains("rows 0..1000")),
        "{e}"
    );
    let mut r = all[0].clone();
    r.row_groups = vec![0, 0];
    r.row_range = Some(0..1);
    let e = run_forged(&fx, &source, vec![vec![r]]).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity { what } if what.contains("rows 0..1")),
        "{e}"
    );

    // A file the version does not list.
    let mut other = all[0].clone();
    other.name = "00000000000000000000000000000000.cvlt".into();
    let e = run_forged(&fx, &source, vec![vec![other]]).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity { what } if what.contains("does not hold")),
        "{e}"
    );

    // A row group the file lacks.
    let mut rg = all[0].clone();
    rg.row_groups = vec![7];
    let e = run_forged(&fx, &source, vec![vec![rg]]).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity { what } if what.contains("row group 7")),
        "{e}"
    );

    // Another table id under the same name (a replaced table).
    let mut s = source.clone();
    s.target.table_id = "ffffffffffffffffffffffffffffffff".into();
    let e = run_forged(&fx, &s, vec![all.clone()]).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity { what } if what.contains("replaced")),
        "{e}"
    );

    // Another project id.
    let mut s = source.clone();
    s.target.project_id = "ffffffffffffffffffffffffffffffff".into();
    let e = run_forged(&fx, &s, vec![all.clone()]).unwrap_err();
    assert!(matches!(&e, Error::Integrity { .. }), "{e}");

    // A version the table never had.
    let mut s = source.clone();
    s.version += 5;
    let e = run_forged(&fx, &s, vec![all.clone()]).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("no version")),
        "{e}"
    );

    // A column read as another type.
    let wrong = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
    let s = ColvaultFileSource::new(source.target.clone(), source.version, wrong, Some(fx.env.clone()));
    let e = run(scan_exec(s, vec![all.clone()], None, None)).unwrap_err();
    assert!(matches!(&e, Error::SchemaMismatch(m) if m.contains("as Utf8")), "{e}");

    // A process without an environment (the scheduler) runs nothing.
    let s = ColvaultFileSource::new(source.target.clone(), source.version, source.schema().clone(), None);
    let e = run(scan_exec(s, vec![all], None, None)).unwrap_err();
    assert!(e.to_string().contains("colvault cluster executor"), "{e}");
}

#[test]
fn a_shipped_insert_commits_once() {
    let fx = fixture();
    let session = SqlSession::for_project(&fx.project);
    let t = fx.project.table("t").unwrap();
    let before = t.head().unwrap();
    let plan = physical_plan(
        &session,
        "INSERT INTO t SELECT id + 10, city FROM t WHERE city = 'Oslo'",
    );
    let shown = datafusion::physical_plan::displayable(distribute(plan.clone()).unwrap().as_ref())
        .indent(false)
        .to_string();
    assert!(shown.contains("ColvaultSink: table=shop.t, append"), "{shown}");
    let out = run(ship(distribute(plan).unwrap(), &fx.env)).unwrap();
    let n = out[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::UInt64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 2);
    let after = t.head().unwrap();
    assert_eq!(after.version, before.version + 1, "one commit");
    assert_eq!(after.rows(), 7);
}

/// The statistics of the first scan in `plan` (depth first).
fn scan_statistics(plan: &Arc<dyn ExecutionPlan>) -> datafusion::common::Statistics {
    if let Some((config, _)) = as_scan(plan.as_ref()) {
        return config.statistics();
    }
    scan_statistics(plan.children().first().expect("a plan with a scan"))
}

/// A shipped scan reports the statistics the client planned with, so a scheduler's planner takes
/// the client's decisions (without them, Ballista's stage planner repartitioned small inputs and
/// doubled a join's rows).
#[test]
fn shipped_scans_keep_the_clients_statistics() {
    let fx = fixture();
    let session = SqlSession::for_project(&fx.project);
    let plan = physical_plan(&session, "SELECT id, city FROM t");
    let plan = distribute(plan).unwrap();
    let planned = scan_statistics(&plan);
    assert_eq!(
        planned.num_rows,
        datafusion::common::stats::Precision::Exact(5),
        "the client knows the row count"
    );
    let shipped = scan_statistics(&ship(plan, &fx.env));
    assert_eq!(shipped, planned);
}

/// A slice of some rows of a row group reaches the executor with its range, and reads those rows.
#[test]
fn shipped_row_ranges_read_their_rows() {
    let fx = fixture();
    let (source, groups) = planned(&fx);
    let mut slice = groups.into_iter().flatten().find(|s| s.rows == 3).unwrap();
    slice.row_range = Some(1..3);
    slice.rows = 2;
    let shipped = ship(scan_exec(source, vec![vec![slice]], None, None), &fx.env);
    let got = run(shipped).unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    let ids = pretty(&got);
    assert!(
        ids.contains("| 2 ") && ids.contains("| 3 ") && !ids.contains("| 1 "),
        "{ids}"
    );
}

/// A cluster session plans as Ballista's own client does: no dynamic filters (a filter filled in
/// one stage and awaited in another hung jobs) and sort-merge joins.
#[test]
fn cluster_sessions_plan_with_ballistas_options() {
    let fx = fixture();
    let local = SqlSession::for_project(&fx.project);
    assert!(
        local
            .context()
            .copied_config()
            .options()
            .optimizer
            .enable_dynamic_filter_pushdown
    );
    let cluster = super::ClusterSession::new(SqlSession::for_project(&fx.project), "127.0.0.1:50050").unwrap();
    let config = cluster.session().context().copied_config();
    let optimizer = &config.options().optimizer;
    assert!(!optimizer.enable_dynamic_filter_pushdown);
    assert!(!optimizer.prefer_hash_join);
    // The project's tables are still there.
    let n = rt()
        .block_on(cluster.session().query("SELECT count(*) FROM t"))
        .unwrap();
    assert_eq!(n[0].num_rows(), 1);
}
