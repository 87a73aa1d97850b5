//! Attacks by someone with write access to a project's storage and no key: each is refused with its
//! typed error, because what a reader expects comes from the catalog (the control plane), never
//! from the storage it reads. After a rollback attempt, vacuum deletes nothing.
//!
//! The library-level attacks run on every data-plane backend in `control_plane_attacks_storage.rs`.
//! What stays here is local only, and why:
//! * the command-line attacks: the CLI runs as a separate process, which cannot see this process's
//!   `memory://` stores; they tamper with the project directory and the keystore file by path
//!   (the CLI on S3 is `cli_s3.rs`);
//! * the keystore's audit-log cross-check: it is about the keystore file itself, a local file
//!   whatever the data plane.

#[path = "common/cli_env.rs"]
mod cli_env;

use std::path::{Path, PathBuf};

use colvault::kms::{CreateKeyRequest, KmsAdmin};
use colvault::Error;

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
