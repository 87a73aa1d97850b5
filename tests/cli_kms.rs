//! The `colvault kms` commands and how the keystore and its root secret are found, run as a user
//! would: the binary, a temporary HOME, no secret on the command line.

#[path = "common/cli_env.rs"]
mod cli_env;

use cli_env::Env;
use predicates::prelude::*;

#[test]
fn key_lifecycle_commands() {
    let env = Env::new();
    // First use creates the keystore and a root key file (0600) with no prompt.
    let created = env.json(&["kms", "create-key", "--alias", "sales-key", "--json"]);
    let id = created["key_id"].as_str().unwrap().to_string();
    assert_eq!(created["alias"], "sales-key");
    assert_eq!(created["state"], "enabled");
    let root = env.home().join(".colvault/root.key");
    assert_eq!(std::fs::read(&root).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let list = env.json(&["kms", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    env.cmd()
        .args(["kms", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains(&id).and(predicate::str::contains("sales-key")));
    // Describe by id or by alias.
    assert_eq!(
        env.json(&["kms", "describe", "sales-key", "--json"])["key_id"],
        id.as_str()
    );
    env.cmd()
        .args(["kms", "describe", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains("primary version  1"));

    env.run(&["kms", "disable", &id]);
    assert_eq!(env.json(&["kms", "describe", &id, "--json"])["state"], "disabled");
    env.run(&["kms", "enable", &id]);
    assert_eq!(env.json(&["kms", "describe", &id, "--json"])["state"], "enabled");

    env.run(&["kms", "rotate", &id]);
    assert_eq!(env.json(&["kms", "describe", &id, "--json"])["primary_version"], 2);
    // A superseded version is destroyable only once the longest KEK lifetime (24 h) has passed since
    // the rotation: a writer elsewhere may still wrap new data keys under it (issue 15, item 1).
    let out = env
        .cmd()
        .args(["kms", "destroy-version", &id, "1"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(err.contains("cannot destroy version 1"), "{err}");
    let d = env.json(&["kms", "describe", &id, "--json"]);
    assert_eq!(d["versions"][0]["state"], "enabled");
    let err = env.fails(&["kms", "destroy-version", &id, "2"], 3);
    assert!(err.contains("primary version"), "{err}");

    // Deletion: a window of 7 to 30 days, cancellable; deleting before its end is refused.
    let err = env.fails(&["kms", "schedule-deletion", &id, "--days", "3"], 2);
    assert!(err.contains("7..=30"), "{err}");
    env.run(&["kms", "schedule-deletion", &id, "--days", "7"]);
    let d = env.json(&["kms", "describe", &id, "--json"]);
    assert_eq!(d["state"], "pending_deletion");
    assert!(d["deletion_date"].is_string());
    let err = env.fails(&["kms", "delete", &id], 3);
    assert!(err.contains("before its deletion window ends"), "{err}");
    env.run(&["kms", "cancel-deletion", &id]);
    assert_eq!(env.json(&["kms", "describe", &id, "--json"])["state"], "enabled");

    // Grants by project name and by project directory: both name the project's immutable id.
    env.run(&["project", "create", "./salesproj", "--name", "sales"]);
    env.run(&["project", "create", "./plainproj", "--name", "plainproj"]);
    let id_of = |name: &str| env.json(&["catalog", "show", name, "--json"])["project_id"].clone();
    let (sales, plain) = (id_of("sales"), id_of("plainproj"));
    assert_eq!(sales.as_str().unwrap().len(), 32);
    env.run(&["kms", "grant", &id, "sales"]);
    env.run(&["kms", "grant", &id, "./plainproj"]);
    let grants = env.json(&["kms", "describe", &id, "--json"])["grants"].clone();
    assert_eq!(grants, serde_json::json!([sales, plain]));
    env.run(&["kms", "revoke", &id, "./plainproj"]);
    assert_eq!(
        env.json(&["kms", "describe", &id, "--json"])["grants"],
        serde_json::json!([sales])
    );
    let err = env.fails(&["kms", "grant", &id, "./nope/"], 1);
    assert!(err.contains("not a project registered"), "{err}");

    // Imported material: 32 raw bytes, or 64 hex digits; anything else is a usage error.
    std::fs::write(env.path().join("raw.key"), [7u8; 32]).unwrap();
    std::fs::write(env.path().join("hex.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::write(env.path().join("bad.key"), b"short").unwrap();
    let imported = env.json(&["kms", "create-key", "--import", "raw.key", "--grant", "sales", "--json"]);
    assert_eq!(imported["origin"], "byok");
    assert_eq!(imported["grants"], serde_json::json!([sales]));
    env.json(&["kms", "create-key", "--import", "hex.key", "--json"]);
    let err = env.fails(&["kms", "create-key", "--import", "bad.key"], 2);
    assert!(err.contains("exactly 32 bytes"), "{err}");

    let err = env.fails(&["kms", "describe", "no-such-key"], 3);
    assert!(err.contains("unknown key") && err.contains("kms list"), "{err}");

    // The audit log: every administrative action, its chain verified.
    env.cmd().args(["kms", "audit"]).assert().success().stdout(
        predicate::str::contains("Rotate")
            .and(predicate::str::contains("ScheduleDeletion"))
            .and(predicate::str::contains("hash chain intact")),
    );
    let audit = env.json(&["kms", "audit", "--key", &id, "--json"]);
    assert_eq!(audit["verified"], true);
    assert!(audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["key_id"] == id.as_str()));
    assert_eq!(
        env.json(&["kms", "audit", "--last", "2", "--json"])["records"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A tampered audit log is detected: a data error.
    let log = env.home().join(".colvault/keystore.audit");
    let mut bytes = std::fs::read(&log).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&log, bytes).unwrap();
    let err = env.fails(&["kms", "audit"], 4);
    assert!(err.contains("integrity check failed"), "{err}");
}

#[test]
fn root_secret_passphrase_key_files_and_locations() {
    let env = Env::new();
    let ks = env.path().join("custom/keystore");
    let ks = ks.to_str().unwrap();
    // A passphrase from the environment creates and opens a keystore given by flag or variable.
    env.cmd()
        .env("COLVAULT_PASSPHRASE", "a good long passphrase")
        .args(["--keystore", ks, "kms", "create-key", "--alias", "k1"])
        .assert()
        .success();
    assert!(
        !env.home().join(".colvault/root.key").exists(),
        "no key file with a passphrase"
    );
    env.cmd()
        .env("COLVAULT_PASSPHRASE", "a good long passphrase")
        .env("COLVAULT_KEYSTORE", ks)
        .args(["kms", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("k1"));

    // The wrong passphrase: a key error that says what to do.
    env.cmd()
        .env("COLVAULT_PASSPHRASE", "not the passphrase")
        .env("COLVAULT_KEYSTORE", ks)
        .args(["kms", "list"])
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("does not open keystore").and(predicate::str::contains("COLVAULT_PASSPHRASE")),
        );
    // No secret at all, and no terminal to ask on.
    env.cmd()
        .env("COLVAULT_KEYSTORE", ks)
        .args(["kms", "list"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no root secret was given"));

    // Change to a new passphrase (from the environment, never the command line).
    env.cmd()
        .env("COLVAULT_PASSPHRASE", "a good long passphrase")
        .env("COLVAULT_NEW_PASSPHRASE", "another long passphrase")
        .env("COLVAULT_KEYSTORE", ks)
        .args(["kms", "change-root-secret", "--to", "passphrase"])
        .assert()
        .success();
    env.cmd()
        .env("COLVAULT_PASSPHRASE", "a good long passphrase")
        .env("COLVAULT_KEYSTORE", ks)
        .args(["kms", "list"])
        .assert()
        .code(3);
    // Then to a root key file at a path of our choosing.
    let kf = env.path().join("custom/root.key");
    let kf = kf.to_str().unwrap();
    env.cmd()
        .env("COLVAULT_PASSPHRASE", "another long passphrase")
        .env("COLVAULT_KEYSTORE", ks)
        .args(["kms", "change-root-secret", "--to", "key-file", "--new-key-file", kf])
        .assert()
        .success()
        .stdout(predicate::str::contains("COLVAULT_ROOT_KEY_FILE"));
    env.cmd()
        .env("COLVAULT_KEYSTORE", ks)
        .env("COLVAULT_ROOT_KEY_FILE", kf)
        .args(["kms", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("k1"));
    env.cmd()
        .args(["--keystore", ks, "--root-key-file", kf, "kms", "describe", "k1"])
        .assert()
        .success();
    // Replacing the default root key file in place.
    env.run(&["kms", "list"]);
    let before = std::fs::read(env.home().join(".colvault/root.key")).unwrap();
    env.run(&["kms", "change-root-secret", "--to", "key-file"]);
    let after = std::fs::read(env.home().join(".colvault/root.key")).unwrap();
    assert_ne!(before, after);
    env.run(&["kms", "list"]);
    // A short new passphrase is refused, nothing changes.
    env.cmd()
        .env("COLVAULT_NEW_PASSPHRASE", "short")
        .args(["kms", "change-root-secret", "--to", "passphrase"])
        .assert()
        .code(2);
    env.run(&["kms", "list"]);
    // The cache lifetime is bounded.
    env.fails(&["--key-cache-seconds", "100000", "kms", "list"], 2);
    env.cmd()
        .env("COLVAULT_KEY_CACHE_SECONDS", "0")
        .args(["kms", "list"])
        .assert()
        .success();
}
