//! Choosing a KMS: the `--kms` / `COLVAULT_KMS` URL.
//!
//! ```text
//! local                                 the embedded keystore (the default)
//! pkcs11:module=PATH;token=LABEL        a PKCS#11 token (feature `pkcs11`; PIN from COLVAULT_PKCS11_PIN or a prompt)
//! aws-kms:                              the AWS KMS API, configured by the AWS_* environment (feature `aws-kms`)
//! ```
//!
//! ```
//! use colvault::kms::select::KmsUrl;
//! assert_eq!("local".parse::<KmsUrl>().unwrap(), KmsUrl::Local);
//! assert_eq!("aws-kms:".parse::<KmsUrl>().unwrap(), KmsUrl::AwsKms);
//! assert!("pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=cv".parse::<KmsUrl>().is_ok());
//! assert!("vault:".parse::<KmsUrl>().is_err());
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::KmsAdmin;
use crate::error::{Error, Result};

/// Which KMS holds the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KmsUrl {
    /// The embedded keystore ([`super::LocalKms`]).
    Local,
    /// A PKCS#11 token: the module (shared library) and the token's label.
    Pkcs11 {
        /// The PKCS#11 module.
        module: PathBuf,
        /// The token label.
        token: String,
    },
    /// A service speaking the AWS KMS API, configured by the environment
    /// ([`super::aws::AwsKmsOptions::from_env`]).
    AwsKms,
}

fn bad(url: &str, detail: impl Into<String>) -> Error {
    Error::Config {
        setting: format!("KMS URL {url:?}"),
        detail: format!(
            "{}; expected local, pkcs11:module=PATH;token=LABEL, or aws-kms:",
            detail.into()
        ),
    }
}

impl FromStr for KmsUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t == "local" || t == "local:" {
            return Ok(KmsUrl::Local);
        }
        if let Some(rest) = t.strip_prefix("aws-kms:") {
            if !rest.is_empty() {
                return Err(bad(
                    s,
                    "aws-kms: takes nothing after the colon (the endpoint, region and credentials come from AWS_*)",
                ));
            }
            return Ok(KmsUrl::AwsKms);
        }
        if let Some(rest) = t.strip_prefix("pkcs11:") {
            let (mut module, mut token) = (None, None);
            for part in rest.split(';').filter(|p| !p.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| bad(s, format!("{part:?} is not NAME=VALUE")))?;
                let slot = match k {
                    "module" => &mut module,
                    "token" => &mut token,
                    other => return Err(bad(s, format!("unknown pkcs11 attribute {other:?}"))),
                };
                if v.is_empty() || slot.replace(v.to_string()).is_some() {
                    return Err(bad(s, format!("{k} is empty or given twice")));
                }
            }
            return match (module, token) {
                (Some(m), Some(t)) => Ok(KmsUrl::Pkcs11 {
                    module: PathBuf::from(m),
                    token: t,
                }),
                _ => Err(bad(s, "pkcs11: needs both module=PATH and token=LABEL")),
            };
        }
        Err(bad(s, "unknown KMS"))
    }
}

impl fmt::Display for KmsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsUrl::Local => f.write_str("local"),
            KmsUrl::Pkcs11 { module, token } => write!(f, "pkcs11:module={};token={token}", module.display()),
            KmsUrl::AwsKms => f.write_str("aws-kms:"),
        }
    }
}

/// Opens the KMS of `url`. `local` opens the embedded keystore, which needs a path and a root
/// secret only its caller knows: it is called for [`KmsUrl::Local`] only.
pub fn open_kms(url: &KmsUrl, local: impl FnOnce() -> Result<Arc<dyn KmsAdmin>>) -> Result<Arc<dyn KmsAdmin>> {
    match url {
        KmsUrl::Local => local(),
        KmsUrl::Pkcs11 { module, token } => open_pkcs11(module, token),
        KmsUrl::AwsKms => open_aws(),
    }
}

#[cfg(not(all(feature = "pkcs11", feature = "aws-kms")))]
fn missing_feature(feature: &str) -> Error {
    Error::KmsUnsupported {
        kms: feature.into(),
        operation: "opening it".into(),
        detail: format!("this build of colvault lacks cargo feature `{feature}`; rebuild with --features {feature}"),
    }
}

#[cfg(feature = "pkcs11")]
fn open_pkcs11(module: &std::path::Path, token: &str) -> Result<Arc<dyn KmsAdmin>> {
    use crate::kms::pkcs11::{Pkcs11Kms, Pkcs11Options};
    Ok(Arc::new(Pkcs11Kms::open(Pkcs11Options::new(module, token))?))
}

#[cfg(not(feature = "pkcs11"))]
fn open_pkcs11(_module: &std::path::Path, _token: &str) -> Result<Arc<dyn KmsAdmin>> {
    Err(missing_feature("pkcs11"))
}

#[cfg(feature = "aws-kms")]
fn open_aws() -> Result<Arc<dyn KmsAdmin>> {
    use crate::kms::aws::{AwsKms, AwsKmsOptions};
    Ok(Arc::new(AwsKms::open(AwsKmsOptions::from_env()?)?))
}

#[cfg(not(feature = "aws-kms"))]
fn open_aws() -> Result<Arc<dyn KmsAdmin>> {
    Err(missing_feature("aws-kms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print() {
        for (s, want) in [
            ("local", KmsUrl::Local),
            (" local ", KmsUrl::Local),
            ("aws-kms:", KmsUrl::AwsKms),
            (
                "pkcs11:module=/lib/p.so;token=my token",
                KmsUrl::Pkcs11 {
                    module: "/lib/p.so".into(),
                    token: "my token".into(),
                },
            ),
            (
                "pkcs11:token=t;module=/m.so;",
                KmsUrl::Pkcs11 {
                    module: "/m.so".into(),
                    token: "t".into(),
                },
            ),
        ] {
            let got: KmsUrl = s.parse().unwrap();
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string().parse::<KmsUrl>().unwrap(), want);
        }
        for bad in [
            "",
            "vault:",
            "aws-kms:x",
            "pkcs11:",
            "pkcs11:module=/m.so",
            "pkcs11:module=/m.so;token=",
            "pkcs11:module=a;module=b;token=t",
            "pkcs11:module=/m.so;token=t;pin=1234",
            "pkcs11:module",
        ] {
            assert!(matches!(bad.parse::<KmsUrl>(), Err(Error::Config { .. })), "{bad:?}");
        }
    }

    #[cfg(not(feature = "pkcs11"))]
    #[test]
    fn pkcs11_without_the_feature_says_so() {
        let url: KmsUrl = "pkcs11:module=/m.so;token=t".parse().unwrap();
        match open_kms(&url, || unreachable!()) {
            Err(Error::KmsUnsupported { detail, .. }) => assert!(detail.contains("feature `pkcs11`"), "{detail}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
