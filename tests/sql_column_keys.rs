//! Column keys through SQL: with the CMK of `salary` disabled, queries that do not touch it work,
//! and `SELECT *` (or any query reading it, a filter included) fails with the column's name.
#![cfg(feature = "datafusion")]

mod common;

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use colvault::kms::{CreateKeyRequest, KmsAdmin};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::sql::SqlSession;
use colvault::table::TableOptions;
use colvault::{Algorithm, Error};
use common::{keys, Fixture};

fn staff(start: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("salary", DataType::Int64, true),
    ]));
    let ids: Vec<i64> = (start..start + n).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("p{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(ids.iter().map(|i| i * 1000).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[test]
fn a_disabled_column_key_fails_only_the_queries_that_read_the_column() {
    let fx = Fixture::new();
    let p = Project::create(
        &fx.catalog,
        fx.dir.path().join("hr"),
        "payroll",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(&fx),
    )
    .unwrap();
    let hr = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    fx.kms.grant(&hr, p.principal()).unwrap();
    let batch = staff(0, 500);
    p.create_table_from_with(
        "staff",
        batch.schema(),
        TableOptions::new().column_key("salary", hr.clone()),
        [batch],
    )
    .unwrap();
    let session = SqlSession::for_project(&p);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let q = |sql: &str| rt.block_on(session.query(sql));

    // Everything reads while the key is enabled.
    assert_eq!(
        count(&q("SELECT sum(salary) FROM staff").unwrap()),
        (0..500i64).sum::<i64>() * 1000
    );
    // INSERT through SQL keeps salary under its key: the new file reads, and goes dark with it.
    q("INSERT INTO staff VALUES (500, 'p500', 500000)").unwrap();

    fx.kms.disable(&hr).unwrap();
    fx.cache.invalidate();
    assert_eq!(count(&q("SELECT count(*) FROM staff").unwrap()), 501);
    assert_eq!(count(&q("SELECT count(name) FROM staff WHERE id >= 250").unwrap()), 251);
    let names = q("SELECT name FROM staff ORDER BY id DESC LIMIT 1").unwrap();
    let names = names[0].column(0).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(names.value(0), "p500");

    for sql in [
        "SELECT * FROM staff",
        "SELECT sum(salary) FROM staff",
        "SELECT id FROM staff WHERE salary > 100",
    ] {
        let err = q(sql).expect_err(sql);
        assert!(err.to_string().contains("salary"), "{sql}: {err}");
        match &err {
            Error::ColumnKeyUnavailable { column, source } => {
                assert_eq!(column, "salary");
                assert!(matches!(**source, Error::KeyDisabled { .. }), "{sql}: {source}");
            }
            other => panic!("{sql}: expected ColumnKeyUnavailable, got {other:?}"),
        }
    }

    fx.kms.enable(&hr).unwrap();
    let all = q("SELECT * FROM staff").unwrap();
    assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), 501);
    assert_eq!(all[0].column(2).null_count(), 0);
}
