//! The environment the CLI tests run the binary in: a temporary directory with its own HOME, and
//! none of colvault's environment variables inherited.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// colvault's environment variables, which no CLI test inherits.
pub const CLEARED_ENV: [&str; 9] = [
    "COLVAULT_KMS",
    "COLVAULT_CONFIG",
    "COLVAULT_KEYSTORE",
    "COLVAULT_ROOT_KEY_FILE",
    "COLVAULT_PASSPHRASE",
    "COLVAULT_NEW_PASSPHRASE",
    "COLVAULT_KEY_CACHE_SECONDS",
    "COLVAULT_CIPHER_PROVIDER",
    "COLVAULT_CATALOG",
];

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Env { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_colvault"));
        c.current_dir(self.path()).env("HOME", self.home());
        for v in CLEARED_ENV {
            c.env_remove(v);
        }
        c
    }
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).assert().success().get_output().stdout.clone();
        String::from_utf8(out).unwrap()
    }
    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.run(args)).unwrap()
    }
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.cmd().args(args).assert().code(code).get_output().stderr.clone();
        String::from_utf8(out).unwrap()
    }
    /// A table's directory, from the catalog (`catalog show`).
    pub fn table_dir(&self, project: &str, table: &str) -> PathBuf {
        let show = self.json(&["catalog", "show", project, "--json"]);
        let t = show["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == table)
            .unwrap()
            .clone();
        PathBuf::from(show["location"].as_str().unwrap()).join(t["location"].as_str().unwrap())
    }
    /// A table's data files, sorted.
    pub fn data_files(&self, project: &str, table: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.table_dir(project, table).join("data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cvlt"))
            .collect();
        v.sort();
        v
    }
}
