//! Fuzz target `import_csv`: see `colvault::fuzzing::import_csv`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::import_csv(data));
