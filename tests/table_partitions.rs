//! Partitioned tables, as MaxCompute's `PARTITIONED BY`: each data file holds the rows of one
//! partition, sealed manifests record every file's partition values, the catalog anchors the
//! partition columns, scans skip partitions their filters rule out before opening any file, and
//! partitions are dropped one at a time. The suites run on every data-plane backend.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use colvault::kms::KmsAdmin;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::read::{CmpOp, Predicate};
use colvault::storage::Instrumented;
use colvault::table::{Partition, PartitionValue, Table, TableOptions, MAX_PARTITION_COLUMNS};
use colvault::{Algorithm, Error};
use common::events::{batch, schema};
use common::stores::{location, Backend};
use common::Fixture;

fn by_ds_region() -> TableOptions {
    TableOptions::new().partition_by(["ds", "region"])
}

fn project(fx: &Fixture, backend: Backend, test: &str) -> Option<Project> {
    let loc = location(backend, fx.dir.path(), test)?;
    Some(
        Project::create(
            &fx.catalog,
            &loc,
            "sales",
            ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
            common::keys(fx),
        )
        .unwrap(),
    )
}

fn eq(column: &str, value: &str) -> Predicate {
    Predicate::compare(column, CmpOp::Eq, Arc::new(StringArray::from(vec![value])) as ArrayRef)
}

fn read(t: &Table, filters: Vec<Predicate>) -> Vec<RecordBatch> {
    let mut s = t.scan();
    for f in filters {
        s = s.filter(f);
    }
    s.build().unwrap().read_all().unwrap()
}

/// The rows of `batches` as sortable tuples (id, ds, region).
fn rows(batches: &[RecordBatch]) -> BTreeSet<(i64, Option<String>, String)> {
    let mut out = BTreeSet::new();
    for b in batches {
        let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let ds = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let region = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            let d = (!ds.is_null(i)).then(|| ds.value(i).to_string());
            out.insert((id.value(i), d, region.value(i).to_string()));
        }
    }
    out
}

/// Each partition of `t` with its rows.
fn shape(t: &Table) -> Vec<(Partition, u64)> {
    t.partitions()
        .unwrap()
        .into_iter()
        .map(|i| (i.partition, i.rows))
        .collect()
}

fn partition_of(t: &Table, spec: &str) -> Partition {
    t.parse_partition(spec).unwrap()
}

fn writes_split_by_partition_and_scans_prune(backend: Backend) {
    let fx = Fixture::new();
    let Some(p) = project(&fx, backend, "writes_split_by_partition_and_scans_prune") else {
        return;
    };
    let t = p.create_table_with("orders", schema(), by_ds_region()).unwrap();
    assert_eq!(t.partition_by(), ["ds", "region"]);
    let rec = fx.catalog.table(p.project_id(), "orders").unwrap().unwrap();
    assert_eq!(rec.partition_by, ["ds", "region"], "the catalog anchors them");
    assert_eq!(
        t.head().unwrap().partition_by,
        ["ds", "region"],
        "the manifest records them"
    );

    // Three days, two regions, and rows with a null day: 3 * 2 + 2 partitions.
    t.append([batch(0, 600, 3, true)]).unwrap();
    let head = t.head().unwrap();
    let parts = t.partitions().unwrap();
    assert_eq!(parts.len(), 8, "{parts:?}");
    assert_eq!(head.files.len(), 8, "one file per partition");
    assert_eq!(parts.iter().map(|p| p.rows).sum::<u64>(), 600);
    // Every file holds exactly the rows of its partition.
    for f in &head.files {
        let part = head.partition_of(f).unwrap();
        let got = read(&t, Vec::new());
        let expect: usize = rows(&got)
            .iter()
            .filter(|(_, ds, region)| {
                let want_ds = match &part.values()[0] {
                    PartitionValue::Str(s) => Some(s.clone()),
                    PartitionValue::Null => None,
                    other => panic!("{other:?}"),
                };
                *ds == want_ds && PartitionValue::Str(region.clone()) == part.values()[1]
            })
            .count();
        assert_eq!(f.rows as usize, expect, "file of {part}");
    }

    // A filter on a partition column returns exactly that partition's rows (its files are the
    // only ones opened, so the result is exact even though row-group pruning is not).
    let all = rows(&read(&t, Vec::new()));
    assert_eq!(all.len(), 600);
    let jan2 = rows(&read(&t, vec![eq("ds", "2024-01-02")]));
    let expect: BTreeSet<_> = all
        .iter()
        .filter(|r| r.1.as_deref() == Some("2024-01-02"))
        .cloned()
        .collect();
    assert_eq!(jan2, expect);
    let jan2_us = rows(&read(&t, vec![eq("ds", "2024-01-02"), eq("region", "us")]));
    assert_eq!(
        jan2_us,
        expect.iter().filter(|r| r.2 == "us").cloned().collect::<BTreeSet<_>>()
    );
    let later = rows(&read(
        &t,
        vec![Predicate::compare(
            "ds",
            CmpOp::Gt,
            Arc::new(StringArray::from(vec!["2024-01-01"])) as ArrayRef,
        )],
    ));
    assert_eq!(
        later,
        all.iter()
            .filter(|r| r.1.as_deref().is_some_and(|d| d > "2024-01-01"))
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    let nulls = rows(&read(&t, vec![Predicate::is_null("ds")]));
    assert_eq!(nulls.len(), 12);
    assert!(nulls.iter().all(|r| r.1.is_none()));

    // The reopened table (catalog by name) prunes the same way.
    let again = Project::open(&fx.catalog, "sales", common::keys(&fx)).unwrap();
    let t2 = again.table("orders").unwrap();
    assert_eq!(rows(&read(&t2, vec![eq("ds", "2024-01-02")])), expect);
}

fn drop_partition_commits_once_and_keeps_history(backend: Backend) {
    let fx = Fixture::new();
    let Some(p) = project(&fx, backend, "drop_partition_commits_once_and_keeps_history") else {
        return;
    };
    let t = p.create_table_with("orders", schema(), by_ds_region()).unwrap();
    t.append([batch(0, 300, 3, false)]).unwrap();
    t.append([batch(300, 300, 3, false)]).unwrap();
    let before = t.head().unwrap();
    let gone = partition_of(&t, "ds=2024-01-02/region=eu");
    let info = t
        .partitions()
        .unwrap()
        .into_iter()
        .find(|i| i.partition == gone)
        .unwrap();
    assert_eq!(info.files, 2, "one file per append");
    let dropped = t.drop_partition(&gone).unwrap();
    assert_eq!(dropped.version, before.version + 1);
    assert_eq!(dropped.dropped, info);
    assert_eq!(t.history().unwrap().last().unwrap().operation, "drop partition");
    let after = rows(&read(&t, Vec::new()));
    assert_eq!(after.len() as u64, 600 - info.rows);
    assert!(!after
        .iter()
        .any(|r| r.1.as_deref() == Some("2024-01-02") && r.2 == "eu"));
    assert_eq!(t.partitions().unwrap().len(), 5);
    // The version before the drop still reads every row.
    let old = t.scan().version(before.version).build().unwrap().read_all().unwrap();
    assert_eq!(rows(&old).len(), 600);

    // Dropping it again, or a partition that never held rows, is NotRegistered; nothing commits.
    for spec in ["ds=2024-01-02/region=eu", "ds=2031-01-01/region=eu"] {
        match t.drop_partition(&partition_of(&t, spec)) {
            Err(Error::NotRegistered { kind: "partition", .. }) => {}
            other => panic!("{spec}: expected NotRegistered, got {other:?}"),
        }
    }
    assert_eq!(t.head().unwrap().version, before.version + 1);
    // Specs that do not name the table's partition columns, or whose values do not fit them.
    for spec in [
        "ds=2024-01-02",
        "ds=2024-01-02/region=eu/x=1",
        "day=2024-01-02/region=eu",
        "ds=2024-01-02/region=__NULL__",
        "",
    ] {
        assert!(
            matches!(t.parse_partition(spec), Err(Error::InvalidArgument(_))),
            "{spec:?} must be refused"
        );
    }
    // The columns may be given in any order.
    assert_eq!(
        partition_of(&t, "region=eu/ds=2024-01-02"),
        partition_of(&t, "ds=2024-01-02/region=eu")
    );
    // The null partition is named by __NULL__ and can be dropped like any other.
    t.append([batch(600, 100, 3, true)]).unwrap();
    let null_eu = partition_of(&t, "ds=__NULL__/region=eu");
    assert_eq!(null_eu.values()[0], PartitionValue::Null);
    let d = t.drop_partition(&null_eu).unwrap();
    assert!(d.dropped.rows > 0);
    assert!(rows(&read(&t, Vec::new())).iter().all(|r| r.1.is_some() || r.2 == "us"));
    // An unpartitioned table has no partitions to parse or drop.
    let plain = p.create_table("plain", schema()).unwrap();
    assert!(plain.partitions().unwrap().is_empty());
    assert!(matches!(
        plain.parse_partition("ds=2024-01-01"),
        Err(Error::InvalidArgument(_))
    ));
}

fn maintenance_keeps_every_file_in_its_partition(backend: Backend) {
    let fx = Fixture::new();
    let Some(p) = project(&fx, backend, "maintenance_keeps_every_file_in_its_partition") else {
        return;
    };
    let t = p.create_table_with("orders", schema(), by_ds_region()).unwrap();
    for k in 0..4 {
        t.append([batch(k * 150, 150, 3, k == 0)]).unwrap();
    }
    let expect = rows(&read(&t, Vec::new()));
    let parts = shape(&t);
    assert_eq!(t.head().unwrap().files.len(), 4 * 6 + 2);

    // Compaction merges files within a partition, never across.
    t.compact().unwrap().expect("something to compact");
    let head = t.head().unwrap();
    assert_eq!(head.files.len(), parts.len(), "one file per partition after compaction");
    assert_eq!(shape(&t), parts);
    assert_eq!(rows(&read(&t, Vec::new())), expect);
    assert_eq!(
        rows(&read(&t, vec![eq("ds", "2024-01-03")])),
        expect
            .iter()
            .filter(|r| r.1.as_deref() == Some("2024-01-03"))
            .cloned()
            .collect::<BTreeSet<_>>()
    );

    // Re-encryption and rewrap rewrite or rename files; each keeps its partition.
    let cmk = p.settings().cmk.clone().unwrap();
    fx.kms.rotate(&cmk).unwrap();
    t.rewrap(&|_, _, _| {}).unwrap();
    t.reencrypt(&|_, _, _| {}).unwrap();
    assert_eq!(shape(&t), parts);
    assert_eq!(rows(&read(&t, Vec::new())), expect);
    // A settings migration (to AES-CTR) rewrites every file; each keeps its partition.
    let p = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Aes256Ctr, KeyChoice::ProjectDefault),
            &|_, _, _| {},
        )
        .unwrap();
    let t = p.table("orders").unwrap();
    assert_eq!(t.head().unwrap().algorithm, Algorithm::Aes256Ctr);
    assert_eq!(shape(&t), parts);
    assert_eq!(rows(&read(&t, Vec::new())), expect);

    // Overwrite replaces every partition with the new rows' partitions.
    t.overwrite([batch(0, 40, 2, false)]).unwrap();
    assert_eq!(t.partitions().unwrap().len(), 4);
    assert_eq!(rows(&read(&t, Vec::new())).len(), 40);

    // Vacuum keeps what is live.
    p.vacuum(Duration::ZERO).unwrap();
    assert_eq!(rows(&read(&t, vec![eq("region", "eu")])).len(), 20);
}

crate::backend_tests!(
    writes_split_by_partition_and_scans_prune,
    drop_partition_commits_once_and_keeps_history,
    maintenance_keeps_every_file_in_its_partition,
);

/// The proof by counting: on a table with 30 partitions, a scan of one opens only that
/// partition's data files (every GET an instrumented store served is listed by object).
#[test]
fn a_scan_of_one_of_30_partitions_opens_only_its_files() {
    let fx = Fixture::new();
    let counted = Instrumented::new(Arc::new(object_store::memory::InMemory::new()), Duration::ZERO);
    colvault::storage::register_store("counted://partitions", Arc::new(counted.clone()));
    let p = Project::create(
        &fx.catalog,
        "counted://partitions/p",
        "sales",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        common::keys(&fx),
    )
    .unwrap();
    let t = p
        .create_table_with("events", schema(), TableOptions::new().partition_by(["ds"]))
        .unwrap();
    t.append([batch(0, 3000, 30, false)]).unwrap();
    t.append([batch(3000, 3000, 30, false)]).unwrap();
    let head = t.head().unwrap();
    assert_eq!(t.partitions().unwrap().len(), 30);
    assert_eq!(head.files.len(), 60);
    let wanted = partition_of(&t, "ds=2024-01-17");
    let wanted_files: BTreeSet<&str> = head
        .files
        .iter()
        .filter(|f| f.partition == wanted.values())
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(wanted_files.len(), 2);

    let data_read = |filters: Vec<Predicate>| -> (usize, BTreeSet<String>) {
        counted.reset();
        let n = read(&t, filters).iter().map(|b| b.num_rows()).sum();
        let files = counted
            .objects_read()
            .into_iter()
            .filter_map(|(path, _)| path.split("/data/").nth(1).map(str::to_string))
            .collect();
        (n, files)
    };
    let (n, files) = data_read(vec![eq("ds", "2024-01-17")]);
    assert_eq!(n, 200);
    assert_eq!(
        files,
        wanted_files.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        "only the partition's files are read"
    );
    // The counter sees every file when nothing prunes (so it can fail).
    let (n, files) = data_read(Vec::new());
    assert_eq!(n, 6000);
    assert_eq!(files.len(), 60);
    // A filter on a non-partition column prunes no partition.
    let (_, files) = data_read(vec![Predicate::compare(
        "id",
        CmpOp::Lt,
        Arc::new(Int64Array::from(vec![10])) as ArrayRef,
    )]);
    assert_eq!(files.len(), 60);
    // A day that has no partition opens no data file at all.
    let (n, files) = data_read(vec![eq("ds", "2025-06-01")]);
    assert_eq!((n, files.len()), (0, 0));
}

#[test]
fn invalid_partition_columns_are_refused_and_nothing_is_created() {
    let fx = Fixture::new();
    let p = project(&fx, Backend::Local, "invalid").unwrap();
    let nested = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "addr",
            DataType::Struct(Fields::from(vec![Field::new("zip", DataType::Utf8, true)])),
            true,
        ),
    ]));
    let hr = fx.kms.create_key(colvault::kms::CreateKeyRequest::byok()).unwrap().id;
    fx.kms.grant(&hr, p.principal()).unwrap();
    let many: Vec<String> = (0..=MAX_PARTITION_COLUMNS).map(|i| format!("c{i}")).collect();
    let wide = Arc::new(Schema::new(
        many.iter()
            .map(|c| Field::new(c, DataType::Int32, false))
            .chain([Field::new("v", DataType::Int32, false)])
            .collect::<Vec<_>>(),
    ));
    let cases: Vec<(&str, SchemaRef, TableOptions)> = vec![
        ("missing", schema(), TableOptions::new().partition_by(["day"])),
        ("float", schema(), TableOptions::new().partition_by(["amount"])),
        ("twice", schema(), TableOptions::new().partition_by(["ds", "ds"])),
        ("nested", nested.clone(), TableOptions::new().partition_by(["addr.zip"])),
        ("struct", nested, TableOptions::new().partition_by(["addr"])),
        (
            "all",
            schema(),
            TableOptions::new().partition_by(["id", "ds", "region"]),
        ),
        (
            "keyed",
            schema(),
            TableOptions::new()
                .partition_by(["region"])
                .column_key("region", hr.clone()),
        ),
        ("many", wide, TableOptions::new().partition_by(many.clone())),
    ];
    for (what, s, opts) in cases {
        let only_partitions = what == "all";
        let s = if only_partitions {
            Arc::new(Schema::new(schema().fields()[..3].to_vec()))
        } else {
            s
        };
        match p.create_table_with("t", s.clone(), opts.clone()) {
            Err(Error::InvalidArgument(msg)) => eprintln!("{what}: {msg}"),
            other => panic!(
                "{what}: expected InvalidArgument, got {:?}",
                other.map(|t| t.name().to_string())
            ),
        }
        match p.create_table_from_with("t", s.clone(), opts, []) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!(
                "{what}: expected InvalidArgument, got {:?}",
                other.map(|t| t.0.name().to_string())
            ),
        }
    }
    assert!(p.list_tables().unwrap().is_empty());
    assert!(
        !p.tables_dir().exists() || std::fs::read_dir(p.tables_dir()).unwrap().next().is_none(),
        "nothing was written to storage"
    );

    // Date, integer and boolean columns partition as well as strings.
    let typed = Arc::new(Schema::new(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let b = RecordBatch::try_new(
        typed.clone(),
        vec![
            Arc::new(Date32Array::from(vec![19_000, 19_000, 19_001])),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
        ],
    )
    .unwrap();
    let (t, _) = p
        .create_table_from_with("typed", typed, TableOptions::new().partition_by(["day"]), [b])
        .unwrap();
    let parts = t.partitions().unwrap();
    assert_eq!(
        parts
            .iter()
            .map(|i| (i.partition.to_string(), i.rows))
            .collect::<Vec<_>>(),
        [("day=2022-01-08".to_string(), 2), ("day=2022-01-09".to_string(), 1)]
    );
}

/// A writer holding the project's key seals a manifest that drops the table's partitioning (and
/// swaps the catalog's head to it): readers learn the partition columns from the catalog, not
/// the manifest, so every read of that version is refused as an integrity failure.
#[test]
fn the_catalog_anchors_the_partition_columns() {
    let fx = Fixture::new();
    let p = project(&fx, Backend::Local, "anchor").unwrap();
    let t = p.create_table_with("orders", schema(), by_ds_region()).unwrap();
    t.append([batch(0, 60, 3, false)]).unwrap();
    common::insider::commit(&p, &t, |next| {
        next.partition_by.clear();
        for f in &mut next.files {
            f.partition.clear();
        }
    });
    match t.scan().build() {
        Err(Error::Integrity { what }) => {
            assert!(what.contains("partition columns"), "{what}")
        }
        other => panic!("expected Integrity, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(t.partitions(), Err(Error::Integrity { .. })));
    assert!(matches!(
        t.append([batch(60, 1, 3, false)]),
        Err(Error::Integrity { .. })
    ));
}
