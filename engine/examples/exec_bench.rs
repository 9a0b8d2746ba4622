//! Execution-engine benchmark: prints figures, asserts nothing on time.
//!
//! `cargo run --release -p updraft-engine --example exec_bench` runs each case in its own process:
//! - `transitions`: a 10,000-task layered workflow; the driver answers every start with Running then
//!   Succeeded at once; figure: events stepped per second on one core;
//! - `fanout`: 1,000 echo tasks reading one input, gathered by one node; figure: engine time per node;
//! - `chain`: 500 echo tasks in a chain; figure: engine time per node;
//! - `map100k`: a map of an echo task over 100,000 elements; figures: time and peak RSS.
//!
//! Echo tasks are served inside the engine, so these measure orchestration alone (no process start).

#![allow(clippy::unwrap_used)]

mod common;

use common::peak_rss_mb;

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use updraft_engine::exec::{Effect, Event, ExecConfig, ExecPhase, Execution, Program, TaskStatus};
use updraft_engine::literal::from_json;
use updraft_engine::{CompiledPackage, compile, types, yaml};
use updraft_proto::core::LiteralMap;

fn pkg(text: &str) -> Arc<CompiledPackage> {
    Arc::new(compile(&yaml::load("bench.yaml", text).unwrap()).unwrap_or_else(|p| panic!("{p}")))
}

/// Runs to the end, answering task starts at once; returns (events stepped, node phase changes).
fn drive(pkg: &Arc<CompiledPackage>, wf: &str, inputs: LiteralMap) -> (u64, u64) {
    let program = Program {
        package: pkg.clone(),
        workflow: wf.into(),
    };
    let mut exec = Execution::new(&program, ExecConfig::new("bench")).unwrap();
    let mut queue = VecDeque::from([Event::Start { inputs }]);
    let (mut events, mut changes) = (0u64, 0u64);
    while let Some(ev) = queue.pop_front() {
        events += 1;
        for e in exec.step(ev) {
            match e {
                Effect::StartTask(t) => {
                    let outputs = LiteralMap {
                        literals: [("y".to_string(), t.inputs.literals["x"].clone())].into(),
                    };
                    queue.push_back(Event::Task {
                        node: t.node,
                        index: t.index,
                        attempt: t.attempt,
                        status: TaskStatus::Running,
                    });
                    queue.push_back(Event::Task {
                        node: t.node,
                        index: t.index,
                        attempt: t.attempt,
                        status: TaskStatus::Succeeded {
                            outputs,
                            cached: false,
                        },
                    });
                }
                Effect::NodePhase { .. } => changes += 1,
                _ => {}
            }
        }
    }
    assert_eq!(exec.phase(), ExecPhase::Succeeded, "{:?}", exec.error());
    (events, changes)
}

fn int_input(n: i64) -> LiteralMap {
    LiteralMap {
        literals: [(
            "x".to_string(),
            from_json(&serde_json::json!(n), &types::parse("int").unwrap()).unwrap(),
        )]
        .into(),
    }
}

fn case(name: &str) {
    match name {
        "transitions" => {
            let mut s = String::from(
                "version: 1\nimage: i:1\ntasks:\n  t: {type: python, module: m, function: t, inputs: {x: int}, outputs: {y: int}}\nworkflows:\n  w:\n    inputs: {x: int}\n    nodes:\n",
            );
            for l in 0..100 {
                for w in 0..100 {
                    let src = if l == 0 {
                        "${inputs.x}".to_string()
                    } else {
                        format!("${{n{}_{w}.y}}", l - 1)
                    };
                    writeln!(
                        s,
                        "      - {{id: n{l}_{w}, task: t, inputs: {{x: \"{src}\"}}}}"
                    )
                    .unwrap();
                }
            }
            let p = pkg(&s);
            let t = Instant::now();
            let (events, changes) = drive(&p, "w", int_input(1));
            let secs = t.elapsed().as_secs_f64();
            println!(
                "transitions: 10,000 tasks, {events} events in {:.1} ms: {:.0} events/s, {:.0} node phase changes/s (one core)",
                secs * 1e3,
                events as f64 / secs,
                changes as f64 / secs
            );
        }
        "fanout" => {
            let mut s = String::from(
                "version: 1\ntasks:\n  e: {type: echo, inputs: {x: int}, outputs: {x: int}}\n  g: {type: echo, inputs: {xs: \"list[int]\"}, outputs: {xs: \"list[int]\"}}\nworkflows:\n  w:\n    inputs: {x: int}\n    nodes:\n",
            );
            let mut refs = Vec::new();
            for i in 0..1000 {
                writeln!(
                    s,
                    "      - {{id: leaf{i}, task: e, inputs: {{x: \"${{inputs.x}}\"}}}}"
                )
                .unwrap();
                refs.push(format!("\"${{leaf{i}.x}}\""));
            }
            writeln!(
                s,
                "      - {{id: gather, task: g, inputs: {{xs: [{}]}}}}",
                refs.join(", ")
            )
            .unwrap();
            let p = pkg(&s);
            let t = Instant::now();
            drive(&p, "w", int_input(1));
            let el = t.elapsed();
            println!(
                "fanout: 1,000 echo leaves + gather in {:.2} ms: {:.1} µs per node",
                el.as_secs_f64() * 1e3,
                el.as_secs_f64() * 1e6 / 1001.0
            );
        }
        "chain" => {
            let mut s = String::from(
                "version: 1\ntasks:\n  e: {type: echo, inputs: {x: int}, outputs: {x: int}}\nworkflows:\n  w:\n    inputs: {x: int}\n    nodes:\n",
            );
            for i in 0..500 {
                let src = if i == 0 {
                    "${inputs.x}".to_string()
                } else {
                    format!("${{c{}.x}}", i - 1)
                };
                writeln!(s, "      - {{id: c{i}, task: e, inputs: {{x: \"{src}\"}}}}").unwrap();
            }
            let p = pkg(&s);
            let t = Instant::now();
            drive(&p, "w", int_input(1));
            let el = t.elapsed();
            println!(
                "chain: 500 echo nodes in {:.2} ms: {:.1} µs per node",
                el.as_secs_f64() * 1e3,
                el.as_secs_f64() * 1e6 / 500.0
            );
        }
        "map100k" => {
            let p = pkg(
                "version: 1\ntasks:\n  e: {type: echo, inputs: {x: int}, outputs: {x: int}}\nworkflows:\n  w:\n    inputs: {xs: \"list[int]\"}\n    outputs: {ys: \"${m.x}\"}\n    nodes:\n      - {id: m, map: {task: e}, inputs: {x: \"${inputs.xs}\"}}\n",
            );
            let xs: Vec<i64> = (0..100_000).collect();
            let lit =
                from_json(&serde_json::json!(xs), &types::parse("list[int]").unwrap()).unwrap();
            let t = Instant::now();
            drive(
                &p,
                "w",
                LiteralMap {
                    literals: [("xs".to_string(), lit)].into(),
                },
            );
            let el = t.elapsed();
            println!(
                "map100k: 100,000 echo elements in {:.0} ms ({:.2} µs per element); peak RSS {:.0} MiB",
                el.as_secs_f64() * 1e3,
                el.as_secs_f64() * 1e6 / 1e5,
                peak_rss_mb()
            );
        }
        other => panic!("unknown case {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(c) = args.first() {
        case(c);
        return;
    }
    let me = std::env::current_exe().unwrap();
    for c in ["transitions", "fanout", "chain", "map100k"] {
        assert!(
            std::process::Command::new(&me)
                .arg(c)
                .status()
                .unwrap()
                .success(),
            "{c} failed"
        );
    }
}
