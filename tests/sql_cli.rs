//! `colvault sql` (feature `datafusion`) run as a user would: the binary, a temporary HOME, an
//! encrypted project; every output format, --explain, the prompt on stdin, and the error paths.
#![cfg(feature = "datafusion")]

#[path = "common/cli_env.rs"]
mod cli_env;

use cli_env::Env;

const CSV: &str = "id,city,amount\n\
                   1,Oslo,1.25\n\
                   2,Lima,\n\
                   3,Oslo,7.5\n\
                   4,Quito,2\n";

fn shop() -> Env {
    let env = Env::new();
    env.run(&["project", "create", "./shop", "--name", "shop", "--encrypt"]);
    env.run(&[
        "table",
        "create",
        "./shop",
        "orders",
        "--schema",
        "id:int64!,city:utf8,amount:float64",
    ]);
    std::fs::write(env.path().join("orders.csv"), CSV).unwrap();
    env.run(&["table", "import", "./shop", "orders", "orders.csv"]);
    env
}

#[test]
fn every_output_format() {
    let env = shop();
    let q = "SELECT city, count(*) AS n FROM orders GROUP BY city ORDER BY city";
    let table = env.run(&["sql", "./shop", q]);
    assert!(table.contains("| Oslo  | 2 |"), "{table}");
    // By name too, and PROJECT.TABLE.
    let table = env.run(&["sql", "shop", "SELECT count(*) AS n FROM shop.orders WHERE id > 1"]);
    assert!(table.contains("| 3 |"), "{table}");

    let csv = env.run(&["sql", "./shop", q, "--format", "csv"]);
    assert_eq!(csv, "city,n\nLima,1\nOslo,2\nQuito,1\n");

    let json = env.run(&["sql", "./shop", q, "--format", "json"]);
    let lines: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["city"], "Oslo");
    assert_eq!(lines[1]["n"], 2);

    env.run(&[
        "sql",
        "./shop",
        "SELECT * FROM orders",
        "--format",
        "parquet",
        "--output",
        "out.parquet",
    ]);
    let file = std::fs::File::open(env.path().join("out.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 4);
    // Parquet needs a file.
    let err = env.fails(&["sql", "./shop", "SELECT 1", "--format", "parquet"], 2);
    assert!(err.contains("--output"), "{err}");
    // CSV to a file.
    env.run(&["sql", "./shop", q, "--format", "csv", "--output", "out.csv"]);
    assert_eq!(std::fs::read_to_string(env.path().join("out.csv")).unwrap(), csv);
}

#[test]
fn explain_dml_and_the_prompt() {
    let env = shop();
    let plan = env.run(&["sql", "./shop", "SELECT * FROM orders WHERE id > 2", "--explain"]);
    assert!(plan.contains("ColvaultScanExec"), "{plan}");
    assert!(plan.contains("pruning=["), "{plan}");

    let before = env.json(&["table", "history", "./shop", "orders", "--json"]);
    env.run(&[
        "sql",
        "./shop",
        "INSERT INTO orders SELECT id + 10, city, amount FROM orders",
    ]);
    let after = env.json(&["table", "history", "./shop", "orders", "--json"]);
    assert_eq!(
        after.as_array().map(Vec::len),
        before.as_array().map(|v| v.len() + 1),
        "one commit: {after}"
    );

    // Statements from stdin, ended by ';' (a ';' in a string does not end one).
    let out = env
        .cmd()
        .args(["sql", "./shop", "--format", "csv"])
        .write_stdin(
            "CREATE TABLE oslo AS SELECT * FROM orders WHERE city = 'Oslo';\n\
             SELECT count(*) AS n FROM oslo;\nSELECT 'a;b' AS s\n;",
        )
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("n\n4\n"), "{out}");
    assert!(out.contains("s\na;b\n"), "{out}");
    let list = env.run(&["table", "list", "./shop"]);
    assert!(list.contains("oslo"), "{list}");
}

#[test]
fn errors_exit_with_their_codes() {
    let env = shop();
    let err = env.fails(&["sql", "./shop", "SELECT * FROM nope"], 1);
    assert!(err.contains("nope"), "{err}");
    let err = env.fails(&["sql", "./shop", "SELEKT 1"], 1);
    assert!(err.contains("SQL"), "{err}");
    let err = env.fails(&["sql", "./nothere", "SELECT 1"], 1);
    assert!(err.contains("not a project"), "{err}");
    // The project's key disabled: a key error (exit code 3).
    let show = env.json(&["project", "show", "./shop", "--json"]);
    let key = show["key"]["key_id"].as_str().unwrap().to_string();
    env.run(&["kms", "disable", &key]);
    let err = env.fails(&["sql", "./shop", "SELECT count(*) FROM orders WHERE id > 0"], 3);
    assert!(err.contains("disabled"), "{err}");
}
