//! `--partition-by` on `table create` and `table import`, `table partitions` and
//! `table drop-partition` through the binary.

#[path = "common/cli_env.rs"]
mod cli_env;

use cli_env::Env;

/// 3 days by 2 regions, 4 rows each.
fn csv() -> String {
    let mut s = String::from("id,ds,region,amount\n");
    let mut id = 0;
    for day in 1..=3 {
        for region in ["eu", "us"] {
            for _ in 0..4 {
                s.push_str(&format!("{id},2024-01-0{day},{region},{}.5\n", id * 2));
                id += 1;
            }
        }
    }
    s
}

fn count(env: &Env, table: &str) -> u64 {
    env.json(&["table", "count", "./shop", table, "--json"])["rows"]
        .as_u64()
        .unwrap()
}

#[test]
fn import_and_create_partition_list_and_drop() {
    let env = Env::new();
    env.run(&["project", "create", "./shop", "--name", "shop", "--encrypt"]);
    std::fs::write(env.path().join("events.csv"), csv()).unwrap();

    // import --partition-by creates a table partitioned by the columns given.
    env.run(&[
        "table",
        "import",
        "./shop",
        "events",
        "events.csv",
        "--partition-by",
        "ds,region",
    ]);
    assert_eq!(count(&env, "events"), 24);
    let parts = env.json(&["table", "partitions", "./shop", "events", "--json"]);
    assert_eq!(parts["partition_by"], serde_json::json!(["ds", "region"]));
    let list = parts["partitions"].as_array().unwrap();
    assert_eq!(list.len(), 6, "{parts}");
    assert_eq!(list[0]["partition"], "ds=2024-01-01/region=eu");
    assert_eq!(list[0]["rows"], 4);
    assert_eq!(env.data_files("shop", "events").len(), 6, "a file per partition");
    let schema = env.json(&["table", "schema", "./shop", "events", "--json"]);
    assert_eq!(schema["partition_by"], serde_json::json!(["ds", "region"]));
    let text = env.run(&["table", "partitions", "./shop", "events"]);
    assert!(text.contains("ds=2024-01-03/region=us"), "{text}");

    // Appending keeps the partitioning; asking for other partition columns is refused.
    env.run(&["table", "import", "./shop", "events", "events.csv"]);
    assert_eq!(count(&env, "events"), 48);
    let err = env.fails(
        &[
            "table",
            "import",
            "./shop",
            "events",
            "events.csv",
            "--partition-by",
            "ds",
        ],
        2,
    );
    assert!(err.contains("partition columns are fixed"), "{err}");
    assert_eq!(count(&env, "events"), 48);

    // drop-partition: one commit, the partition's rows gone.
    let out = env.run(&["table", "drop-partition", "./shop", "events", "ds=2024-01-02/region=us"]);
    assert!(out.contains("2 file(s), 8 rows"), "{out}");
    assert_eq!(count(&env, "events"), 40);
    let parts = env.json(&["table", "partitions", "./shop", "events", "--json"]);
    assert_eq!(parts["partitions"].as_array().unwrap().len(), 5);
    let err = env.fails(
        &["table", "drop-partition", "./shop", "events", "ds=2024-01-02/region=us"],
        1,
    );
    assert!(err.contains("table partitions"), "{err}");
    let err = env.fails(&["table", "drop-partition", "./shop", "events", "ds=2024-01-02"], 1);
    assert!(err.contains("no value for partition column"), "{err}");

    // table create --partition-by; a column that cannot partition creates nothing.
    env.run(&[
        "table",
        "create",
        "./shop",
        "daily",
        "--schema",
        "ds:date32!,amount:float64",
        "--partition-by",
        "ds",
    ]);
    let parts = env.json(&["table", "partitions", "./shop", "daily", "--json"]);
    assert_eq!(parts["partition_by"], serde_json::json!(["ds"]));
    let err = env.fails(
        &[
            "table",
            "create",
            "./shop",
            "bad",
            "--schema",
            "ds:utf8,amount:float64",
            "--partition-by",
            "amount",
        ],
        1,
    );
    assert!(err.contains("partition column \"amount\" is Float64"), "{err}");
    env.fails(
        &[
            "table",
            "import",
            "./shop",
            "bad",
            "events.csv",
            "--partition-by",
            "nope",
        ],
        1,
    );
    let tables = env.run(&["table", "list", "./shop"]);
    assert!(!tables.contains("bad"), "{tables}");
    env.fails(
        &[
            "table",
            "create",
            "./shop",
            "bad",
            "--schema",
            "ds:utf8",
            "--partition-by",
            ",",
        ],
        2,
    );
}
