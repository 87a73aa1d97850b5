//! `colvault quickstart` end to end from a clean HOME: no prompt, keystore and root key file created,
//! rows written and checked, inspect shown, the key disabled (reads fail) and enabled (reads work);
//! running it again works.

#[cfg(any(feature = "aws-kms", feature = "pkcs11"))]
mod common;

use assert_cmd::Command;
use predicates::prelude::*;

fn cmd(home: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_colvault"));
    c.current_dir(home).env("HOME", home);
    for v in [
        "COLVAULT_KMS",
        "COLVAULT_CONFIG",
        "COLVAULT_CATALOG",
        "COLVAULT_KEYSTORE",
        "COLVAULT_ROOT_KEY_FILE",
        "COLVAULT_PASSPHRASE",
        "COLVAULT_KEY_CACHE_SECONDS",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn quickstart_twice_from_a_clean_home() {
    let home = tempfile::tempdir().unwrap();
    let out = cmd(home.path())
        .args(["quickstart", "--rows", "30000"])
        .write_stdin("")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    for expected in [
        "created root key file",
        "created keystore",
        "AES-256-GCM",
        "rows/s",
        "OK: the same rows, in the same order",
        "algorithm       aes256",
        "row group 0",
        "is disabled",
        "exit code 3",
        "30000",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(home.path().join(".colvault/root.key").exists());
    assert!(home.path().join(".colvault/catalog.db").exists());
    let settings_files = std::fs::read_dir(home.path().join(".colvault/quickstart"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("project-"))
        .count();
    assert_eq!(settings_files, 1, "the demo project's settings file");

    // Again: the demo project is made anew, its old key scheduled for deletion.
    cmd(home.path())
        .args(["quickstart", "--rows", "20000"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("opened the existing keystore")
                .and(predicate::str::contains("scheduled for deletion"))
                .and(predicate::str::contains("OK: the same rows")),
        );
    // The result is an ordinary project the other commands work on.
    cmd(home.path())
        .args(["table", "count", ".colvault/quickstart", "sales"])
        .assert()
        .success()
        .stdout("20000\n");
    // It refuses to delete a directory that is not a project.
    let other = home.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    cmd(home.path())
        .args(["quickstart", "--rows", "10", "--dir", other.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a colvault project"));
    assert!(other.join("keep.txt").exists());
}

#[test]
fn quickstart_default_is_a_million_rows() {
    // The --rows option is for tests only and hidden; the default run writes a million rows.
    cmd(std::path::Path::new("/"))
        .args(["quickstart", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--rows").not());
    if cfg!(debug_assertions) {
        eprintln!("skipped the full-size quickstart in a debug build");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    cmd(home.path())
        .arg("quickstart")
        .assert()
        .success()
        .stdout(predicate::str::contains("1,000,000 rows").and(predicate::str::contains("1000000\n")));
}

/// The quickstart with its keys in the AWS KMS API (moto, started by the test), selected with
/// `--kms aws-kms:` and configured by the AWS_* environment; then the project opened through the
/// configuration file, refused (naming both KMSs) with the local keystore selected, and a
/// malformed configuration file named with its line.
#[cfg(feature = "aws-kms")]
#[test]
fn quickstart_against_aws_kms_on_moto() {
    let Some(server) = common::moto::server("quickstart_against_aws_kms_on_moto") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let aws = |args: &[&str]| {
        let mut c = cmd(home.path());
        c.args(args);
        for (k, v) in server.env() {
            c.env(k, v);
        }
        c
    };
    let out = aws(&["--kms", "aws-kms:", "quickstart", "--rows", "20000"])
        .write_stdin("")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    for expected in [
        "KMS        aws-kms: (aws-kms)",
        "AES-256-GCM",
        "OK: the same rows, in the same order",
        "is disabled",
        "exit code 3",
        "20000",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("created keystore"), "no local keystore is made:\n{out}");
    assert!(!home.path().join(".colvault/keystore").exists());

    // The configuration file selects the KMS when no flag or COLVAULT_KMS does.
    std::fs::write(home.path().join(".colvault/config.toml"), "kms = \"aws-kms:\"\n").unwrap();
    aws(&["table", "count", "quickstart", "sales"])
        .assert()
        .success()
        .stdout(predicate::str::contains("20000"));
    // A flag wins over the file: the local keystore cannot open the project, and says why.
    aws(&["--kms", "local", "table", "count", "quickstart", "sales"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("\"aws-kms\"").and(predicate::str::contains("\"local\"")));
    // A malformed file is named with its line.
    std::fs::write(
        home.path().join(".colvault/config.toml"),
        "kms = \"aws-kms:\"\nkeystore = 1\n",
    )
    .unwrap();
    aws(&["table", "count", "quickstart", "sales"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("config.toml:2"));
}

/// The quickstart with its keys on a PKCS#11 token (SoftHSM2, a fresh token initialised by the test
/// in this process before the CLI starts), selected with `--kms pkcs11:module=PATH;token=LABEL`, the
/// PIN from `COLVAULT_PKCS11_PIN` and the token directory from `SOFTHSM2_CONF`; then the project
/// read again through the configuration file, refused with the local keystore selected, and
/// refused with a wrong PIN.
#[cfg(feature = "pkcs11")]
#[test]
fn quickstart_against_pkcs11_on_softhsm() {
    let Some(token) = common::softhsm::token("quickstart_against_pkcs11_on_softhsm") else {
        return;
    };
    let conf = std::env::var_os("SOFTHSM2_CONF").expect("the SoftHSM2 harness sets SOFTHSM2_CONF");
    let url = format!("pkcs11:module={};token={}", token.module.display(), token.label);
    let home = tempfile::tempdir().unwrap();
    let hsm = |args: &[&str], pin: &str| {
        let mut c = cmd(home.path());
        c.args(args).env("SOFTHSM2_CONF", &conf).env("COLVAULT_PKCS11_PIN", pin);
        c
    };
    let pin = common::softhsm::USER_PIN;
    let out = hsm(&["--kms", &url, "quickstart", "--rows", "20000"], pin)
        .write_stdin("")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    for expected in [
        format!("KMS        {url} (pkcs11)").as_str(),
        "AES-256-GCM",
        "OK: the same rows, in the same order",
        "is disabled",
        "exit code 3",
        "20000",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("created keystore"), "no local keystore is made:\n{out}");
    assert!(!home.path().join(".colvault/keystore").exists());

    // The configuration file selects the KMS when no flag or COLVAULT_KMS does.
    std::fs::write(home.path().join(".colvault/config.toml"), format!("kms = {:?}\n", url)).unwrap();
    hsm(&["table", "count", "quickstart", "sales"], pin)
        .assert()
        .success()
        .stdout(predicate::str::contains("20000"));
    // A flag wins over the file: the local keystore cannot open the project, and says why.
    hsm(&["--kms", "local", "table", "count", "quickstart", "sales"], pin)
        .assert()
        .failure()
        .stderr(predicate::str::contains("\"pkcs11\"").and(predicate::str::contains("\"local\"")));
    // The token refuses a wrong PIN.
    hsm(&["table", "count", "quickstart", "sales"], "wrong-pin-0000")
        .assert()
        .failure()
        .stderr(predicate::str::contains("PIN"));
}
