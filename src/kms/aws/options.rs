//! [`AwsKmsOptions`]: where the AWS KMS API is, in which region, with which static credentials.
//!
//! Only static credentials are used, from the caller or from the standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`): never the SDK's
//! default credential chain, which may read profile files or ask the instance metadata service
//! (IMDS) over the network (AWS SDKs and Tools reference guide, "Standardized credential
//! providers").

use std::fmt;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// How long [`super::AwsKms`] trusts what `DescribeKey`, `ListGrants` and `ListKeyRotations` said
/// about a key before asking again, by default. A change made through the same [`super::AwsKms`]
/// is seen at once; one made elsewhere within this time.
pub const DEFAULT_CHECK_LIFETIME: Duration = Duration::from_secs(60);

/// The settings of [`super::AwsKms::open`].
#[derive(Clone)]
pub struct AwsKmsOptions {
    pub(super) endpoint: Option<String>,
    pub(super) region: String,
    pub(super) access_key_id: String,
    pub(super) secret_access_key: Zeroizing<String>,
    pub(super) session_token: Option<Zeroizing<String>>,
    pub(super) grantee: Option<String>,
    pub(super) check_lifetime: Duration,
}

impl fmt::Debug for AwsKmsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("grantee", &self.grantee)
            .field("check_lifetime", &self.check_lifetime)
            .finish_non_exhaustive()
    }
}

/// The value of environment variable `name`, if set and not empty.
fn var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Config {
            setting: format!("environment variable {name}"),
            detail: "not valid UTF-8".into(),
        }),
    }
}

fn required(name: &str, what: &str) -> Result<String> {
    var(name)?.ok_or_else(|| Error::Config {
        setting: format!("environment variable {name}"),
        detail: format!("not set: the AWS KMS backend needs {what}"),
    })
}

impl AwsKmsOptions {
    /// The options from the environment: endpoint `AWS_ENDPOINT_URL_KMS`, else `AWS_ENDPOINT_URL`,
    /// else the service's public endpoint for the region; region `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`; static credentials `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and the
    /// optional `AWS_SESSION_TOKEN`; the grantee of colvault grants `COLVAULT_AWS_GRANTEE_ARN` (see
    /// [`AwsKmsOptions::with_grantee`]). A missing variable is [`Error::Config`] naming it.
    pub fn from_env() -> Result<Self> {
        let endpoint = match var("AWS_ENDPOINT_URL_KMS")? {
            Some(e) => Some(e),
            None => var("AWS_ENDPOINT_URL")?,
        };
        let region = match var("AWS_REGION")? {
            Some(r) => r,
            None => var("AWS_DEFAULT_REGION")?.ok_or_else(|| Error::Config {
                setting: "environment variable AWS_REGION".into(),
                detail: "not set (nor AWS_DEFAULT_REGION): the AWS KMS backend needs a region".into(),
            })?,
        };
        let access_key_id = required("AWS_ACCESS_KEY_ID", "static credentials (an access key id)")?;
        let secret = Zeroizing::new(required(
            "AWS_SECRET_ACCESS_KEY",
            "static credentials (a secret access key)",
        )?);
        let mut opts = Self::new(endpoint, region, access_key_id, secret);
        opts.session_token = var("AWS_SESSION_TOKEN")?.map(Zeroizing::new);
        opts.grantee = var("COLVAULT_AWS_GRANTEE_ARN")?;
        Ok(opts)
    }

    /// Options with an explicit endpoint (`None`: the public endpoint of `region`), region and
    /// static credentials.
    pub fn new(
        endpoint: Option<String>,
        region: String,
        access_key_id: String,
        secret_access_key: Zeroizing<String>,
    ) -> Self {
        AwsKmsOptions {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token: None,
            grantee: None,
            check_lifetime: DEFAULT_CHECK_LIFETIME,
        }
    }

    /// Adds a session token (temporary credentials).
    pub fn with_session_token(mut self, token: Zeroizing<String>) -> Self {
        self.session_token = Some(token);
        self
    }

    /// The IAM principal ARN that colvault grants name as `GranteePrincipal` (the identity colvault
    /// runs as). By default the account root of the key's own account
    /// (`arn:<partition>:iam::<account>:root`, taken from the key's ARN), which leaves the choice
    /// of identities to the account's IAM policies. See the [module documentation](super).
    pub fn with_grantee(mut self, arn: impl Into<String>) -> Self {
        self.grantee = Some(arn.into());
        self
    }

    /// How long a key's state, grants and rotations are trusted before they are asked again
    /// (default [`DEFAULT_CHECK_LIFETIME`]; zero asks on every call).
    pub fn with_check_lifetime(mut self, lifetime: Duration) -> Self {
        self.check_lifetime = lifetime;
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(Error::Config {
                    setting: "AWS KMS endpoint".into(),
                    detail: format!("{e:?} is not an http:// or https:// URL"),
                });
            }
        }
        if self.region.is_empty() || !self.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Error::Config {
                setting: "AWS region".into(),
                detail: format!("{:?} is not a region name", self.region),
            });
        }
        if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
            return Err(Error::Config {
                setting: "AWS credentials".into(),
                detail: "the access key id and the secret access key must not be empty".into(),
            });
        }
        Ok(())
    }
}
