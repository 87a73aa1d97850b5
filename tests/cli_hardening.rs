//! Issue 15, "Command line and API" items 7 to 11: failed commands leave nothing behind, read-only
//! commands create no keys, bad data is refused, messages say what happened, and `table verify`
//! reads every column. Run as a user would: the binary, a temporary HOME.

#[path = "common/cli_env.rs"]
mod cli_env;

use std::path::{Path, PathBuf};

use cli_env::Env;

const CSV: &str = "id,name,amount\n1,alice,1.25\n2,bob,\n3,carol,7.50\n";

impl Env {
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }
    /// A project `name` with table `t` of CSV's three rows.
    fn project_with_table(&self, name: &str, encrypt: bool) {
        let dir = format!("./{name}");
        let mut args = vec!["project", "create", &dir, "--name", name];
        if encrypt {
            args.push("--encrypt");
        }
        self.run(&args);
        self.write("rows.csv", CSV);
        self.run(&["table", "import", &dir, "t", "rows.csv"]);
    }
    fn keys(&self) -> Vec<serde_json::Value> {
        self.json(&["kms", "list", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn stderr_of(env: &Env, args: &[&str]) -> (i32, String) {
    let out = env.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

// ---- item 7: creation is all or nothing ----

#[test]
fn project_create_refuses_a_non_empty_directory() {
    let env = Env::new();
    std::fs::create_dir(env.path().join("busy")).unwrap();
    env.write("busy/notes.txt", "mine");
    let err = env.fails(&["project", "create", "./busy", "--name", "busy", "--encrypt"], 2);
    assert!(err.contains("not empty"), "{err}");
    // Refused before anything was made: no keystore, no root key, no key.
    assert!(!env.home().join(".colvault").exists());
    assert!(!env.path().join("busy/project.cv").exists());
    assert!(!env.path().join("busy/tables").exists());
    // An empty directory is fine.
    std::fs::create_dir(env.path().join("empty")).unwrap();
    env.run(&["project", "create", "./empty", "--name", "empty"]);
}

#[test]
fn failed_import_leaves_no_table() {
    let env = Env::new();
    env.project_with_table("imp", true);
    // 200,000 columns: more than a table may have; the import fails after the table's schema was taken.
    let header: Vec<String> = (0..200_000).map(|i| format!("c{i}")).collect();
    let row: Vec<&str> = (0..200_000).map(|_| "1").collect();
    env.write("wide.csv", &format!("{}\n{}\n", header.join(","), row.join(",")));
    let (code, err) = stderr_of(&env, &["table", "import", "./imp", "imp6", "wide.csv"]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("no table was created") || err.contains("more than 10000 columns"),
        "{err}"
    );
    // A failure while the rows are written: the type is inferred from the first 100,000 rows, and
    // a later value does not parse, after the table was created and data files were written.
    env.write("late.csv", &format!("id\n{}x\n", "1\n".repeat(100_001)));
    let (code, err) = stderr_of(&env, &["table", "import", "./imp", "imp7", "late.csv"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("nothing was committed and no table was created"), "{err}");
    let tables = env.json(&["table", "list", "./imp", "--json"]);
    let names: Vec<&str> = tables
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"imp6"), "{names:?}");
    assert_eq!(names, ["t"]);
    let t_dir = env.json(&["catalog", "show", "./imp", "--json"])["tables"][0]["location"]
        .as_str()
        .unwrap()
        .to_string();
    for entry in std::fs::read_dir(env.path().join("imp/tables")).unwrap() {
        let name = format!("tables/{}", entry.unwrap().file_name().to_string_lossy());
        assert_eq!(name, t_dir, "left behind: {name}");
    }
    env.run(&["project", "verify", "./imp"]);
}

#[test]
fn failed_encrypted_project_create_leaves_no_key() {
    let env = Env::new();
    env.run(&["kms", "list"]); // the keystore exists
    env.write("afile", "not a directory");
    let (code, err) = stderr_of(
        &env,
        &["project", "create", "./afile/sub", "--name", "sub", "--encrypt"],
    );
    assert_ne!(code, 0, "{err}");
    let live: Vec<_> = env.keys().into_iter().filter(|k| k["state"] == "enabled").collect();
    assert!(live.is_empty(), "a failed create left a usable key: {live:?}");
}

// ---- item 8: read-only commands create no keystore ----

#[test]
fn read_only_commands_create_no_keystore() {
    let env = Env::new();
    env.project_with_table("rop", true);
    let elsewhere = env.path().join("other-home");
    std::fs::create_dir(&elsewhere).unwrap();
    for args in [
        vec!["table", "count", "./rop", "t"],
        vec!["table", "head", "./rop", "t"],
        vec!["table", "export", "./rop", "t", "out.csv"],
        vec!["table", "list", "./rop"],
        vec!["project", "show", "./rop"],
        vec!["project", "verify", "./rop"],
    ] {
        // The catalog stays the one that knows the project; only the keystore is missing.
        let catalog = format!("sqlite:{}", env.home().join(".colvault/catalog.db").display());
        let out = env
            .cmd()
            .env("HOME", &elsewhere)
            .env("COLVAULT_CATALOG", &catalog)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("no keystore at") && err.contains("COLVAULT_KEYSTORE"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("unknown key"), "{args:?}: {err}");
        assert!(
            std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
            "{args:?} created {:?}",
            std::fs::read_dir(&elsewhere)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect::<Vec<_>>()
        );
    }
    // A plaintext project needs no keystore at all.
    env.project_with_table("plain", false);
    let catalog = format!("sqlite:{}", env.home().join(".colvault/catalog.db").display());
    let out = env
        .cmd()
        .env("HOME", &elsewhere)
        .env("COLVAULT_CATALOG", &catalog)
        .args(["table", "count", "./plain", "t"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
}

// ---- item 9: bad data refused ----

#[test]
fn empty_csv_and_bad_column_names_are_refused() {
    let env = Env::new();
    env.run(&["project", "create", "./bad", "--name", "bad"]);
    env.write("empty.csv", "");
    let err = env.fails(&["table", "import", "./bad", "e", "empty.csv"], 4);
    assert!(
        err.contains("no columns") || err.contains("the input is empty"),
        "{err}"
    );
    env.write("dup.csv", "a,a\n1,2\n");
    let (code, err) = stderr_of(&env, &["table", "import", "./bad", "d", "dup.csv"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("more than once"), "{err}");
    let err = env.fails(&["table", "create", "./bad", "d2", "--schema", "a:int64,a:utf8"], 2);
    assert!(err.contains("a"), "{err}");
    env.write("blank.csv", "a,,c\n1,2,3\n");
    let (code, err) = stderr_of(&env, &["table", "import", "./bad", "b", "blank.csv"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("empty name"), "{err}");
    let list = env.json(&["table", "list", "./bad", "--json"]);
    for t in list.as_array().unwrap() {
        assert_ne!(t["columns"], 0, "a table without columns: {t}");
        assert!(t["name"] != "e" && t["name"] != "d", "{t}");
    }
}

#[test]
fn expire_snapshots_beyond_the_head_fails() {
    let env = Env::new();
    env.project_with_table("exq", false);
    env.run(&["table", "import", "./exq", "t", "rows.csv"]);
    let err = env.fails(&["table", "expire-snapshots", "./exq", "t", "--keep-from", "99"], 1);
    assert!(err.contains("no version 99") && err.contains("1 to 2"), "{err}");
    let h = env.json(&["table", "history", "./exq", "t", "--json"]);
    assert_eq!(h.as_array().unwrap().len(), 2);
}

#[cfg(unix)]
#[test]
fn non_utf8_passphrase_is_invalid_not_unset() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let bad = std::ffi::OsStr::from_bytes(b"pass\xffword-long");
    let out = env
        .cmd()
        .env("COLVAULT_PASSPHRASE", bad)
        .args(["kms", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("COLVAULT_PASSPHRASE") && err.contains("not valid UTF-8"),
        "{err}"
    );
    assert!(!err.contains("not set"), "{err}");
    assert!(!env.home().join(".colvault/keystore").exists());
}

// ---- item 10: messages ----

fn flip_byte(path: &Path, at_from_end: usize, mask: u8) -> Vec<u8> {
    let orig = std::fs::read(path).unwrap();
    let mut b = orig.clone();
    let i = b.len() - at_from_end;
    b[i] ^= mask;
    std::fs::write(path, b).unwrap();
    orig
}

#[test]
fn damaged_trailer_is_damage_not_a_newer_version() {
    let env = Env::new();
    env.project_with_table("trl", true);
    let file = env.data_files("trl", "t").remove(0);
    // The trailer: u32 envelope length, u32 body length, magic. The lowest bit of either length
    // (the envelope then starts a byte early or late) and a magic byte.
    for (at_from_end, mask) in [(9, 1u8), (5, 1), (1, 1), (9, 2), (5, 2)] {
        let orig = flip_byte(&file, at_from_end, mask);
        let (code, err) = stderr_of(&env, &["table", "count", "./trl", "t"]);
        assert_eq!(code, 4, "byte -{at_from_end} ^ {mask}: {err}");
        assert!(
            !err.contains("upgrade") && !err.contains("unsupported format version"),
            "byte -{at_from_end} ^ {mask}: {err}"
        );
        std::fs::write(&file, orig).unwrap();
    }
    // Every other bit of the lengths: always a data error (exit 4).
    for at_from_end in 5..=12 {
        for bit in 0..8 {
            let orig = flip_byte(&file, at_from_end, 1 << bit);
            let (code, err) = stderr_of(&env, &["table", "count", "./trl", "t"]);
            assert_eq!(code, 4, "byte -{at_from_end} bit {bit}: {err}");
            std::fs::write(&file, orig).unwrap();
        }
    }
}

#[test]
fn integrity_messages_are_noun_phrases() {
    let env = Env::new();
    env.project_with_table("msg", false);
    // A table without its manifest: a sentence, not "failed for table x has no manifest".
    let show = env.json(&["catalog", "show", "./msg", "--json"]);
    let manifests = PathBuf::from(show["location"].as_str().unwrap())
        .join(show["tables"][0]["location"].as_str().unwrap())
        .join("_manifest");
    let saved = env.path().join("saved_manifests");
    std::fs::rename(&manifests, &saved).unwrap();
    std::fs::create_dir(&manifests).unwrap();
    let err = env.fails(&["table", "count", "./msg", "t"], 4);
    assert!(!err.contains("table t has no manifest:"), "{err}");
    assert!(
        err.contains(
            "table t: storage does not hold version 1, the head the catalog records (its manifest is missing)"
        ),
        "{err}"
    );
    std::fs::remove_dir(&manifests).unwrap();
    std::fs::rename(&saved, &manifests).unwrap();
    env.run(&["table", "count", "./msg", "t"]);
}

#[test]
fn verify_says_checksummed_without_encryption() {
    let env = Env::new();
    env.project_with_table("msg", false);
    let out = env.run(&["project", "verify", "./msg"]);
    assert!(out.contains("checksummed") && !out.contains("authenticated"), "{out}");
    env.project_with_table("enc", true);
    let out = env.run(&["project", "verify", "./enc"]);
    assert!(out.contains("authenticated"), "{out}");
}

#[test]
fn keystore_damage_does_not_suggest_project_verify() {
    let env = Env::new();
    env.run(&["kms", "list"]);
    // A damaged keystore: the hint does not send the user to `project verify`.
    let ks = env.home().join(".colvault/keystore");
    let orig = std::fs::read(&ks).unwrap();
    let mut b = orig.clone();
    b[0] ^= 0xff;
    std::fs::write(&ks, &b).unwrap();
    let (code, err) = stderr_of(&env, &["kms", "list"]);
    assert_ne!(code, 0, "{err}");
    assert!(!err.contains("project verify"), "{err}");
    std::fs::write(&ks, &orig).unwrap();
    env.run(&["kms", "list"]);
}

#[test]
fn byok_denial_gives_its_hint_once() {
    let env = Env::new();
    // The BYOK denial names the grant command once.
    let key = env.json(&["kms", "create-key", "--alias", "hrkey", "--json"])["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let err = env.fails(&["project", "create", "./hrdept", "--encrypt", "--key", &key], 3);
    assert_eq!(err.matches("kms grant").count(), 1, "{err}");
    // Grants name the project's id; the hint says to create it with that id once granted.
    let id = err.split("--id ").nth(1).unwrap().trim();
    assert!(err.contains(&format!("colvault kms grant {key} {id}")), "{err}");
}

#[test]
fn json_option_is_described_once() {
    let env = Env::new();
    // --json is described once.
    for args in [["kms", "create-key", "--help"], ["table", "head", "--help"]] {
        let help = env.run(&args);
        assert_eq!(help.matches("JSON").count(), 1, "{args:?}: {help}");
    }
}

#[test]
fn downgraded_project_hint_names_no_missing_flag() {
    let env = Env::new();
    env.project_with_table("enc", true);
    // A downgraded project (its settings replaced by a plaintext copy): no `--project` flag hint.
    env.run(&["project", "create", "./decoy", "--name", "decoy"]);
    let settings = |dir: &str| {
        std::fs::read_dir(env.path().join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "cv"))
            .unwrap()
    };
    std::fs::copy(settings("decoy"), settings("enc")).unwrap();
    let (code, err) = stderr_of(&env, &["table", "count", "./enc", "t"]);
    assert_ne!(code, 0, "{err}");
    assert!(!err.contains("--project"), "{err}");
    assert!(err.contains("settings file") && err.contains("downgrade"), "{err}");
}

#[cfg(unix)]
#[test]
fn exported_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.project_with_table("exp", true);
    for name in ["out.csv", "out.parquet", "out.arrow", "out.jsonl"] {
        // A permissive umask, and a file that already exists world-readable.
        std::fs::write(env.path().join(name), "old").unwrap();
        std::fs::set_permissions(env.path().join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = std::process::Command::new("sh")
            .current_dir(env.path())
            .env("HOME", env.home())
            .args(["-c", "umask 000; exec \"$@\"", "sh", env!("CARGO_BIN_EXE_colvault")])
            .args(["table", "export", "./exp", "t", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mode = std::fs::metadata(env.path().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}: {mode:o}");
    }
}

// ---- item 11: count reads one column; verify reads all ----

#[test]
fn count_says_what_it_read_and_table_verify_reads_every_column() {
    let env = Env::new();
    env.run(&["project", "create", "./cvt", "--name", "cvt"]);
    env.write("rows.csv", CSV);
    env.run(&["table", "import", "./cvt", "t", "rows.csv"]);
    let help = env.run(&["table", "count", "--help"]);
    assert!(
        help.contains("only one column") || help.contains("reads only one column"),
        "{help}"
    );
    let out = env.cmd().args(["table", "count", "./cvt", "t"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("table verify"));
    let j = env.json(&["table", "count", "./cvt", "t", "--json"]);
    assert!(j["checked"].as_str().unwrap().contains("\"id\" only"), "{j}");

    // Damage in the last column's chunk (the `none` format: the chunk's checksum catches it).
    let file = env.data_files("cvt", "t").remove(0);
    let bytes = std::fs::read(&file).unwrap();
    let needle = b"carol";
    let at = bytes.windows(needle.len()).position(|w| w == needle);
    // zstd may hide the text; then damage a byte just before the envelope (the last chunk).
    let i = at.unwrap_or_else(|| {
        let t = &bytes[bytes.len() - 12..];
        let env_len = u32::from_be_bytes(t[0..4].try_into().unwrap()) as usize;
        let body_len = u32::from_be_bytes(t[4..8].try_into().unwrap()) as usize;
        bytes.len() - 12 - body_len - env_len - 40
    });
    let mut damaged = bytes.clone();
    damaged[i] ^= 0x01;
    std::fs::write(&file, damaged).unwrap();
    let err = env.fails(&["table", "verify", "./cvt", "t"], 4);
    assert!(err.contains("table t version"), "{err}");
    std::fs::write(&file, bytes).unwrap();
    let out = env.run(&["table", "verify", "./cvt", "t"]);
    assert!(out.contains("every column") && out.contains("checksummed"), "{out}");
    let j = env.json(&["table", "verify", "./cvt", "t", "--json"]);
    assert_eq!(j["ok"], true);
    assert_eq!(j["tables"][0]["columns"], 3);
}
