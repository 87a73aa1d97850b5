//! A moto server for the KMS API that authenticates and authorizes every request as AWS IAM does:
//! each process (the test, each executor) has an IAM user of its own with its own access key, and
//! a user's access can be revoked by changing its policy, as an administrator revokes a role's
//! access to KMS. (S3 stays on the shared moto server: moto's S3 signature check refuses
//! object_store's signed listings, so the processes reach S3 and KMS at two endpoints, as
//! `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_KMS` allow.) The users are made with the moto virtual
//! environment's boto3 before enforcement starts (`INITIAL_NO_AUTH_ACTION_COUNT`: the first
//! requests, exactly those of the setup, are not checked).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use super::moto::{MotoServer, REGION};

/// An IAM user's access key.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The server, and the users made on it (the first is the administrator).
pub struct IamMoto {
    pub server: MotoServer,
    python: PathBuf,
    pub users: Vec<Credentials>,
}

const ALLOW_ALL: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
const S3_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;

/// Requests the setup makes per user (CreateUser, PutUserPolicy, CreateAccessKey).
const SETUP_ACTIONS_PER_USER: usize = 3;

impl IamMoto {
    /// A server enforcing IAM with `users` (each allowed everything); `None` when moto cannot run
    /// here and services are not required.
    pub fn start(test: &str, users: &[&str]) -> Option<IamMoto> {
        let count = (users.len() * SETUP_ACTIONS_PER_USER).to_string();
        let server = MotoServer::start_own(test, &[("INITIAL_NO_AUTH_ACTION_COUNT", count.as_str())])?;
        let python = MotoServer::program()
            .and_then(|p| p.parent().map(|d| d.join("python")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| panic!("{test}: moto runs but its virtual environment has no python"));
        let mut script = String::from(
            "import boto3, sys\n\
             iam = boto3.client('iam', endpoint_url=sys.argv[1], region_name=sys.argv[2], \
             aws_access_key_id='setup', aws_secret_access_key='setup')\n",
        );
        for u in users {
            script.push_str(&format!(
                "iam.create_user(UserName='{u}')\n\
                 iam.put_user_policy(UserName='{u}', PolicyName='colvault', PolicyDocument='{ALLOW_ALL}')\n\
                 k = iam.create_access_key(UserName='{u}')['AccessKey']\n\
                 print('{u}', k['AccessKeyId'], k['SecretAccessKey'])\n"
            ));
        }
        let out = run_python(&python, &script, &[&server.endpoint(), REGION]);
        let users = out
            .lines()
            .map(|l| {
                let mut w = l.split_whitespace();
                Credentials {
                    user: w.next().unwrap().to_string(),
                    access_key_id: w.next().unwrap().to_string(),
                    secret_access_key: w.next().unwrap().to_string(),
                }
            })
            .collect();
        Some(IamMoto { server, python, users })
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> &Credentials {
        self.users.iter().find(|u| u.user == name).unwrap()
    }

    /// The `AWS_*` environment of a process reaching KMS here as `who` (its credentials, which
    /// the shared S3 server takes without checking).
    pub fn kms_env(&self, who: &Credentials) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_KMS", self.server.endpoint()),
            ("AWS_ACCESS_KEY_ID", who.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", who.secret_access_key.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
        ]
    }

    /// Takes KMS away from `user` (its policy then allows S3 only), acting as the administrator
    /// (the first user).
    pub fn revoke_kms(&self, user: &str) {
        let admin = &self.users[0];
        let script = format!(
            "import boto3, sys\n\
             iam = boto3.client('iam', endpoint_url=sys.argv[1], region_name=sys.argv[2], \
             aws_access_key_id=sys.argv[3], aws_secret_access_key=sys.argv[4])\n\
             iam.put_user_policy(UserName='{user}', PolicyName='colvault', PolicyDocument='{S3_ONLY}')\n"
        );
        run_python(
            &self.python,
            &script,
            &[
                &self.server.endpoint(),
                REGION,
                &admin.access_key_id,
                &admin.secret_access_key,
            ],
        );
    }
}

fn run_python(python: &PathBuf, script: &str, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "IAM setup on moto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
