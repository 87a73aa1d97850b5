//! Column keys on tables: a table keeps `salary` under an HR key while the rest uses the project's
//! key. The catalog records the column keys (the trust anchor), every manifest records them too, and
//! appends, compaction, rewrap, re-encryption and migration keep the column under its key. A writer
//! who holds the project's key but not the column's cannot move the column out from under it.

#[path = "common/cli_env.rs"]
mod cli_env;
mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use colvault::catalog::ColumnKey;
use colvault::format::envelope::KeyRole;
use colvault::kms::{CreateKeyRequest, DataKeyEnvelope, KeyId, KmsAdmin};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::table::{FileRef, Table, TableOptions, TableWriteOptions};
use colvault::{Algorithm, ColumnKeyProblem, Error, FileWriter, WriterOptions};
use common::Fixture;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("salary", DataType::Float64, true),
    ]))
}

fn batch(start: i64, n: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("person {i}")))),
            Arc::new(Float64Array::from_iter_values(ids.iter().map(|i| 50_000.0 + *i as f64))),
        ],
    )
    .unwrap()
}

/// An encrypted project and an HR key (bring your own) granted to it.
fn setup(fx: &Fixture) -> (Project, KeyId) {
    let p = Project::create(
        &fx.catalog,
        fx.dir.path().join("proj"),
        "staffing",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        common::keys(fx),
    )
    .unwrap();
    let hr = byok(fx);
    fx.kms.grant(&hr, p.principal()).unwrap();
    (p, hr)
}

fn byok(fx: &Fixture) -> KeyId {
    fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id
}

fn cmk(p: &Project) -> KeyId {
    p.settings().cmk.clone().unwrap()
}

fn salary_under(hr: &KeyId) -> TableOptions {
    TableOptions::new().column_key("salary", hr.clone())
}

fn read(t: &Table, columns: &[&str]) -> Result<Vec<RecordBatch>, Error> {
    t.scan().columns(columns.iter().copied()).build()?.read_all()
}

fn rows(t: &Table, columns: &[&str]) -> Result<usize, Error> {
    Ok(read(t, columns)?.iter().map(|b| b.num_rows()).sum())
}

fn all(t: &Table) -> RecordBatch {
    let got = t.scan().build().unwrap().read_all().unwrap();
    arrow::compute::concat_batches(&t.head().unwrap().schema, &got).unwrap()
}

/// The keys in a data file's envelope: (role, CMK, CMK version).
fn envelope_keys(t: &Table, f: &FileRef) -> Vec<(KeyRole, String, u32)> {
    let bytes = std::fs::read(t.dir().join("data").join(&f.name)).unwrap();
    let (info, _) = colvault::read::read_envelope(&bytes).unwrap();
    info.envelope
        .keys
        .iter()
        .map(|k| {
            let env = DataKeyEnvelope::from_bytes(&k.wrapped).unwrap();
            (k.role, env.key_id().to_string(), env.key_version())
        })
        .collect()
}

/// Every live file keeps field `field` under `column_cmk` and everything else under `file_cmk`: in
/// the manifest's key ids and in the file's own envelope.
fn assert_column_under(t: &Table, field: u32, file_cmk: &KeyId, column_cmk: &KeyId) {
    let head = t.head().unwrap();
    assert!(!head.files.is_empty());
    for f in &head.files {
        assert_eq!(f.key_ids, vec![file_cmk.clone(), column_cmk.clone()], "{}", f.name);
        let keys: Vec<(KeyRole, String)> = envelope_keys(t, f).into_iter().map(|(r, k, _)| (r, k)).collect();
        assert_eq!(
            keys,
            vec![
                (KeyRole::File, file_cmk.to_string()),
                (KeyRole::Column(field), column_cmk.to_string())
            ],
            "{}",
            f.name
        );
    }
}

/// With the column's key disabled (and the KEK cache dropped), the other columns read and the
/// column does not, with an error naming it; enabled again, everything reads.
fn assert_column_apart(fx: &Fixture, t: &Table, column: &str, others: &[&str], key: &KeyId) {
    let n = rows(t, others).unwrap();
    fx.kms.disable(key).unwrap();
    fx.cache.invalidate();
    assert_eq!(rows(t, others).unwrap(), n, "the other columns still read");
    for cols in [vec![column], vec![]] {
        let err = if cols.is_empty() {
            t.scan().build().unwrap().read_all().unwrap_err()
        } else {
            read(t, &cols).unwrap_err()
        };
        match &err {
            Error::ColumnKeyUnavailable { column: c, source } => {
                assert_eq!(c, column);
                assert!(matches!(**source, Error::KeyDisabled { .. }), "{source}");
            }
            other => panic!("expected ColumnKeyUnavailable for {column}, got {other}"),
        }
        assert!(err.to_string().contains(column), "{err}");
    }
    fx.kms.enable(key).unwrap();
    assert_eq!(rows(t, &[column]).unwrap(), n);
}

#[test]
fn the_catalog_and_every_manifest_record_the_column_keys() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let t = p.create_table_with("staff", schema(), salary_under(&hr)).unwrap();
    let expected = vec![ColumnKey {
        column: "salary".into(),
        cmk: hr.clone(),
    }];
    assert_eq!(t.column_keys(), expected.as_slice());
    let rec = fx.catalog.table(p.project_id(), "staff").unwrap().unwrap();
    assert_eq!(rec.column_keys, expected, "the catalog anchors them");
    assert_eq!(
        t.head().unwrap().column_keys,
        expected,
        "the sealed manifest records them"
    );
    t.append([batch(0, 100)]).unwrap();
    t.append([batch(100, 50)]).unwrap();
    assert_column_under(&t, 2, &cmk(&p), &hr);

    // A reader that opens the project by name gets the column keys from the catalog.
    let reopened = Project::open(&fx.catalog, "staffing", common::keys(&fx)).unwrap();
    let t2 = reopened.table("staff").unwrap();
    assert_eq!(t2.column_keys(), expected.as_slice());
    assert_eq!(all(&t2).num_rows(), 150);
    assert_column_apart(&fx, &t2, "salary", &["id", "name"], &hr);

    // Tables without column keys are unchanged: no column keys anywhere.
    let plain = p.create_table("plain", schema()).unwrap();
    plain.append([batch(0, 10)]).unwrap();
    assert!(plain.column_keys().is_empty());
    assert!(plain.head().unwrap().column_keys.is_empty());
    assert_eq!(plain.head().unwrap().files[0].key_ids, vec![cmk(&p)]);
}

#[test]
fn a_byok_column_key_works_only_after_its_owner_grants_it() {
    let fx = Fixture::new();
    let (p, _) = setup(&fx);
    let hr2 = byok(&fx);
    let err = p.create_table_with("staff", schema(), salary_under(&hr2)).unwrap_err();
    match &err {
        Error::AccessDenied { principal, key } => {
            assert_eq!(key, hr2.as_str());
            assert!(
                principal.contains(p.project_id()) && principal.contains("salary"),
                "{principal}"
            );
        }
        other => panic!("expected AccessDenied, got {other}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("colvault kms grant {hr2} {}", p.project_id())),
        "{err}"
    );
    assert!(p.list_tables().unwrap().is_empty(), "nothing was created");
    assert_eq!(std::fs::read_dir(p.dir().join("tables")).unwrap().count(), 0);

    fx.kms.grant(&hr2, p.principal()).unwrap();
    let t = p.create_table_with("staff", schema(), salary_under(&hr2)).unwrap();
    t.append([batch(0, 10)]).unwrap();
    assert_column_under(&t, 2, &cmk(&p), &hr2);

    // A revoked grant: appends fail, the other columns still read, the column does not.
    fx.kms.revoke(&hr2, p.principal()).unwrap();
    fx.cache.invalidate();
    assert!(matches!(t.append([batch(10, 1)]), Err(Error::AccessDenied { .. })));
    assert_eq!(rows(&t, &["id", "name"]).unwrap(), 10);
    match read(&t, &["salary"]).unwrap_err() {
        Error::AccessDenied { principal, .. } => assert!(principal.contains("salary"), "{principal}"),
        other => panic!("expected AccessDenied, got {other}"),
    }
}

#[test]
fn misuse_is_refused_with_typed_errors_and_nothing_is_created() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let problem = |opts: TableOptions, schema: SchemaRef| match p.create_table_with("t", schema, opts) {
        Err(Error::InvalidColumnKey { column, problem }) => (column, problem),
        Err(other) => panic!("expected InvalidColumnKey, got {other}"),
        Ok(_) => panic!("expected InvalidColumnKey, the table was created"),
    };
    assert_eq!(
        problem(TableOptions::new().column_key("wage", hr.clone()), schema()),
        ("wage".into(), ColumnKeyProblem::UnknownColumn)
    );
    assert_eq!(
        problem(salary_under(&hr).column_key("salary", byok(&fx)), schema()),
        ("salary".into(), ColumnKeyProblem::Duplicate)
    );
    assert_eq!(
        problem(TableOptions::new().column_key("salary", cmk(&p)), schema()),
        ("salary".into(), ColumnKeyProblem::ProjectKey)
    );
    assert_eq!(
        problem(
            TableOptions::new().column_key("address.zip", hr.clone()),
            nested_schema()
        ),
        (
            "address.zip".into(),
            ColumnKeyProblem::NestedField {
                top_level: "address".into()
            }
        )
    );
    assert!(p.list_tables().unwrap().is_empty());

    let plain = Project::create(
        &fx.catalog,
        fx.dir.path().join("open"),
        "openproj",
        ProjectSettings::plaintext(),
        common::keys(&fx),
    )
    .unwrap();
    match plain.create_table_with("t", schema(), salary_under(&hr)) {
        Err(Error::InvalidColumnKey { problem, .. }) => assert_eq!(problem, ColumnKeyProblem::ProjectNotEncrypted),
        other => panic!(
            "expected ProjectNotEncrypted, got {:?}",
            other.map(|t| t.name().to_string())
        ),
    }
    assert!(plain.list_tables().unwrap().is_empty());
}

fn nested_schema() -> SchemaRef {
    let address = Fields::from(vec![
        Field::new("city", DataType::Utf8, true),
        Field::new("zip", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("address", DataType::Struct(address), true),
    ]))
}

#[test]
fn a_key_on_a_nested_field_covers_all_of_its_leaves() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let s = nested_schema();
    let t = p
        .create_table_with(
            "people",
            s.clone(),
            TableOptions::new().column_key("address", hr.clone()),
        )
        .unwrap();
    let DataType::Struct(fields) = s.field(1).data_type().clone() else {
        unreachable!()
    };
    let address = StructArray::new(
        fields,
        vec![
            Arc::new(StringArray::from(vec!["Oslo", "Lima"])) as ArrayRef,
            Arc::new(StringArray::from(vec!["0150", "15001"])) as ArrayRef,
        ],
        None,
    );
    let b = RecordBatch::try_new(s, vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(address)]).unwrap();
    t.append([b.clone()]).unwrap();
    assert_eq!(all(&t), b);
    assert_column_under(&t, 1, &cmk(&p), &hr);
    // Both leaves (city, zip) are under the HR key: neither reads without it.
    assert_column_apart(&fx, &t, "address", &["id"], &hr);
    let bytes = std::fs::read(t.dir().join("data").join(&t.head().unwrap().files[0].name)).unwrap();
    for plain in [&b"Oslo"[..], b"15001"] {
        assert!(!bytes.windows(plain.len()).any(|w| w == plain));
    }
}

#[test]
fn with_the_column_key_disabled_only_the_column_is_unreadable() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let t = p.create_table_with("staff", schema(), salary_under(&hr)).unwrap();
    t.append([batch(0, 100)]).unwrap();
    fx.kms.disable(&hr).unwrap();
    fx.cache.invalidate();
    assert_eq!(rows(&t, &["id", "name"]).unwrap(), 100);
    let err = read(&t, &["id", "salary"]).unwrap_err();
    assert!(
        matches!(&err, Error::ColumnKeyUnavailable { column, .. } if column == "salary"),
        "{err}"
    );
    // Writing needs the column's key too, and says which column.
    match t.append([batch(100, 1)]).unwrap_err() {
        Error::ColumnKeyUnavailable { column, source } => {
            assert_eq!(column, "salary");
            assert!(matches!(*source, Error::KeyDisabled { .. }));
        }
        other => panic!("expected ColumnKeyUnavailable, got {other}"),
    }
    fx.kms.enable(&hr).unwrap();
    t.append([batch(100, 1)]).unwrap();
    assert_eq!(rows(&t, &["salary"]).unwrap(), 101);
}

#[test]
fn appends_and_compaction_keep_the_column_under_its_key() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let t = p.create_table_with("staff", schema(), salary_under(&hr)).unwrap();
    for i in 0..4 {
        t.append([batch(i * 10, 10)]).unwrap();
    }
    assert_eq!(t.head().unwrap().files.len(), 4);
    let before = all(&t);
    let t = t.with_write_options(TableWriteOptions {
        file_rows: 1000,
        ..TableWriteOptions::default()
    });
    assert!(t.compact().unwrap().is_some());
    assert_eq!(t.head().unwrap().files.len(), 1);
    assert_eq!(all(&t), before);
    assert_column_under(&t, 2, &cmk(&p), &hr);
    assert_column_apart(&fx, &t, "salary", &["id", "name"], &hr);
}

#[test]
fn rewrap_moves_both_keys_to_their_current_versions_and_keeps_the_column_apart() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let t = p.create_table_with("staff", schema(), salary_under(&hr)).unwrap();
    t.append([batch(0, 100)]).unwrap();
    let before = all(&t);
    fx.kms.rotate(&hr).unwrap();
    fx.kms.rotate(&cmk(&p)).unwrap();
    fx.cache.invalidate();
    t.rewrap(&|_, _, _| {}).unwrap();
    assert_eq!(all(&t), before);
    assert_column_under(&t, 2, &cmk(&p), &hr);
    let head = t.head().unwrap();
    let versions: Vec<u32> = envelope_keys(&t, &head.files[0])
        .into_iter()
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(
        versions,
        vec![2, 2],
        "the file key and the column key, each at its CMK's new version"
    );
    assert_column_apart(&fx, &t, "salary", &["id", "name"], &hr);
}

#[test]
fn reencryption_gives_fresh_keys_and_keeps_the_column_under_its_key() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let t = p.create_table_with("staff", schema(), salary_under(&hr)).unwrap();
    t.append([batch(0, 100)]).unwrap();
    let before = all(&t);
    let old: Vec<_> = t.head().unwrap().files.iter().map(|f| f.file_id).collect();
    t.reencrypt(&|_, _, _| {}).unwrap();
    let new: Vec<_> = t.head().unwrap().files.iter().map(|f| f.file_id).collect();
    assert!(old.iter().all(|id| !new.contains(id)));
    assert_eq!(all(&t), before);
    assert_column_under(&t, 2, &cmk(&p), &hr);
    assert_column_apart(&fx, &t, "salary", &["id", "name"], &hr);
}

#[test]
fn migration_keeps_the_column_under_its_key_and_never_drops_it() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let t = p.create_table_with("staff", schema(), salary_under(&hr)).unwrap();
    t.append([batch(0, 100)]).unwrap();
    let before = all(&t);
    let generation = p.settings().generation;

    // To no encryption, or to the column's own key as the project key: refused, nothing changes.
    match p.migrate(ProjectSettings::plaintext(), &|_, _, _| {}) {
        Err(Error::InvalidColumnKey { column, problem }) => {
            assert_eq!(column, "staff.salary");
            assert_eq!(problem, ColumnKeyProblem::ProjectNotEncrypted);
        }
        other => panic!("expected InvalidColumnKey, got {:?}", other.map(|_| ())),
    }
    let to_hr = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(hr.clone()));
    assert!(matches!(
        p.migrate(to_hr, &|_, _, _| {}),
        Err(Error::InvalidColumnKey {
            problem: ColumnKeyProblem::ProjectKey,
            ..
        })
    ));
    let p = Project::open(&fx.catalog, "staffing", common::keys(&fx)).unwrap();
    assert_eq!(p.settings().generation, generation);

    // To another algorithm under another key: every file rewritten, salary still under HR.
    let k2 = byok(&fx);
    fx.kms.grant(&k2, p.principal()).unwrap();
    let p = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Aes256Ctr, KeyChoice::Byok(k2.clone())),
            &|_, _, _| {},
        )
        .unwrap();
    let t = p.table("staff").unwrap();
    assert_eq!(t.head().unwrap().algorithm, Algorithm::Aes256Ctr);
    assert_eq!(all(&t), before);
    assert_column_under(&t, 2, &k2, &hr);
    assert_column_apart(&fx, &t, "salary", &["id", "name"], &hr);
}

#[test]
fn a_registered_project_keeps_its_tables_column_keys() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let t = p.create_table_with("staff", schema(), salary_under(&hr)).unwrap();
    t.append([batch(0, 10)]).unwrap();
    // Another catalog adopts the directory (trust on first use): the column keys come from the
    // verified head manifest, are recorded in the new catalog, and every file is checked against them.
    let other = fx.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let catalog2 = common::catalog_in(&other);
    let (adopted, report) = Project::register(&catalog2, p.dir(), common::keys(&fx)).unwrap();
    let name = &report.tables[0].0;
    let rec = catalog2.table(adopted.project_id(), name).unwrap().unwrap();
    assert_eq!(rec.column_keys, t.column_keys());
    let t2 = adopted.table(name).unwrap();
    assert_eq!(all(&t2), all(&t));
    assert_column_apart(&fx, &t2, "salary", &["id", "name"], &hr);

    // A directory whose newest manifest moved salary back under the project's key is adopted with
    // those column keys only if every file agrees: one that keeps salary under its file key while
    // the manifest says otherwise is refused at registration.
    insider_commit(
        &p,
        &t,
        WriterOptions::encrypted(Algorithm::Aes256Gcm, p.access(t.table_id()), cmk(&p)),
        vec![cmk(&p), hr.clone()],
        None,
    );
    let third = fx.dir.path().join("third");
    std::fs::create_dir(&third).unwrap();
    mismatch(Project::register(
        &common::catalog_in(&third),
        p.dir(),
        common::keys(&fx),
    ));
}

/// A writer who holds the project's key but not the column's: writes a data file with `opts` and
/// commits it (listed with `key_ids`, and the manifest's column keys replaced by `column_keys` when
/// given) as the next version, as the library would, swapping the catalog's head.
fn insider_commit(
    p: &Project,
    t: &Table,
    opts: colvault::WriterOptionsBuilder,
    key_ids: Vec<KeyId>,
    column_keys: Option<Vec<ColumnKey>>,
) {
    let name = format!("{}.cvlt", colvault::project::new_project_id().unwrap());
    let mut buf = Vec::new();
    let mut w = FileWriter::try_new(&mut buf, schema(), opts.build()).unwrap();
    w.write(&batch(1000, 5)).unwrap();
    let meta = w.close().unwrap();
    std::fs::write(t.dir().join("data").join(&name), &buf).unwrap();
    common::insider::commit(p, t, |next| {
        next.files.push(FileRef {
            file_id: meta.file_id,
            name,
            len: meta.file_len,
            rows: meta.num_rows,
            footer_digest: meta.footer_digest,
            key_ids,
            key_version: meta.key_version,
            partition: Vec::new(),
        });
        if let Some(k) = column_keys {
            next.column_keys = k;
        }
    });
}

/// The other columns of a table holding one forged file: they read (key access refuses only the
/// misplaced key), or, once every opened file's envelope is checked in the scan path, the whole file
/// is refused.
fn others_read_or_file_refused(t: &Table) {
    match rows(t, &["id", "name"]) {
        Ok(n) => assert_eq!(n, 15),
        Err(e) => {
            mismatch(Err::<(), _>(e));
        }
    }
}

fn mismatch(r: Result<impl Sized, Error>) -> String {
    match r {
        Err(Error::ColumnKeyMismatch { detail, .. }) => detail,
        Err(other) => panic!("expected ColumnKeyMismatch, got {other}"),
        Ok(_) => panic!("expected ColumnKeyMismatch, it succeeded"),
    }
}

#[test]
fn a_writer_without_the_column_key_cannot_move_the_column() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let project_key = cmk(&p);
    let evil = byok(&fx);
    fx.kms.grant(&evil, p.principal()).unwrap();
    let mut n = 0;
    let mut table = || {
        n += 1;
        let t = p
            .create_table_with(&format!("staff{n}"), schema(), salary_under(&hr))
            .unwrap();
        t.append([batch(0, 10)]).unwrap();
        t
    };
    let writer =
        |t: &Table| WriterOptions::encrypted(Algorithm::Aes256Gcm, p.access(t.table_id()), project_key.clone());
    let honest_ids = vec![project_key.clone(), hr.clone()];

    // 1. Salary back under the project's key, listed as such: the manifest is refused.
    let t = table();
    insider_commit(&p, &t, writer(&t), vec![project_key.clone()], None);
    assert!(mismatch(t.head()).contains("column keys []"));

    // 2. The manifest keeps the column keys but says the table has none (a format-1 manifest), or
    //    names another key for salary: refused, whatever the files.
    for keys in [
        vec![],
        vec![ColumnKey {
            column: "salary".into(),
            cmk: evil.clone(),
        }],
    ] {
        let t = table();
        insider_commit(
            &p,
            &t,
            writer(&t).column_key("salary", hr.clone()),
            honest_ids.clone(),
            Some(keys),
        );
        mismatch(t.head());
        mismatch(t.scan().build());
    }

    // 3. Salary under a key of the writer's choosing, listed honestly: the manifest is refused;
    //    listed as under the HR key: the column does not read, the other columns do, and
    //    maintenance refuses the file.
    let t = table();
    insider_commit(
        &p,
        &t,
        writer(&t).column_key("salary", evil.clone()),
        vec![project_key.clone(), evil.clone()],
        None,
    );
    mismatch(t.head());
    let t = table();
    insider_commit(
        &p,
        &t,
        writer(&t).column_key("salary", evil.clone()),
        honest_ids.clone(),
        None,
    );
    others_read_or_file_refused(&t);
    assert!(matches!(
        read(&t, &["salary"]),
        Err(Error::KeyNotAllowed { .. } | Error::ColumnKeyMismatch { .. })
    ));
    assert!(mismatch(t.rewrap(&|_, _, _| {})).contains("under key"));

    // 4. Salary with a key of its own, but wrapped under the project's key: it does not read.
    let t = table();
    insider_commit(
        &p,
        &t,
        writer(&t).column_key("salary", project_key.clone()),
        honest_ids.clone(),
        None,
    );
    others_read_or_file_refused(&t);
    assert!(mismatch(read(&t, &["salary"])).contains("salary"));
    mismatch(t.reencrypt(&|_, _, _| {}));

    // 5. Another column under the HR key too (so HR could read names): listed, the manifest is
    //    refused; not listed, that column does not read.
    let t = table();
    let both = || {
        writer(&t)
            .column_key("name", hr.clone())
            .column_key("salary", hr.clone())
    };
    insider_commit(&p, &t, both(), vec![project_key.clone(), hr.clone(), hr.clone()], None);
    mismatch(t.head());
    let t = table();
    let both = || {
        writer(&t)
            .column_key("name", hr.clone())
            .column_key("salary", hr.clone())
    };
    insider_commit(&p, &t, both(), honest_ids.clone(), None);
    mismatch(read(&t, &["name"]));

    // 6. Salary under the file key, listed as under the HR key: compaction, rewrap and
    //    re-encryption refuse the file (a scan needs the check in `open_file_from`, see
    //    `a_scan_refuses_a_file_that_keeps_the_column_under_its_file_key`).
    let t = table();
    insider_commit(&p, &t, writer(&t), honest_ids.clone(), None);
    assert!(mismatch(t.rewrap(&|_, _, _| {})).contains("under its file key"));
    mismatch(t.reencrypt(&|_, _, _| {}));
    mismatch(
        t.clone()
            .with_write_options(TableWriteOptions {
                file_rows: 1000,
                ..TableWriteOptions::default()
            })
            .compact(),
    );
}

/// Needs `Table::check_file_keys` called in `Table::open_file_from` (src/table/scan.rs, owned by
/// another change): see the column keys report.
#[test]
fn a_scan_refuses_a_file_that_keeps_the_column_under_its_file_key() {
    let fx = Fixture::new();
    let (p, hr) = setup(&fx);
    let t = p.create_table_with("staff", schema(), salary_under(&hr)).unwrap();
    t.append([batch(0, 10)]).unwrap();
    let opts = WriterOptions::encrypted(Algorithm::Aes256Gcm, p.access(t.table_id()), cmk(&p));
    insider_commit(&p, &t, opts, vec![cmk(&p), hr.clone()], None);
    assert!(mismatch(read(&t, &["salary"])).contains("under its file key"));
}

#[test]
fn cli_create_import_schema_and_catalog_show_the_column_keys() {
    let env = cli_env::Env::new();
    let hr = env.json(&["kms", "create-key", "--alias", "hr", "--json"])["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.run(&["project", "create", "./hrdept", "--encrypt"]);
    env.run(&["project", "create", "./open"]);
    let salary = format!("salary={hr}");
    let schema = "id:int64!,name:utf8,salary:float64";

    // Not yet granted: a key error; granted: created, and shown.
    let err = env.fails(
        &[
            "table",
            "create",
            "./hrdept",
            "staff",
            "--schema",
            schema,
            "--column-key",
            &salary,
        ],
        3,
    );
    assert!(err.contains("colvault kms grant"), "{err}");
    env.run(&["kms", "grant", &hr, "./hrdept"]);
    let out = env.run(&[
        "table",
        "create",
        "./hrdept",
        "staff",
        "--schema",
        schema,
        "--column-key",
        &salary,
    ]);
    assert!(out.contains(&format!("under its own key {hr}")), "{out}");
    let s = env.json(&["table", "schema", "./hrdept", "staff", "--json"]);
    assert_eq!(s["fields"][2]["key_id"], hr.as_str());
    assert!(s["fields"][0]["key_id"].is_null());
    let show = env.json(&["catalog", "show", "./hrdept", "--json"]);
    assert_eq!(show["tables"][0]["column_keys"][0]["column"], "salary");
    assert_eq!(show["tables"][0]["column_keys"][0]["key_id"], hr.as_str());

    // Misuse: usage errors naming the problem.
    let err = env.fails(
        &[
            "table",
            "create",
            "./hrdept",
            "t2",
            "--schema",
            schema,
            "--column-key",
            &format!("wage={hr}"),
        ],
        2,
    );
    assert!(err.contains("wage"), "{err}");
    env.fails(
        &[
            "table",
            "create",
            "./hrdept",
            "t2",
            "--schema",
            schema,
            "--column-key",
            "salary",
        ],
        2,
    );
    let err = env.fails(
        &[
            "table",
            "create",
            "./open",
            "t2",
            "--schema",
            schema,
            "--column-key",
            &salary,
        ],
        2,
    );
    assert!(err.contains("not encrypted"), "{err}");

    // Import creates a table with the column key; appending to it needs no flag, and another key
    // for an existing table is refused.
    std::fs::write(env.path().join("pay.csv"), "id,name,salary\n1,ann,100.5\n2,bo,200.25\n").unwrap();
    env.run(&["table", "import", "./hrdept", "pay", "pay.csv", "--column-key", &salary]);
    env.run(&["table", "import", "./hrdept", "pay", "pay.csv"]);
    let other = env.json(&["kms", "create-key", "--json"])["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.fails(
        &[
            "table",
            "import",
            "./hrdept",
            "pay",
            "pay.csv",
            "--column-key",
            &format!("salary={other}"),
        ],
        2,
    );
    let s = env.json(&["table", "schema", "./hrdept", "pay", "--json"]);
    assert_eq!(s["fields"][2]["key_id"], hr.as_str());

    // The HR key disabled: the other columns export, salary does not (a key error naming it).
    env.run(&["kms", "disable", &hr]);
    let out = env.run(&[
        "table",
        "export",
        "./hrdept",
        "pay",
        "-",
        "--format",
        "csv",
        "--columns",
        "id,name",
    ]);
    assert_eq!(out.lines().count(), 5, "{out}");
    let err = env.fails(&["table", "head", "./hrdept", "pay"], 3);
    assert!(err.contains("salary") && err.contains("disabled"), "{err}");
    env.run(&["kms", "enable", &hr]);
    let out = env.run(&["table", "head", "./hrdept", "pay"]);
    assert!(out.contains("200.25"), "{out}");
}
