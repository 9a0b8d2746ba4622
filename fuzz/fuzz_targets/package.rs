//! Package decoding and compilation never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_engine::{Limits, Package, compile};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_entry_bytes: 1 << 20,
        max_total_bytes: 8 << 20,
        ..Limits::default()
    };
    if let Ok(pkg) = Package::from_tgz("fuzz.tgz", data, limits) {
        let _ = compile(&pkg);
    }
});
