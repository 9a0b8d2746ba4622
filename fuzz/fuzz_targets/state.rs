//! Restoring an execution from stored records of any bytes (its `ExecutionState` and its node
//! records, as the table holds them) either refuses them or gives an execution that any events then
//! step without a panic; the history view of the same records, and its report, are made without one.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use updraft_engine::exec::{Execution, Program};
use updraft_proto::Message;
use updraft_proto::updraft::{ExecutionState, NodeState};

fuzz_target!(|data: &[u8]| {
    static PROGRAM: OnceLock<Program> = OnceLock::new();
    let program = PROGRAM.get_or_init(common::program);
    let mut b = common::Bytes(data);
    let Ok(mut state) = ExecutionState::decode(b.chunk()) else {
        return;
    };
    // Most bytes would name another workflow or node count: make those fit, to go further.
    if b.byte() % 4 != 0 {
        state.workflow = program.workflow.clone();
        state.nodes = program.package.workflows[&program.workflow].nodes.len() as u32;
    }
    let mut nodes = Vec::new();
    for _ in 0..b.byte() % 16 {
        match NodeState::decode(b.chunk()) {
            Ok(n) => nodes.push(n),
            Err(_) => return,
        }
    }
    let mut view = updraft_engine::exec::history::ExecutionView::new(&state, &nodes);
    view.graph = Some(updraft_engine::exec::history::GraphView::of(
        &program.package.workflows[&program.workflow],
    ));
    let _ = updraft_console::report(&view, 0);
    let Ok(mut exec) = Execution::restore(program, state, nodes) else {
        return;
    };
    common::drive(&mut exec, &mut b);
});
