//! Stepping any sequence of events — task outputs (`outputs.pb`) and sub-workflows (`futures.pb`) of
//! any bytes, failures, timers, signals, children's ends, aborts — never panics.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use updraft_engine::exec::{Event, ExecConfig, Execution, Program};
use updraft_proto::core::LiteralMap;

fuzz_target!(|data: &[u8]| {
    static PROGRAM: OnceLock<Program> = OnceLock::new();
    let program = PROGRAM.get_or_init(common::program);
    let Ok(mut exec) = Execution::new(program, ExecConfig::new("fuzz")) else {
        return;
    };
    let _ = exec.step(Event::Start {
        inputs: LiteralMap::default(),
    });
    common::drive(&mut exec, &mut common::Bytes(data));
});
