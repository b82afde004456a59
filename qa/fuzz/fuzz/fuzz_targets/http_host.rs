#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dc_fuzz::http_host(data));
