//! The command line on S3, as a new user would try it: the moto server on loopback stands in for
//! the object store, configured only through the standard `AWS_*` environment variables.

#![cfg(feature = "s3")]

#[path = "common/cli_env.rs"]
mod cli_env;
#[path = "common/moto.rs"]
mod moto;
#[path = "common/stores.rs"]
mod stores;

use cli_env::Env;

const CSV: &str = "id,name,amount\n1,alice,1.25\n2,bob,\n3,carol,7.50\n";

/// The CLI with moto's environment.
/// The `AWS_*` variables a user would set.
type Vars = Vec<(&'static str, String)>;

fn s3_env(test: &str) -> Option<(Env, Vars, String)> {
    let server = moto::server(test)?;
    let bucket = server.bucket(test);
    Some((Env::new(), server.env(), bucket))
}

fn run(env: &Env, vars: &[(&str, String)], args: &[&str]) -> String {
    let mut c = env.cmd();
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = c.args(args).assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn project_on_s3_from_the_command_line() {
    let Some((env, vars, bucket)) = s3_env("cli_s3") else {
        return;
    };
    let url = format!("s3://{bucket}/sales");
    let created = run(
        &env,
        &vars,
        &["project", "create", &url, "--name", "sales", "--encrypt", "--json"],
    );
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["algorithm"], "aes256");
    std::fs::write(env.path().join("orders.csv"), CSV).unwrap();
    run(&env, &vars, &["table", "import", "sales", "orders", "orders.csv"]);
    run(&env, &vars, &["table", "import", "sales", "orders", "orders.csv"]);
    let count: serde_json::Value =
        serde_json::from_str(&run(&env, &vars, &["table", "count", "sales", "orders", "--json"])).unwrap();
    assert_eq!(count["rows"], 6);
    run(&env, &vars, &["table", "export", "sales", "orders", "out.csv"]);
    let out = std::fs::read_to_string(env.path().join("out.csv")).unwrap();
    assert_eq!(out.lines().count(), 7, "{out}");
    assert!(out.contains("carol"));
    run(&env, &vars, &["table", "verify", "sales", "orders"]);
    // By URL as well as by name.
    run(&env, &vars, &["table", "count", &url, "orders"]);
    run(&env, &vars, &["table", "compact", "sales", "orders"]);
    let vacuum = run(&env, &vars, &["project", "vacuum", "sales", "--grace-seconds", "0"]);
    assert!(vacuum.contains("removed"), "{vacuum}");
    let count: serde_json::Value =
        serde_json::from_str(&run(&env, &vars, &["table", "count", "sales", "orders", "--json"])).unwrap();
    assert_eq!(count["rows"], 6);

    // What the bucket holds: the settings, the table's objects, nothing in plaintext.
    stores::register_s3(moto::server("cli_s3").unwrap(), &bucket);
    let storage = colvault::storage::Storage::open(&url, false).unwrap();
    let objects = storage.list("").unwrap();
    let names: Vec<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    assert!(names.iter().any(|k| k.starts_with("project-")), "{names:?}");
    assert!(names.iter().any(|k| k.ends_with(".cvlt")), "{names:?}");
    for o in &objects {
        let bytes = storage.get(&o.name).unwrap().unwrap();
        assert!(
            !bytes.windows(5).any(|w| w == b"alice"),
            "{} holds a plaintext value",
            o.name
        );
    }

    // Without credentials in the environment: a clear usage error naming the variables, no
    // fallback to instance metadata over the network.
    let mut c = env.cmd();
    for (k, v) in &vars {
        if *k != "AWS_ACCESS_KEY_ID" {
            c.env(k, v);
        }
    }
    c.env_remove("AWS_ACCESS_KEY_ID");
    let out = c
        .args(["project", "create", &format!("s3://{bucket}/other"), "--name", "other"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
}
