//! `Config::from_toml` on any text: an error is fine, a panic is a bug.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = fulcrum::config::Config::from_toml(&text, Path::new("fuzz.toml"));
});
