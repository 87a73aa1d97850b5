//! Attacks by someone with write access to a project's storage and no key: each is refused with its
//! typed error, because what a reader expects comes from the catalog (the control plane), never
//! from the storage it reads. After a rollback attempt, vacuum deletes nothing.
//!
//! Every test runs on every data-plane backend (a local directory, `memory://`, S3 on moto:
//! `NAME::local`, `NAME::memory`, `NAME::s3`); the attacker works through the project's storage
//! (objects read, replaced, deleted, copied), as one with write access to the bucket would. The
//! same attacks through the command line, and the keystore's own checks, are in
//! `control_plane_attacks.rs`.

mod common;

use std::time::Duration;

use arrow::array::RecordBatch;
use colvault::kms::{CreateKeyRequest, KmsAdmin, Principal};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::table::Table;
use colvault::{Algorithm, Error};
use common::stores::{
    current_settings, flip, inventory, is_gone, location, manifest_object, replace_all, settings_objects, snapshot,
    Backend,
};
use common::{id_batch as batch, keys, Fixture};

fn encrypted(fx: &Fixture, loc: &str, name: &str) -> Project {
    Project::create(
        &fx.catalog,
        loc,
        name,
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(fx),
    )
    .unwrap()
}

/// A fixture and an encrypted project "victim" at a fresh location on `backend`, or `None`
/// (skipped).
fn victim(backend: Backend, test: &str) -> Option<(Fixture, Project)> {
    let fx = Fixture::new();
    let loc = location(backend, fx.dir.path(), test)?;
    let p = encrypted(&fx, &loc, "victim");
    Some((fx, p))
}

fn rows(t: &Table) -> Result<usize, Error> {
    Ok(t.scan().build()?.read_all()?.iter().map(RecordBatch::num_rows).sum())
}

fn plaintext_settings_copied_over_is_a_downgrade(backend: Backend) {
    let Some((fx, victim)) = victim(backend, "plaintext_settings_copied_over") else {
        return;
    };
    let t = victim.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    let plain = Project::create(
        &fx.catalog,
        location(backend, fx.dir.path(), "plaintext_settings_plain").unwrap(),
        "plain",
        ProjectSettings::plaintext(),
        keys(&fx),
    )
    .unwrap();
    let plain_bytes = plain.storage().get(&current_settings(&plain)).unwrap().unwrap();
    victim.storage().put(&current_settings(&victim), plain_bytes).unwrap();
    let err = Project::open(&fx.catalog, "victim", keys(&fx)).unwrap_err();
    assert!(matches!(err, Error::Downgrade { .. }), "{err}");
    // Nothing can be written through a handle opened now; the data still reads once restored.
    assert!(Project::open(&fx.catalog, "victim", keys(&fx)).is_err());
}

fn forged_settings_with_victims_id_and_migration_are_refused(backend: Backend) {
    let Some((fx, victim)) = victim(backend, "forged_settings") else {
        return;
    };
    victim.create_table("t", batch(0, 1).schema()).unwrap();
    // The forger builds, in a catalog of its own, a project with the victim's name and id (so its
    // default key is even granted to the victim's principal), and migrates it: its location then
    // holds a plaintext settings file, one recording a migration (`migrating_from`), and a final
    // encrypted one, each with the victim's name and id and a valid MAC.
    let forger_dir = fx.dir.path().join("forger");
    std::fs::create_dir(&forger_dir).unwrap();
    let forger_catalog = common::catalog_in(&forger_dir);
    let forged = Project::create_with_id(
        &forger_catalog,
        location(backend, &forger_dir, "forged_settings_forger").unwrap(),
        "victim",
        ProjectSettings::plaintext(),
        keys(&fx),
        victim.project_id().to_string(),
    )
    .unwrap();
    let forged = forged
        .migrate(
            ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
            &|_, _, _| {},
        )
        .unwrap();
    let candidates = settings_objects(forged.storage());
    assert_eq!(candidates.len(), 3, "{candidates:?}");
    let (s, target) = (victim.storage(), current_settings(&victim));
    let good = s.get(&target).unwrap().unwrap();
    let mut kinds = Vec::new();
    for forged_file in candidates {
        s.put(&target, forged.storage().get(&forged_file).unwrap().unwrap())
            .unwrap();
        let err = Project::open(&fx.catalog, "victim", keys(&fx)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Downgrade { .. } | Error::Integrity { .. } | Error::SettingsRollback { .. }
            ),
            "{err}"
        );
        kinds.push(format!("{err:?}").split_whitespace().next().unwrap().to_string());
    }
    // The plaintext one is a downgrade; the authenticated encrypted ones are not what the catalog
    // records (their MACs verify: only the catalog's digest refuses them).
    assert!(kinds.iter().any(|k| k.starts_with("Downgrade")), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| k.starts_with("Integrity")).count() >= 2,
        "{kinds:?}"
    );
    s.put(&target, good).unwrap();
    Project::open(&fx.catalog, "victim", keys(&fx)).unwrap();
}

fn older_authentic_settings_are_a_settings_rollback(backend: Backend) {
    let fx = Fixture::new();
    let Some(loc) = location(backend, fx.dir.path(), "older_authentic_settings") else {
        return;
    };
    let p = Project::create(&fx.catalog, &loc, "rolling", ProjectSettings::plaintext(), keys(&fx)).unwrap();
    p.create_table("t", batch(0, 1).schema()).unwrap();
    let s = p.storage().clone();
    let read = |name: &str| s.get(name).unwrap().unwrap();
    let gen0 = read(&current_settings(&p));
    // Encryption on (generation 1), then a key and algorithm change (generation 2).
    let p = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Rc4, KeyChoice::ProjectDefault).allow_legacy_rc4(),
            &|_, _, _| {},
        )
        .unwrap();
    let gen1 = read(&current_settings(&p));
    let byok = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    fx.kms.grant(&byok, p.principal()).unwrap();
    let p = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(byok)),
            &|_, _, _| {},
        )
        .unwrap();
    assert_eq!(p.settings().generation, 2);
    let current = current_settings(&p);
    let good = read(&current);
    // Before the key change (rc4 under the default key, authentic, MAC valid): a rollback.
    s.put(&current, gen1).unwrap();
    let err = Project::open(&fx.catalog, "rolling", keys(&fx)).unwrap_err();
    assert!(
        matches!(err, Error::Downgrade { .. } | Error::SettingsRollback { .. }),
        "{err}"
    );
    // Before the migration (plaintext): a downgrade.
    s.put(&current, gen0).unwrap();
    let err = Project::open(&fx.catalog, "rolling", keys(&fx)).unwrap_err();
    assert!(matches!(err, Error::Downgrade { .. }), "{err}");
    s.put(&current, good).unwrap();
    let p = Project::open(&fx.catalog, "rolling", keys(&fx)).unwrap();
    assert_eq!(p.settings().algorithm, Algorithm::Aes256Gcm);
    // Vacuum removes the superseded settings files, so no older copy lies around for the taking.
    p.vacuum(Duration::ZERO).unwrap();
    assert_eq!(settings_objects(p.storage()), vec![current]);
}

fn forged_checksummed_manifest_appended_is_ignored_and_vacuumed(backend: Backend) {
    let Some((_fx, p)) = victim(backend, "forged_checksummed_manifest") else {
        return;
    };
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    let head = t.head().unwrap();
    let s = t.storage().clone();
    let mut forged = head.clone();
    forged.version += 1;
    let prev = s.get(&manifest_object(&t, head.version)).unwrap().unwrap();
    forged.prev_digest = *blake3::hash(&prev).as_bytes();
    forged.files.clear();
    forged.algorithm = Algorithm::None;
    let bytes = forged.seal(None).unwrap();
    let digest = *blake3::hash(&bytes).as_bytes();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let path = format!("_manifest/v{:020}-{hex}.cvm", forged.version);
    s.put(&path, bytes.into()).unwrap();
    assert!(s.get(&path).unwrap().is_some());
    let t = p.table("t").unwrap();
    assert_eq!(
        t.head().unwrap().version,
        head.version,
        "readers follow the catalog's head"
    );
    assert_eq!(rows(&t).unwrap(), 10);
    // The next commit builds on the catalog's head, not on the forged file.
    let c = t.append([batch(10, 5)]).unwrap();
    assert_eq!(c.version, head.version + 1);
    assert_eq!(rows(&t).unwrap(), 15);
    t.vacuum(Duration::ZERO).unwrap();
    assert!(s.get(&path).unwrap().is_none(), "the orphan is vacuumed");
}

/// A table at version 4: created (version 1), then three appends of 10 rows.
fn table_with_history(backend: Backend, test: &str) -> Option<(Fixture, Project, Table)> {
    let (fx, p) = victim(backend, test)?;
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    for i in 0..3 {
        t.append([batch(i * 10, 10)]).unwrap();
    }
    assert_eq!(t.head().unwrap().version, 4);
    Some((fx, p, t))
}

fn deleting_newer_manifests_is_a_table_rollback_and_vacuum_deletes_nothing(backend: Backend) {
    let Some((_fx, p, t)) = table_with_history(backend, "deleting_newer_manifests") else {
        return;
    };
    for v in [3, 4] {
        t.storage().delete(&manifest_object(&t, v)).unwrap();
    }
    let before = inventory(p.storage());
    assert!(before.len() > 3, "{before:?}");
    let fresh = p.table("t").unwrap();
    let err = fresh.head().unwrap_err();
    assert!(matches!(err, Error::TableRollback { version: 4, .. }), "{err}");
    assert!(matches!(rows(&fresh), Err(Error::TableRollback { .. })));
    assert!(matches!(fresh.append([batch(0, 1)]), Err(Error::TableRollback { .. })));
    assert!(p.vacuum(Duration::ZERO).is_err());
    assert!(fresh.vacuum(Duration::ZERO).is_err());
    assert_eq!(
        inventory(p.storage()),
        before,
        "vacuum deleted something after a rollback"
    );
}

fn restoring_an_old_manifest_dir_is_a_table_rollback_and_vacuum_deletes_nothing(backend: Backend) {
    let Some((_fx, p)) = victim(backend, "restoring_an_old_manifest_dir") else {
        return;
    };
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    let manifests = t.storage().child("_manifest");
    let saved = snapshot(&manifests);
    t.append([batch(10, 10)]).unwrap();
    t.overwrite([batch(100, 3)]).unwrap();
    replace_all(&manifests, &saved);
    let before = inventory(p.storage());
    assert!(before.len() > 3, "{before:?}");
    let err = p.table("t").unwrap().head().unwrap_err();
    assert!(matches!(err, Error::TableRollback { version: 4, .. }), "{err}");
    assert!(p.vacuum(Duration::ZERO).is_err());
    assert_eq!(
        inventory(p.storage()),
        before,
        "vacuum deleted something after a rollback"
    );
}

fn project_vacuum_after_a_rollback_in_one_table_deletes_nothing_anywhere(backend: Backend) {
    let Some((_fx, p)) = victim(backend, "project_vacuum_after_a_rollback") else {
        return;
    };
    // Table "a" (first by name) has an orphan data file and a superseded settings file lies around;
    // table "b" is rolled back.
    let a = p.create_table("a", batch(0, 1).schema()).unwrap();
    a.append([batch(0, 10)]).unwrap();
    a.storage().put("data/orphan.cvlt", b"x".to_vec().into()).unwrap();
    p.storage()
        .put("project-00000000000000000000000000000000.cv", b"old".to_vec().into())
        .unwrap();
    let b = p.create_table("b", batch(0, 1).schema()).unwrap();
    b.append([batch(0, 10)]).unwrap();
    b.head().unwrap();
    b.storage().delete(&manifest_object(&b, 2)).unwrap();
    let before = inventory(p.storage());
    assert!(before.len() > 3, "{before:?}");
    assert!(matches!(p.vacuum(Duration::ZERO), Err(Error::TableRollback { .. })));
    assert_eq!(
        inventory(p.storage()),
        before,
        "vacuum deleted something after a rollback"
    );
}

fn swapped_table_directories_are_refused(backend: Backend) {
    let Some((_fx, p)) = victim(backend, "swapped_table_directories") else {
        return;
    };
    let a = p.create_table("a", batch(0, 1).schema()).unwrap();
    let b = p.create_table("b", batch(0, 1).schema()).unwrap();
    a.append([batch(0, 10)]).unwrap();
    b.append([batch(100, 20)]).unwrap();
    // Each table's objects moved under the other's prefix.
    let (sa, sb) = (a.storage(), b.storage());
    let (in_a, in_b) = (snapshot(sa), snapshot(sb));
    assert!(!in_a.is_empty() && !in_b.is_empty());
    replace_all(sa, &in_b);
    replace_all(sb, &in_a);
    for name in ["a", "b"] {
        let err = p.table(name).unwrap().head().unwrap_err();
        assert!(matches!(err, Error::TableRollback { .. }), "{name}: {err}");
    }
}

fn table_directory_copied_from_another_project_on_the_same_key_is_refused(backend: Backend) {
    let fx = Fixture::new();
    let Some(first_loc) = location(backend, fx.dir.path(), "table_copied_first") else {
        return;
    };
    let second_loc = location(backend, fx.dir.path(), "table_copied_second").unwrap();
    let key = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    let mut projects = Vec::new();
    for (name, loc) in [("first", &first_loc), ("second", &second_loc)] {
        let id = colvault::project::new_project_id().unwrap();
        fx.kms.grant(&key, &Principal::new(&id).unwrap()).unwrap();
        let p = Project::create_with_id(
            &fx.catalog,
            loc,
            name,
            ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(key.clone())),
            keys(&fx),
            id,
        )
        .unwrap();
        let t = p.create_table("t", batch(0, 1).schema()).unwrap();
        t.append([batch(0, 10)]).unwrap();
        projects.push((p, t));
    }
    let (first, second) = (&projects[0], &projects[1]);
    replace_all(second.1.storage(), &snapshot(first.1.storage()));
    let err = second.0.table("t").unwrap().head().unwrap_err();
    assert!(matches!(err, Error::TableRollback { .. }), "{err}");
    assert_eq!(rows(&first.0.table("t").unwrap()).unwrap(), 10);
}

fn a_reused_project_name_gets_none_of_the_old_grants(backend: Backend) {
    let fx = Fixture::new();
    let Some(old_loc) = location(backend, fx.dir.path(), "reused_project_name_old") else {
        return;
    };
    let new_loc = location(backend, fx.dir.path(), "reused_project_name_new").unwrap();
    let key = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    let id = colvault::project::new_project_id().unwrap();
    fx.kms.grant(&key, &Principal::new(&id).unwrap()).unwrap();
    let s = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(key.clone()));
    let old = Project::create_with_id(&fx.catalog, &old_loc, "payroll", s.clone(), keys(&fx), id).unwrap();
    assert!(!is_gone(&old_loc), "{old_loc}");
    old.drop_project().unwrap();
    assert!(is_gone(&old_loc), "{old_loc}");
    // The name is free again; a new project under it is a new principal, with no grant.
    let err = Project::create(&fx.catalog, &new_loc, "payroll", s, keys(&fx)).unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err}");
    assert!(fx.catalog.project("payroll").unwrap().is_none());
    assert!(is_gone(&new_loc), "{new_loc}");
}

fn register_adopts_an_existing_directory_by_trust_on_first_use(backend: Backend) {
    let fx = Fixture::new();
    let Some(loc) = location(backend, fx.dir.path(), "register_adopts") else {
        return;
    };
    let p = encrypted(&fx, &loc, "adopted");
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    // A second catalog (the first was lost): the location is adopted after verification.
    let other = fx.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let catalog2 = common::catalog_in(&other);
    let (adopted, report) = Project::register(&catalog2, p.location(), keys(&fx)).unwrap();
    assert_eq!(report.tables.len(), 1);
    assert_eq!(report.tables[0].1, 2);
    let name = &report.tables[0].0;
    assert_eq!(rows(&adopted.table(name).unwrap()).unwrap(), 10);
    // Registering twice is refused; damage found at registration is refused too.
    assert!(matches!(
        Project::register(&catalog2, p.location(), keys(&fx)),
        Err(Error::AlreadyExists { .. })
    ));
    let third = fx.dir.path().join("third");
    std::fs::create_dir(&third).unwrap();
    t.head().unwrap();
    let head_file = manifest_object(&t, 2);
    let n = t.storage().get(&head_file).unwrap().unwrap().len();
    flip(t.storage(), &head_file, n - 5);
    assert!(Project::register(&common::catalog_in(&third), p.location(), keys(&fx)).is_err());
    assert!(common::catalog_in(&third).project("adopted").unwrap().is_none());
}

crate::backend_tests!(
    plaintext_settings_copied_over_is_a_downgrade,
    forged_settings_with_victims_id_and_migration_are_refused,
    older_authentic_settings_are_a_settings_rollback,
    forged_checksummed_manifest_appended_is_ignored_and_vacuumed,
    deleting_newer_manifests_is_a_table_rollback_and_vacuum_deletes_nothing,
    restoring_an_old_manifest_dir_is_a_table_rollback_and_vacuum_deletes_nothing,
    project_vacuum_after_a_rollback_in_one_table_deletes_nothing_anywhere,
    swapped_table_directories_are_refused,
    table_directory_copied_from_another_project_on_the_same_key_is_refused,
    a_reused_project_name_gets_none_of_the_old_grants,
    register_adopts_an_existing_directory_by_trust_on_first_use,
);
