//! Fuzz target `import_parquet`: see `colvault::fuzzing::import_parquet`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::import_parquet(data));
