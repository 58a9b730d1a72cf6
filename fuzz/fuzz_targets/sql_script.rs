#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_fuzzing::sql_script(data));
