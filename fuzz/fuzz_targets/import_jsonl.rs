//! Fuzz target `import_jsonl`: see `colvault::fuzzing::import_jsonl`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::import_jsonl(data));
