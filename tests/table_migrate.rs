//! Migration: turning encryption on, changing key and algorithm, turning it off; on every
//! data-plane backend (a local directory, `memory://`, S3 on moto).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use colvault::kms::{CreateKeyRequest, KmsAdmin};
use colvault::project::{KeyChoice, Keys, Project, ProjectSettings};
use colvault::{Algorithm, Error};
use common::stores::{location, Backend};
use common::Fixture;

fn batch(start: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("secret", DataType::Utf8, false),
    ]));
    let ids: Vec<i64> = (start..start + n).collect();
    let s: Vec<String> = ids.iter().map(|i| format!("SECRETVALUE{i:06}")).collect();
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(s))],
    )
    .unwrap()
}

/// Every byte the project holds: on a local directory every file found by walking it (staging and
/// hidden files included), elsewhere every object under its prefix.
fn all_bytes(p: &Project) -> Vec<u8> {
    let mut out = Vec::new();
    match p.storage().local_dir() {
        Some(dir) => {
            for e in walk(&dir) {
                out.extend(std::fs::read(e).unwrap());
            }
        }
        None => {
            for (_, b) in common::stores::snapshot(p.storage()) {
                out.extend_from_slice(&b);
            }
        }
    }
    assert!(!out.is_empty());
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn rows(p: &Project) -> Vec<usize> {
    p.list_tables()
        .unwrap()
        .iter()
        .map(|t| {
            p.table(t)
                .unwrap()
                .scan()
                .build()
                .unwrap()
                .read_all()
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum()
        })
        .collect()
}

fn migrate_on_change_and_off(backend: Backend) {
    let fx = Fixture::new();
    let Some(loc) = location(backend, fx.dir.path(), "migrate_on_change_and_off") else {
        return;
    };
    let keys = Keys {
        kms: fx.kms.clone(),
        cache: fx.cache.clone(),
    };
    let p = Project::create(
        &fx.catalog,
        &loc,
        "migrating",
        ProjectSettings::plaintext(),
        keys.clone(),
    )
    .unwrap();
    for name in ["a", "b"] {
        let t = p.create_table(name, batch(0, 1).schema()).unwrap();
        t.append([batch(0, 100)]).unwrap();
        t.append([batch(100, 50)]).unwrap();
    }
    assert!(
        all_bytes(&p).windows(11).any(|w| w == b"SECRETVALUE"),
        "plaintext to begin with"
    );

    // Turn encryption on.
    let calls = AtomicU64::new(0);
    let p = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
            &|_, _, _| {
                calls.fetch_add(1, Ordering::Relaxed);
            },
        )
        .unwrap();
    assert!(calls.load(Ordering::Relaxed) >= 4, "progress is reported");
    assert_eq!(p.settings().algorithm, Algorithm::Aes256Gcm);
    assert!(p.settings().migrating_from.is_none());
    assert_eq!(rows(&p), vec![150, 150]);
    assert!(
        !all_bytes(&p).windows(11).any(|w| w == b"SECRETVALUE"),
        "nothing stays in plaintext anywhere in the project"
    );
    let t = p.table("a").unwrap();
    let ops: Vec<String> = t.history().unwrap().into_iter().map(|h| h.operation).collect();
    assert_eq!(
        ops,
        ["migrate", "expire snapshots"],
        "snapshots that referenced plaintext files are expired"
    );
    let reopened = Project::open(p.catalog(), p.name(), keys.clone()).unwrap();
    assert_eq!(reopened.settings(), p.settings());

    // Change key (BYOK) and algorithm.
    let byok = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    let target = ProjectSettings::encrypted(Algorithm::Aes256Ctr, KeyChoice::Byok(byok.clone()));
    let err = p.migrate(target.clone(), &|_, _, _| {}).unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err}");
    // The refused migration changed nothing.
    let p = Project::open(p.catalog(), p.name(), keys.clone()).unwrap();
    assert_eq!(p.settings().algorithm, Algorithm::Aes256Gcm);
    assert_eq!(rows(&p), vec![150, 150]);
    fx.kms.grant(&byok, p.principal()).unwrap();
    let p = p.migrate(target, &|_, _, _| {}).unwrap();
    assert_eq!(p.settings().cmk.as_ref(), Some(&byok));
    for f in p.table("b").unwrap().head().unwrap().files {
        assert_eq!(f.key_ids, vec![byok.clone()]);
    }
    assert_eq!(rows(&p), vec![150, 150]);

    // And off again.
    let p = p.migrate(ProjectSettings::plaintext(), &|_, _, _| {}).unwrap();
    assert_eq!(p.settings().algorithm, Algorithm::None);
    assert_eq!(rows(&p), vec![150, 150]);
    let p = Project::open(p.catalog(), p.name(), keys).unwrap();
    assert_eq!(rows(&p), vec![150, 150]);
}

crate::backend_tests!(migrate_on_change_and_off);
