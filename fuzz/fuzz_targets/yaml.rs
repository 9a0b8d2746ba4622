//! YAML parsing, conversion and compilation never panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_engine::{compile, yaml};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pkg) = yaml::load("fuzz.yaml", text) {
            let _ = compile(&pkg);
        }
    }
});
