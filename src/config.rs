//! The configuration file: `~/.colvault/config.toml`, or the file `COLVAULT_CONFIG` names.
//!
//! ```toml
//! kms = "aws-kms:"                     # as --kms / COLVAULT_KMS
//! catalog = "sqlite:/srv/colvault/catalog.db"   # as --catalog / COLVAULT_CATALOG
//! ```
//!
//! A flag wins over the environment, the environment over this file. A missing file is no
//! configuration; a malformed one (bad TOML, an unknown setting, a wrong type) is
//! [`Error::Config`] naming the file and the line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "COLVAULT_CONFIG";

/// The settings the configuration file may hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The KMS URL (see [`crate::kms::select::KmsUrl`]).
    pub kms: Option<String>,
    /// The catalog URL.
    pub catalog: Option<String>,
}

impl Config {
    /// Parses `text`, the content of `path` (for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            Error::Config {
                setting: format!("file {}:{line}", path.display()),
                detail: e.message().to_string(),
            }
        })
    }

    /// Reads the file at `path`; a missing file is the empty configuration.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::io(format!("reading configuration file {}", path.display()), e)),
        }
    }

    /// The file to read: `$COLVAULT_CONFIG`, else `HOME/.colvault/config.toml` (`None` without
    /// either).
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".colvault").join("config.toml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_the_line_of_an_error() {
        let p = Path::new("/x/config.toml");
        let c = Config::parse("kms = \"aws-kms:\"\ncatalog = \"sqlite:/c.db\"\n", p).unwrap();
        assert_eq!(c.kms.as_deref(), Some("aws-kms:"));
        assert_eq!(c.catalog.as_deref(), Some("sqlite:/c.db"));
        assert_eq!(Config::parse("", p).unwrap(), Config::default());
        for (text, line) in [
            ("kms = \"local\"\n\ncatalog = \n", 3),
            ("kms = \"local\"\nkeystore = \"/k\"\n", 2),
            ("kms = 7\n", 1),
        ] {
            match Config::parse(text, p) {
                Err(Error::Config { setting, .. }) => {
                    assert_eq!(setting, format!("file /x/config.toml:{line}"), "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
