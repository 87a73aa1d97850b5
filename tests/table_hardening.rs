//! Issue 15, library side of the command-line items: creation is all or nothing, bad schemas are
//! refused in one place, expiry beyond the head fails, and re-encryption gives every file it counts
//! (a 0-row file too) a fresh data key.

mod common;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use colvault::kms::{KeyState, KmsAdmin};
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::{Algorithm, Error, FileWriter, WriterOptions};
use common::id_batch as batch;
use common::Fixture;

fn keys(fx: &Fixture) -> Keys {
    Keys {
        kms: fx.kms.clone(),
        cache: fx.cache.clone(),
    }
}

fn encrypted(fx: &Fixture, dir: &str) -> Project {
    Project::create(
        &fx.catalog,
        fx.dir.path().join(dir),
        "hardening",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(fx),
    )
    .unwrap()
}

#[test]
fn reencrypt_gives_a_zero_row_file_a_fresh_key() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "proj");
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    t.append([batch(10, 0)]).unwrap();
    let before = t.head().unwrap();
    assert_eq!(before.files.len(), 2);
    assert!(before.files.iter().any(|f| f.rows == 0), "a 0-row file was committed");
    let r = t.reencrypt(&|_, _, _| {}).unwrap();
    let after = t.head().unwrap();
    assert_eq!(r.files, after.files.len());
    for old in &before.files {
        assert!(
            after.files.iter().all(|f| f.file_id != old.file_id),
            "file {} ({} rows) was counted as re-encrypted but kept its id and data key",
            old.file_id,
            old.rows
        );
    }
    assert_eq!(after.rows(), 10);
    let rows: usize = t
        .scan()
        .build()
        .unwrap()
        .read_all()
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 10);
}

#[test]
fn bad_schemas_are_refused_by_tables_and_writers() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "proj");
    let dup = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("a", DataType::Utf8, true),
    ]));
    let empty_name = Arc::new(Schema::new(vec![Field::new("", DataType::Int64, true)]));
    let none = Arc::new(Schema::empty());
    for (what, schema) in [
        ("duplicate", dup.clone()),
        ("empty name", empty_name.clone()),
        ("no columns", none),
    ] {
        let err = p.create_table("t", schema).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{what}: {err}");
        assert!(p.list_tables().unwrap().is_empty(), "{what}");
    }
    for schema in [dup, empty_name] {
        let err = FileWriter::try_new(Vec::new(), schema, WriterOptions::plaintext().build()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    // Adding a column whose name is empty is refused too (the manifest's schema is checked).
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    assert!(t.add_column(Field::new("", DataType::Int64, true)).is_err());
}

#[test]
fn a_failed_first_write_leaves_no_table() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "proj");
    // The second batch does not fit the schema: the write fails after a data file was written.
    let other = arrow::array::RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
        vec![Arc::new(arrow::array::Int64Array::from(vec![1]))],
    )
    .unwrap();
    let err = p
        .create_table_from("t", batch(0, 1).schema(), [batch(0, 5), other])
        .unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch(_)), "{err}");
    assert!(p.list_tables().unwrap().is_empty());
    assert!(
        std::fs::read_dir(p.tables_dir()).unwrap().next().is_none(),
        "something was left behind"
    );
    // Too many columns: refused when the genesis manifest is encoded, nothing left either.
    let wide = Arc::new(Schema::new(
        (0..200_000)
            .map(|i| Field::new(format!("c{i}"), DataType::Int64, true))
            .collect::<Vec<_>>(),
    ));
    assert!(p.create_table("wide", wide).is_err());
    assert!(std::fs::read_dir(p.tables_dir()).unwrap().next().is_none());
    // Success: the table and its first commit appear together.
    let (t, info) = p.create_table_from("t", batch(0, 1).schema(), [batch(0, 5)]).unwrap();
    // The first version holds the data: the catalog registration is the one commit point.
    assert_eq!((info.version, info.rows_added), (1, 5));
    assert_eq!(p.list_tables().unwrap(), ["t"]);
    assert_eq!(t.head().unwrap().rows(), 5);
    assert!(matches!(
        p.create_table("t", batch(0, 1).schema()),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
fn expire_beyond_the_head_fails() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "proj");
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 2)]).unwrap();
    t.append([batch(2, 2)]).unwrap();
    let err = t.expire_snapshots(99).unwrap_err();
    assert!(err.to_string().contains("retained: 1 to 3"), "{err}");
    assert_eq!(t.history().unwrap().len(), 3);
    assert_eq!(t.expire_snapshots(3).unwrap(), 2);
}

#[test]
fn project_create_is_all_or_nothing() {
    let fx = Fixture::new();
    // A non-empty directory is refused.
    let busy = fx.dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("mine.txt"), "x").unwrap();
    let err = Project::create(&fx.catalog, &busy, "busy", ProjectSettings::plaintext(), keys(&fx)).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    // A failed encrypted create leaves no usable default key behind.
    let before = fx.kms.list().unwrap().len();
    let file = fx.dir.path().join("a_file");
    std::fs::write(&file, "x").unwrap();
    let s = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault);
    assert!(Project::create(&fx.catalog, file.join("sub"), "failing", s, keys(&fx)).is_err());
    let keys_now = fx.kms.list().unwrap();
    assert!(
        keys_now.len() == before || keys_now[before..].iter().all(|k| k.state != KeyState::Enabled),
        "{keys_now:?}"
    );
}

#[test]
fn vacuum_removes_a_killed_table_creation() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "proj");
    p.create_table("t", batch(0, 1).schema()).unwrap();
    // What a create killed before its catalog registration leaves: a directory the catalog does
    // not know.
    let staged = p.tables_dir().join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(staged.join("data")).unwrap();
    std::fs::write(staged.join("data").join("x.cvlt"), b"partial").unwrap();
    assert_eq!(p.list_tables().unwrap(), ["t"]);
    // Younger than the grace period: kept (it may be a creation under way).
    p.vacuum(std::time::Duration::from_secs(3600)).unwrap();
    assert!(staged.exists());
    p.vacuum(std::time::Duration::ZERO).unwrap();
    assert!(!staged.exists());
    assert_eq!(p.list_tables().unwrap(), ["t"]);
}
