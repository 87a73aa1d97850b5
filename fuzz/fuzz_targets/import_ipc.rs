//! Fuzz target `import_ipc`: see `colvault::fuzzing::import_ipc`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::import_ipc(data));
