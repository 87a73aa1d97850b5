//! Fuzz target `keystore`: see `colvault::fuzzing::keystore`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::keystore(data));
