//! Attacks by someone with write access to a project's storage and no key, through the command
//! line: each is refused (exit code 4) because what a reader expects comes from the catalog (the
//! control plane), never from the storage it reads. After a rollback attempt, vacuum deletes
//! nothing.
//!
//! The same attacks on the library run on every data-plane backend in
//! `control_plane_attacks_storage.rs`. The command-line ones here run on a local directory and on
//! S3 (moto's server on loopback, a bucket per test; the CLI configured through `AWS_*` as a user
//! would): `NAME::local`, `NAME::s3`. Not on `memory://`: the CLI runs as a separate process,
//! which cannot see this process's in-memory stores. The attacker works through the project's
//! storage (objects read, replaced, deleted, copied). What stays local only, and why:
//! * the keystore rollback (step 4 of `cli_refuses_every_storage_attack`, on both backends) and
//!   the keystore's audit-log cross-check: they are about the keystore file itself, a local file
//!   whatever the data plane.

#[path = "common/cli_env.rs"]
mod cli_env;
mod common;

use bytes::Bytes;
use colvault::kms::{CreateKeyRequest, KmsAdmin};
use colvault::storage::Storage;
use colvault::Error;
use common::stores::{inventory, replace_all, settings_objects, snapshot, Backend};

use cli_env::Env;

/// The CLI in a fresh home, its projects in local directories of the test's directory or under a
/// fresh bucket on moto's S3 server.
struct Cli {
    env: Env,
    /// The `AWS_*` variables the CLI gets (none for local projects).
    vars: Vec<(&'static str, String)>,
    bucket: Option<String>,
}

impl Cli {
    /// `None` when the backend's service is unavailable here (skipped, after saying why).
    fn new(backend: Backend, test: &str) -> Option<Cli> {
        let env = Env::new();
        match backend {
            Backend::Local => Some(Cli {
                env,
                vars: Vec::new(),
                bucket: None,
            }),
            Backend::Memory => panic!("the CLI cannot reach this process's memory:// stores"),
            Backend::S3 => Self::s3(env, test),
        }
    }

    #[cfg(feature = "s3")]
    fn s3(env: Env, test: &str) -> Option<Cli> {
        let server = common::moto::server(test)?;
        let bucket = server.bucket(test);
        // This process tampers through a store registered for the bucket; the CLI uses `AWS_*`.
        common::stores::register_s3(server, &bucket);
        Some(Cli {
            env,
            vars: server.env(),
            bucket: Some(bucket),
        })
    }

    #[cfg(not(feature = "s3"))]
    fn s3(env: Env, test: &str) -> Option<Cli> {
        // Says why S3 is skipped (or fails when services are required).
        common::stores::location(Backend::S3, env.path(), test).map(|_| unreachable!())
    }

    fn cmd_in(&self, home: Option<&std::path::Path>) -> assert_cmd::Command {
        let mut c = self.env.cmd();
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        if let Some(h) = home {
            c.env("HOME", h);
        }
        c
    }
    fn run(&self, args: &[&str]) -> String {
        let out = self
            .cmd_in(None)
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.run(args)).unwrap()
    }
    fn stderr_of(&self, args: &[&str]) -> (i32, String) {
        let out = self.cmd_in(None).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
    fn count(&self, loc: &str, table: &str) -> serde_json::Value {
        self.json(&["table", "count", loc, table, "--json"])["rows"].clone()
    }
    /// Where project `name` is put: `./name`, or `s3://BUCKET/name`.
    fn loc(&self, name: &str) -> String {
        match &self.bucket {
            Some(b) => format!("s3://{b}/{name}"),
            None => format!("./{name}"),
        }
    }
    /// The storage of the project at [`loc`](Self::loc)`(name)`, as the attacker reaches it.
    fn storage(&self, name: &str) -> Storage {
        match &self.bucket {
            Some(b) => Storage::open(&format!("s3://{b}/{name}"), false).unwrap(),
            None => Storage::open(self.env.path().join(name).to_str().unwrap(), false).unwrap(),
        }
    }
    fn catalog_show(&self, project: &str) -> serde_json::Value {
        self.json(&["catalog", "show", project, "--json"])
    }
    /// The object name of the settings file the catalog records for `project`.
    fn settings_file(&self, project: &str) -> String {
        let show = self.catalog_show(project);
        let digest = show["settings_digest"].as_str().unwrap();
        format!("project-{}.cv", &digest[..32])
    }
    /// The storage of table `table` of `project` (stored at `loc(project)`), from the catalog.
    fn table(&self, project: &str, table: &str) -> Storage {
        let show = self.catalog_show(project);
        let t = show["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == table)
            .unwrap()
            .clone();
        self.storage(project).child(t["location"].as_str().unwrap())
    }
}

fn get(s: &Storage, name: &str) -> Bytes {
    s.get(name).unwrap().unwrap()
}

/// Swaps the objects of two tables.
fn swap(a: &Storage, b: &Storage) {
    let (in_a, in_b) = (snapshot(a), snapshot(b));
    assert!(!in_a.is_empty() && !in_b.is_empty());
    replace_all(a, &in_b);
    replace_all(b, &in_a);
}

fn cli_refuses_every_storage_attack(backend: Backend) {
    let Some(cli) = Cli::new(backend, "cli_refuses_every_storage_attack") else {
        return;
    };
    let (sales, plain, mig) = (cli.loc("sales"), cli.loc("plain"), cli.loc("mig"));
    let (sales, plain, mig) = (sales.as_str(), plain.as_str(), mig.as_str());
    std::fs::write(cli.env.path().join("a.csv"), "id,name\n1,x\n2,y\n3,z\n").unwrap();
    cli.run(&["project", "create", sales, "--name", "sales", "--encrypt"]);
    cli.run(&["project", "create", plain, "--name", "plain"]);
    for t in ["a", "b"] {
        cli.run(&["table", "import", sales, t, "a.csv"]);
        cli.run(&["table", "import", sales, t, "a.csv"]);
    }
    let store = cli.storage("sales");

    // 1. Plaintext settings copied over: refused as a downgrade, and import writes nothing.
    let settings = cli.settings_file("sales");
    let good = get(&store, &settings);
    store
        .put(&settings, get(&cli.storage("plain"), &cli.settings_file("plain")))
        .unwrap();
    let before = inventory(&store);
    assert!(before.len() > 3, "{before:?}");
    for args in [
        vec!["table", "count", sales, "a"],
        vec!["table", "import", sales, "c", "a.csv"],
        vec!["project", "verify", sales],
    ] {
        let (code, err) = cli.stderr_of(&args);
        assert_eq!(code, 4, "{args:?}: {err}");
        assert!(err.contains("downgrade refused"), "{args:?}: {err}");
    }
    assert_eq!(inventory(&store), before, "something was written");
    store.put(&settings, good).unwrap();
    assert_eq!(cli.count(sales, "a"), 6);

    // 2. The newest manifest deleted: a rollback; vacuum deletes nothing.
    let a = cli.table("sales", "a");
    let newest = a.list("_manifest").unwrap().pop().unwrap().name;
    let saved = get(&a, &newest);
    a.delete(&newest).unwrap();
    let before = inventory(&store);
    assert!(before.len() > 3, "{before:?}");
    let (code, err) = cli.stderr_of(&["table", "count", sales, "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("storage does not hold version 2"), "{err}");
    let (code, err) = cli.stderr_of(&["project", "vacuum", sales, "--grace-seconds", "0"]);
    assert_ne!(code, 0, "{err}");
    assert_eq!(inventory(&store), before, "vacuum deleted something");
    a.put(&newest, saved).unwrap();

    // 3. Two tables' objects swapped: refused.
    let b = cli.table("sales", "b");
    swap(&a, &b);
    let (code, err) = cli.stderr_of(&["table", "count", sales, "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("storage does not hold"), "{err}");
    swap(&a, &b);
    assert_eq!(cli.count(sales, "b"), 6);

    // 5. A forged manifest appended after the head: ignored (the count is the catalog's head's),
    //    and vacuumed as an orphan.
    let forged = format!("_manifest/v{:020}-{}.cvm", 3, "0".repeat(32));
    a.put(&forged, Bytes::from_static(b"CVMF forged")).unwrap();
    assert_eq!(cli.count(sales, "a"), 6);
    cli.run(&["project", "vacuum", sales, "--grace-seconds", "0"]);
    assert!(a.get(&forged).unwrap().is_none());

    // 6. An old _manifest directory restored: a rollback.
    let manifests = a.child("_manifest");
    let saved = snapshot(&manifests);
    cli.run(&["table", "import", sales, "a", "a.csv"]);
    replace_all(&manifests, &saved);
    let (code, err) = cli.stderr_of(&["table", "count", sales, "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("storage does not hold version 3"), "{err}");

    // 7. Older authentic settings (before a migration): refused.
    cli.run(&["project", "create", mig, "--name", "mig"]);
    cli.run(&["table", "import", mig, "t", "a.csv"]);
    let before_migration = get(&cli.storage("mig"), &cli.settings_file("mig"));
    cli.run(&["project", "migrate", mig, "--encrypt"]);
    cli.storage("mig")
        .put(&cli.settings_file("mig"), before_migration)
        .unwrap();
    let (code, err) = cli.stderr_of(&["table", "count", mig, "t"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("downgrade refused"), "{err}");

    // 4. An older copy of the keystore restored: refused by the catalog's generation mark, in a
    //    new process (the per-process check cannot see it).
    let ks = cli.env.home().join(".colvault/keystore");
    let old = std::fs::read(&ks).unwrap();
    cli.run(&["kms", "create-key", "--alias", "later"]);
    std::fs::write(&ks, old).unwrap();
    let (code, err) = cli.stderr_of(&["kms", "list"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("keystore rollback refused"), "{err}");
    let (code, err) = cli.stderr_of(&["table", "count", sales, "a"]);
    assert_eq!(code, 4, "{err}");

    // 8. The catalog lists what it anchors.
    let list = cli.run(&["catalog", "list"]);
    assert!(
        list.contains("project sales") && list.contains("project plain"),
        "{list}"
    );
}

/// The two attacks above that need a second project, through the command line: settings forged in
/// another colvault home with the victim's name and id (plaintext, then mid-migration and migrated),
/// and a table directory copied from another project on the same key.
fn cli_refuses_forged_settings_and_copied_table_directories(backend: Backend) {
    let Some(cli) = Cli::new(backend, "cli_refuses_forged_settings") else {
        return;
    };
    std::fs::write(cli.env.path().join("a.csv"), "id,name\n1,x\n2,y\n").unwrap();
    let key = cli.json(&["kms", "create-key", "--alias", "shared", "--json"])["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (first, second) = (cli.loc("first"), cli.loc("second"));
    for (name, loc) in [("first", &first), ("second", &second)] {
        let (_, err) = cli.stderr_of(&["project", "create", loc, "--name", name, "--encrypt", "--key", &key]);
        let id = err.split("--id ").nth(1).unwrap().trim().to_string();
        cli.run(&["kms", "grant", &key, &id]);
        cli.run(&[
            "project",
            "create",
            loc,
            "--name",
            name,
            "--encrypt",
            "--key",
            &key,
            "--id",
            &id,
        ]);
        cli.run(&["table", "import", loc, "t", "a.csv"]);
    }
    // A table directory copied from another project on the same key.
    let (first_t, second_t) = (cli.table("first", "t"), cli.table("second", "t"));
    let saved = snapshot(&second_t);
    replace_all(&second_t, &snapshot(&first_t));
    let (code, err) = cli.stderr_of(&["table", "count", &second, "t"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("storage does not hold"), "{err}");
    replace_all(&second_t, &saved);
    assert_eq!(cli.count(&second, "t"), 2);

    // Settings forged elsewhere (another home: its own keystore and catalog) with the victim's name
    // and id, plaintext and then migrated to encryption under the forger's key.
    let victim_id = cli.catalog_show("first")["project_id"].as_str().unwrap().to_string();
    let forger_home = cli.env.path().join("forger-home");
    std::fs::create_dir(&forger_home).unwrap();
    let forger = |args: &[&str]| {
        let out = cli.cmd_in(Some(forger_home.as_path())).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let forged_loc = cli.loc("forged");
    forger(&["project", "create", &forged_loc, "--name", "first", "--id", &victim_id]);
    forger(&["table", "import", &forged_loc, "t", "a.csv"]);
    forger(&["project", "migrate", &forged_loc, "--encrypt"]);
    let (victim, target) = (cli.storage("first"), cli.settings_file("first"));
    let good = get(&victim, &target);
    let forged_store = cli.storage("forged");
    let forged = settings_objects(&forged_store);
    assert_eq!(forged.len(), 3, "{forged:?}");
    for f in forged {
        victim.put(&target, get(&forged_store, &f)).unwrap();
        let (code, err) = cli.stderr_of(&["table", "count", &first, "t"]);
        assert_eq!(code, 4, "{f}: {err}");
        assert!(
            err.contains("downgrade refused") || err.contains("not the settings the catalog records"),
            "{err}"
        );
    }
    victim.put(&target, good).unwrap();
    assert_eq!(cli.count(&first, "t"), 2);
}

/// Runs each CLI test body on a local directory and on S3, as `NAME::local` and `NAME::s3`.
macro_rules! cli_backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::Backend;
                #[test]
                fn local() {
                    super::$name(Backend::Local);
                }
                #[test]
                fn s3() {
                    super::$name(Backend::S3);
                }
            }
        )*
    };
}

cli_backend_tests!(
    cli_refuses_every_storage_attack,
    cli_refuses_forged_settings_and_copied_table_directories,
);

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
