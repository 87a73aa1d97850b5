//! Attacks by someone with write access to a project's storage and no key: each is refused with its
//! typed error, because what a reader expects comes from the catalog (the control plane), never
//! from the storage it reads. After a rollback attempt, vacuum deletes nothing.

#[path = "common/cli_env.rs"]
mod cli_env;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::RecordBatch;
use colvault::kms::{CreateKeyRequest, KmsAdmin, Principal};
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::table::Table;
use colvault::{Algorithm, Error};
use common::{id_batch as batch, keys, Fixture};

/// The (only) current settings file of a project directory: `project-<digest>.cv`.
fn settings_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cv"))
        .collect();
    v.sort();
    v
}

/// The settings file the catalog records for `p`.
fn current_settings(p: &Project) -> PathBuf {
    let rec = p.catalog().project(p.name()).unwrap().unwrap();
    let hex: String = rec.settings_digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    p.dir().join(format!("project-{hex}.cv"))
}

fn encrypted(fx: &Fixture, name: &str) -> Project {
    Project::create(
        &fx.catalog,
        fx.dir.path().join(name),
        name,
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        keys(fx),
    )
    .unwrap()
}

fn rows(t: &Table) -> Result<usize, Error> {
    Ok(t.scan().build()?.read_all()?.iter().map(RecordBatch::num_rows).sum())
}

/// Every file under `dir`, recursively, for "nothing was deleted" checks.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(all_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn plaintext_settings_copied_over_is_a_downgrade() {
    let fx = Fixture::new();
    let victim = encrypted(&fx, "victim");
    let t = victim.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    let plain = Project::create(
        &fx.catalog,
        fx.dir.path().join("plain"),
        "plain",
        ProjectSettings::plaintext(),
        keys(&fx),
    )
    .unwrap();
    std::fs::copy(current_settings(&plain), current_settings(&victim)).unwrap();
    let err = Project::open(&fx.catalog, "victim", keys(&fx)).unwrap_err();
    assert!(matches!(err, Error::Downgrade { .. }), "{err}");
    // Nothing can be written through a handle opened now; the data still reads once restored.
    assert!(Project::open(&fx.catalog, "victim", keys(&fx)).is_err());
}

#[test]
fn forged_settings_with_victims_id_and_migration_are_refused() {
    let fx = Fixture::new();
    let victim = encrypted(&fx, "victim");
    victim.create_table("t", batch(0, 1).schema()).unwrap();
    // The forger builds, in a catalog of its own, a project with the victim's name and id (so its
    // default key is even granted to the victim's principal), and migrates it: its directory then
    // holds a plaintext settings file, one recording a migration (`migrating_from`), and a final
    // encrypted one, each with the victim's name and id and a valid MAC.
    let forger_dir = fx.dir.path().join("forger");
    std::fs::create_dir(&forger_dir).unwrap();
    let forger_catalog = common::catalog_in(&forger_dir);
    let forged = Project::create_with_id(
        &forger_catalog,
        forger_dir.join("victim"),
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
    let candidates = settings_files(forged.dir());
    assert_eq!(candidates.len(), 3, "{candidates:?}");
    let target = current_settings(&victim);
    let good = std::fs::read(&target).unwrap();
    let mut kinds = Vec::new();
    for forged_file in candidates {
        std::fs::copy(&forged_file, &target).unwrap();
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
    std::fs::write(&target, good).unwrap();
    Project::open(&fx.catalog, "victim", keys(&fx)).unwrap();
}

#[test]
fn older_authentic_settings_are_a_settings_rollback() {
    let fx = Fixture::new();
    let p = Project::create(
        &fx.catalog,
        fx.dir.path().join("p"),
        "rolling",
        ProjectSettings::plaintext(),
        keys(&fx),
    )
    .unwrap();
    p.create_table("t", batch(0, 1).schema()).unwrap();
    let gen0 = std::fs::read(current_settings(&p)).unwrap();
    // Encryption on (generation 1), then a key and algorithm change (generation 2).
    let p = p
        .migrate(
            ProjectSettings::encrypted(Algorithm::Rc4, KeyChoice::ProjectDefault).allow_legacy_rc4(),
            &|_, _, _| {},
        )
        .unwrap();
    let gen1 = std::fs::read(current_settings(&p)).unwrap();
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
    let good = std::fs::read(&current).unwrap();
    // Before the key change (rc4 under the default key, authentic, MAC valid): a rollback.
    std::fs::write(&current, &gen1).unwrap();
    let err = Project::open(&fx.catalog, "rolling", keys(&fx)).unwrap_err();
    assert!(
        matches!(err, Error::Downgrade { .. } | Error::SettingsRollback { .. }),
        "{err}"
    );
    // Before the migration (plaintext): a downgrade.
    std::fs::write(&current, &gen0).unwrap();
    let err = Project::open(&fx.catalog, "rolling", keys(&fx)).unwrap_err();
    assert!(matches!(err, Error::Downgrade { .. }), "{err}");
    std::fs::write(&current, &good).unwrap();
    let p = Project::open(&fx.catalog, "rolling", keys(&fx)).unwrap();
    assert_eq!(p.settings().algorithm, Algorithm::Aes256Gcm);
    // Vacuum removes the superseded settings files, so no older copy lies around for the taking.
    p.vacuum(Duration::ZERO).unwrap();
    assert_eq!(settings_files(p.dir()), vec![current]);
}

#[test]
fn forged_checksummed_manifest_appended_is_ignored_and_vacuumed() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "victim");
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    let head = t.head().unwrap();
    let mut forged = head.clone();
    forged.version += 1;
    forged.prev_digest = *blake3::hash(&std::fs::read(t.manifest_file(head.version).unwrap()).unwrap()).as_bytes();
    forged.files.clear();
    forged.algorithm = Algorithm::None;
    let bytes = forged.seal(None).unwrap();
    let digest = *blake3::hash(&bytes).as_bytes();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let path = t.dir().join(format!("_manifest/v{:020}-{hex}.cvm", forged.version));
    std::fs::write(&path, &bytes).unwrap();
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
    assert!(!path.exists(), "the orphan is vacuumed");
}

/// A table at version 4: created (version 1), then three appends of 10 rows.
fn table_with_history(fx: &Fixture) -> (Project, Table) {
    let p = encrypted(fx, "victim");
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    for i in 0..3 {
        t.append([batch(i * 10, 10)]).unwrap();
    }
    assert_eq!(t.head().unwrap().version, 4);
    (p, t)
}

#[test]
fn deleting_newer_manifests_is_a_table_rollback_and_vacuum_deletes_nothing() {
    let fx = Fixture::new();
    let (p, t) = table_with_history(&fx);
    for v in [3, 4] {
        std::fs::remove_file(t.manifest_file(v).unwrap()).unwrap();
    }
    let before = all_files(p.dir());
    let fresh = p.table("t").unwrap();
    let err = fresh.head().unwrap_err();
    assert!(matches!(err, Error::TableRollback { version: 4, .. }), "{err}");
    assert!(matches!(rows(&fresh), Err(Error::TableRollback { .. })));
    assert!(matches!(fresh.append([batch(0, 1)]), Err(Error::TableRollback { .. })));
    assert!(p.vacuum(Duration::ZERO).is_err());
    assert!(fresh.vacuum(Duration::ZERO).is_err());
    assert_eq!(all_files(p.dir()), before, "vacuum deleted something after a rollback");
}

#[test]
fn restoring_an_old_manifest_dir_is_a_table_rollback_and_vacuum_deletes_nothing() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "victim");
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    let saved = fx.dir.path().join("saved_manifest");
    copy_dir(&t.dir().join("_manifest"), &saved);
    t.append([batch(10, 10)]).unwrap();
    t.overwrite([batch(100, 3)]).unwrap();
    std::fs::remove_dir_all(t.dir().join("_manifest")).unwrap();
    copy_dir(&saved, &t.dir().join("_manifest"));
    let before = all_files(p.dir());
    let err = p.table("t").unwrap().head().unwrap_err();
    assert!(matches!(err, Error::TableRollback { version: 4, .. }), "{err}");
    assert!(p.vacuum(Duration::ZERO).is_err());
    assert_eq!(all_files(p.dir()), before, "vacuum deleted something after a rollback");
}

#[test]
fn project_vacuum_after_a_rollback_in_one_table_deletes_nothing_anywhere() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "victim");
    // Table "a" (first by name) has an orphan data file and a superseded settings file lies around;
    // table "b" is rolled back.
    let a = p.create_table("a", batch(0, 1).schema()).unwrap();
    a.append([batch(0, 10)]).unwrap();
    std::fs::write(a.dir().join("data/orphan.cvlt"), b"x").unwrap();
    std::fs::write(p.dir().join("project-00000000000000000000000000000000.cv"), b"old").unwrap();
    let b = p.create_table("b", batch(0, 1).schema()).unwrap();
    b.append([batch(0, 10)]).unwrap();
    b.head().unwrap();
    std::fs::remove_file(b.manifest_file(2).unwrap()).unwrap();
    let before = all_files(p.dir());
    assert!(matches!(p.vacuum(Duration::ZERO), Err(Error::TableRollback { .. })));
    assert_eq!(all_files(p.dir()), before, "vacuum deleted something after a rollback");
}

#[test]
fn swapped_table_directories_are_refused() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "victim");
    let a = p.create_table("a", batch(0, 1).schema()).unwrap();
    let b = p.create_table("b", batch(0, 1).schema()).unwrap();
    a.append([batch(0, 10)]).unwrap();
    b.append([batch(100, 20)]).unwrap();
    let tmp = fx.dir.path().join("swap");
    std::fs::rename(a.dir(), &tmp).unwrap();
    std::fs::rename(b.dir(), a.dir()).unwrap();
    std::fs::rename(&tmp, b.dir()).unwrap();
    for name in ["a", "b"] {
        let err = p.table(name).unwrap().head().unwrap_err();
        assert!(matches!(err, Error::TableRollback { .. }), "{name}: {err}");
    }
}

#[test]
fn table_directory_copied_from_another_project_on_the_same_key_is_refused() {
    let fx = Fixture::new();
    let key = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    let mut projects = Vec::new();
    for name in ["first", "second"] {
        let id = colvault::project::new_project_id().unwrap();
        fx.kms.grant(&key, &Principal::new(&id).unwrap()).unwrap();
        let p = Project::create_with_id(
            &fx.catalog,
            fx.dir.path().join(name),
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
    std::fs::remove_dir_all(second.1.dir()).unwrap();
    copy_dir(first.1.dir(), second.1.dir());
    let err = second.0.table("t").unwrap().head().unwrap_err();
    assert!(matches!(err, Error::TableRollback { .. }), "{err}");
    assert_eq!(rows(&first.0.table("t").unwrap()).unwrap(), 10);
}

#[test]
fn a_reused_project_name_gets_none_of_the_old_grants() {
    let fx = Fixture::new();
    let key = fx.kms.create_key(CreateKeyRequest::byok()).unwrap().id;
    let id = colvault::project::new_project_id().unwrap();
    fx.kms.grant(&key, &Principal::new(&id).unwrap()).unwrap();
    let s = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(key.clone()));
    let old = Project::create_with_id(
        &fx.catalog,
        fx.dir.path().join("old"),
        "payroll",
        s.clone(),
        keys(&fx),
        id,
    )
    .unwrap();
    old.drop_project().unwrap();
    // The name is free again; a new project under it is a new principal, with no grant.
    let err = Project::create(&fx.catalog, fx.dir.path().join("new"), "payroll", s, keys(&fx)).unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err}");
    assert!(fx.catalog.project("payroll").unwrap().is_none());
    assert!(!fx.dir.path().join("new").exists());
}

// ---- the same attacks through the command line ----

use cli_env::Env;

impl Env {
    fn catalog_show(&self, project: &str) -> serde_json::Value {
        self.json(&["catalog", "show", project, "--json"])
    }
    fn settings_file(&self, project: &str) -> PathBuf {
        let show = self.catalog_show(project);
        let digest = show["settings_digest"].as_str().unwrap();
        PathBuf::from(show["location"].as_str().unwrap()).join(format!("project-{}.cv", &digest[..32]))
    }
}

fn stderr_of(env: &Env, args: &[&str]) -> (i32, String) {
    let out = env.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn cli_refuses_every_storage_attack() {
    let env = Env::new();
    std::fs::write(env.path().join("a.csv"), "id,name\n1,x\n2,y\n3,z\n").unwrap();
    env.run(&["project", "create", "./sales", "--name", "sales", "--encrypt"]);
    env.run(&["project", "create", "./plain", "--name", "plain"]);
    for t in ["a", "b"] {
        env.run(&["table", "import", "./sales", t, "a.csv"]);
        env.run(&["table", "import", "./sales", t, "a.csv"]);
    }

    // 1. Plaintext settings copied over: refused as a downgrade, and import writes nothing.
    let settings = env.settings_file("sales");
    let good = std::fs::read(&settings).unwrap();
    std::fs::copy(env.settings_file("plain"), &settings).unwrap();
    for args in [
        vec!["table", "count", "./sales", "a"],
        vec!["table", "import", "./sales", "c", "a.csv"],
        vec!["project", "verify", "./sales"],
    ] {
        let (code, err) = stderr_of(&env, &args);
        assert_eq!(code, 4, "{args:?}: {err}");
        assert!(err.contains("downgrade refused"), "{args:?}: {err}");
    }
    std::fs::write(&settings, &good).unwrap();
    assert_eq!(env.json(&["table", "count", "./sales", "a", "--json"])["rows"], 6);

    // 2. The newest manifest deleted: a rollback; vacuum deletes nothing.
    let a_dir = env.table_dir("sales", "a");
    let newest: PathBuf = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(a_dir.join("_manifest"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v.pop().unwrap()
    };
    let saved = std::fs::read(&newest).unwrap();
    std::fs::remove_file(&newest).unwrap();
    let before = all_files(&env.path().join("sales"));
    let (code, err) = stderr_of(&env, &["table", "count", "./sales", "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("storage does not hold version 2"), "{err}");
    let (code, err) = stderr_of(&env, &["project", "vacuum", "./sales", "--grace-seconds", "0"]);
    assert_ne!(code, 0, "{err}");
    assert_eq!(all_files(&env.path().join("sales")), before, "vacuum deleted something");
    std::fs::write(&newest, saved).unwrap();

    // 3. Two table directories swapped: refused.
    let b_dir = env.table_dir("sales", "b");
    let tmp = env.path().join("swap");
    std::fs::rename(&a_dir, &tmp).unwrap();
    std::fs::rename(&b_dir, &a_dir).unwrap();
    std::fs::rename(&tmp, &b_dir).unwrap();
    let (code, err) = stderr_of(&env, &["table", "count", "./sales", "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("storage does not hold"), "{err}");
    std::fs::rename(&a_dir, &tmp).unwrap();
    std::fs::rename(&b_dir, &a_dir).unwrap();
    std::fs::rename(&tmp, &b_dir).unwrap();
    assert_eq!(env.json(&["table", "count", "./sales", "b", "--json"])["rows"], 6);

    // 5. A forged manifest appended after the head: ignored (the count is the catalog's head's),
    //    and vacuumed as an orphan.
    let forged = a_dir.join(format!("_manifest/v{:020}-{}.cvm", 3, "0".repeat(32)));
    std::fs::write(&forged, b"CVMF forged").unwrap();
    assert_eq!(env.json(&["table", "count", "./sales", "a", "--json"])["rows"], 6);
    env.run(&["project", "vacuum", "./sales", "--grace-seconds", "0"]);
    assert!(!forged.exists());

    // 6. An old _manifest directory restored: a rollback.
    let saved = env.path().join("saved_manifest");
    copy_dir(&a_dir.join("_manifest"), &saved);
    env.run(&["table", "import", "./sales", "a", "a.csv"]);
    std::fs::remove_dir_all(a_dir.join("_manifest")).unwrap();
    copy_dir(&saved, &a_dir.join("_manifest"));
    let (code, err) = stderr_of(&env, &["table", "count", "./sales", "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("storage does not hold version 3"), "{err}");

    // 7. Older authentic settings (before a migration): refused.
    env.run(&["project", "create", "./mig", "--name", "mig"]);
    env.run(&["table", "import", "./mig", "t", "a.csv"]);
    let before_migration = std::fs::read(env.settings_file("mig")).unwrap();
    env.run(&["project", "migrate", "./mig", "--encrypt"]);
    std::fs::write(env.settings_file("mig"), before_migration).unwrap();
    let (code, err) = stderr_of(&env, &["table", "count", "./mig", "t"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("downgrade refused"), "{err}");

    // 4. An older copy of the keystore restored: refused by the catalog's generation mark, in a
    //    new process (the per-process check cannot see it).
    let ks = env.home().join(".colvault/keystore");
    let old = std::fs::read(&ks).unwrap();
    env.run(&["kms", "create-key", "--alias", "later"]);
    std::fs::write(&ks, old).unwrap();
    let (code, err) = stderr_of(&env, &["kms", "list"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("keystore rollback refused"), "{err}");
    let (code, err) = stderr_of(&env, &["table", "count", "./sales", "a"]);
    assert_eq!(code, 4, "{err}");

    // 8. The catalog lists what it anchors.
    let list = env.run(&["catalog", "list"]);
    assert!(
        list.contains("project sales") && list.contains("project plain"),
        "{list}"
    );
}

#[test]
fn register_adopts_an_existing_directory_by_trust_on_first_use() {
    let fx = Fixture::new();
    let p = encrypted(&fx, "adopted");
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, 10)]).unwrap();
    // A second catalog (the first was lost): the directory is adopted after verification.
    let other = fx.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let catalog2 = common::catalog_in(&other);
    let (adopted, report) = Project::register(&catalog2, p.dir(), keys(&fx)).unwrap();
    assert_eq!(report.tables.len(), 1);
    assert_eq!(report.tables[0].1, 2);
    let name = &report.tables[0].0;
    assert_eq!(rows(&adopted.table(name).unwrap()).unwrap(), 10);
    // Registering twice is refused; damage found at registration is refused too.
    assert!(matches!(
        Project::register(&catalog2, p.dir(), keys(&fx)),
        Err(Error::AlreadyExists { .. })
    ));
    let third = fx.dir.path().join("third");
    std::fs::create_dir(&third).unwrap();
    t.head().unwrap();
    let head_file = t.manifest_file(2).unwrap();
    let mut bytes = std::fs::read(&head_file).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    std::fs::write(&head_file, bytes).unwrap();
    assert!(Project::register(&common::catalog_in(&third), p.dir(), keys(&fx)).is_err());
    assert!(common::catalog_in(&third).project("adopted").unwrap().is_none());
}

/// The keystore's own cross-check, which works without a catalog: an older copy of the keystore
/// beside an audit log that records changes committed after it is refused at open (here opened at
/// a new path, so no per-process or catalog mark has seen it: only the log can tell).
#[test]
fn an_older_keystore_beside_a_newer_audit_log_is_refused() {
    use colvault::kms::{Argon2Params, LocalKms, LocalKmsOptions, RootSecret};
    let dir = tempfile::tempdir().unwrap();
    let opts = || LocalKmsOptions::new().with_argon2(Argon2Params::insecure_for_tests());
    let pass = || RootSecret::passphrase("a passphrase long enough");
    let ks = dir.path().join("keystore");
    let kms = LocalKms::create(&ks, pass(), opts()).unwrap();
    kms.create_key(CreateKeyRequest::byok()).unwrap();
    let old = std::fs::read(&ks).unwrap();
    kms.create_key(CreateKeyRequest::byok()).unwrap();
    drop(kms);
    let elsewhere = dir.path().join("restored");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("keystore"), &old).unwrap();
    std::fs::copy(dir.path().join("keystore.audit"), elsewhere.join("keystore.audit")).unwrap();
    let err = LocalKms::open(elsewhere.join("keystore"), pass(), opts()).unwrap_err();
    assert!(matches!(err, Error::KeystoreRollback { .. }), "{err}");
    // Control: the current keystore with the same log opens.
    std::fs::copy(&ks, elsewhere.join("keystore")).unwrap();
    LocalKms::open(elsewhere.join("keystore"), pass(), opts()).unwrap();
}

/// The two attacks above that need a second project, through the command line: settings forged in
/// another colvault home with the victim's name and id (plaintext, then mid-migration and migrated),
/// and a table directory copied from another project on the same key.
#[test]
fn cli_refuses_forged_settings_and_copied_table_directories() {
    let env = Env::new();
    std::fs::write(env.path().join("a.csv"), "id,name\n1,x\n2,y\n").unwrap();
    let key = env.json(&["kms", "create-key", "--alias", "shared", "--json"])["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["first", "second"] {
        let dir = format!("./{name}");
        let (_, err) = stderr_of(
            &env,
            &["project", "create", &dir, "--name", name, "--encrypt", "--key", &key],
        );
        let id = err.split("--id ").nth(1).unwrap().trim().to_string();
        env.run(&["kms", "grant", &key, &id]);
        env.run(&[
            "project",
            "create",
            &dir,
            "--name",
            name,
            "--encrypt",
            "--key",
            &key,
            "--id",
            &id,
        ]);
        env.run(&["table", "import", &dir, "t", "a.csv"]);
    }
    // A table directory copied from another project on the same key.
    let (first_t, second_t) = (env.table_dir("first", "t"), env.table_dir("second", "t"));
    let saved = env.path().join("saved_second_t");
    copy_dir(&second_t, &saved);
    std::fs::remove_dir_all(&second_t).unwrap();
    copy_dir(&first_t, &second_t);
    let (code, err) = stderr_of(&env, &["table", "count", "./second", "t"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("storage does not hold"), "{err}");
    std::fs::remove_dir_all(&second_t).unwrap();
    copy_dir(&saved, &second_t);
    assert_eq!(env.json(&["table", "count", "./second", "t", "--json"])["rows"], 2);

    // Settings forged elsewhere (another home: its own keystore and catalog) with the victim's name
    // and id, plaintext and then migrated to encryption under the forger's key.
    let victim_id = env.catalog_show("first")["project_id"].as_str().unwrap().to_string();
    let forger_home = env.path().join("forger-home");
    std::fs::create_dir(&forger_home).unwrap();
    let forger = |args: &[&str]| {
        let out = env.cmd().env("HOME", &forger_home).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    forger(&["project", "create", "./forged", "--name", "first", "--id", &victim_id]);
    forger(&["table", "import", "./forged", "t", "a.csv"]);
    forger(&["project", "migrate", "./forged", "--encrypt"]);
    let target = env.settings_file("first");
    let good = std::fs::read(&target).unwrap();
    let forged = settings_files(&env.path().join("forged"));
    assert_eq!(forged.len(), 3, "{forged:?}");
    for f in forged {
        std::fs::copy(&f, &target).unwrap();
        let (code, err) = stderr_of(&env, &["table", "count", "./first", "t"]);
        assert_eq!(code, 4, "{}: {err}", f.display());
        assert!(
            err.contains("downgrade refused") || err.contains("not the settings the catalog records"),
            "{err}"
        );
    }
    std::fs::write(&target, good).unwrap();
    assert_eq!(env.json(&["table", "count", "./first", "t", "--json"])["rows"], 2);
}
