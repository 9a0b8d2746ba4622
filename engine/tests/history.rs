//! The history an execution records as it runs (phase changes, attempts with their times, errors,
//! cache use, what they made outside) and the view made from its stored records.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use updraft_engine::exec::history::ExecutionView;
use updraft_engine::exec::{
    Effect, ErrorKind, Event, ExecConfig, ExecPhase, Execution, Program, TaskLaunch, TaskStatus,
    TimerKind,
};
use updraft_engine::literal::primitive_lit;
use updraft_engine::{compile, yaml};
use updraft_proto::core::{Literal, LiteralCollection, LiteralMap, literal, primitive};

const WF: &str = r#"
version: 1
image: img:1
tasks:
  flaky: {type: python, module: m, function: flaky, inputs: {x: int}, outputs: {y: int}, retries: 2, timeout: 10s}
  square: {type: python, module: m, function: square, inputs: {x: int}, outputs: {y: int}, cache: {version: "1"}}
workflows:
  wf:
    inputs: {x: int, xs: "list[int]"}
    outputs: {y: "${a.y}", ys: "${m.y}"}
    nodes:
      - {id: a, task: flaky, inputs: {x: "${inputs.x}"}}
      - {id: m, map: {task: square}, inputs: {x: "${inputs.xs}"}}
"#;

fn int(i: i64) -> Literal {
    primitive_lit(primitive::Value::Integer(i))
}

fn outputs(y: i64) -> LiteralMap {
    LiteralMap {
        literals: [("y".to_string(), int(y))].into(),
    }
}

fn starts(fx: &[Effect]) -> Vec<TaskLaunch> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::StartTask(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// The execution as a runtime would have it after storing and restoring its records.
fn stored(program: &Program, exec: &Execution) -> (Execution, ExecutionView) {
    let nodes: Vec<_> = (0..exec.node_count() as u32)
        .filter_map(|i| exec.node_record(i))
        .collect();
    let state = exec.state_record();
    let view = ExecutionView::new(&state, &nodes);
    (Execution::restore(program, state, nodes).unwrap(), view)
}

#[test]
fn an_execution_records_its_nodes_phases_and_attempts_with_their_times() {
    let pkg = Arc::new(compile(&yaml::load("h.yaml", WF).unwrap()).unwrap());
    let program = Program {
        package: pkg,
        workflow: "wf".into(),
    };
    let t0 = 1_700_000_000_000u64;
    let mut exec = Execution::new(&program, ExecConfig::new("h")).unwrap();
    let xs = Literal {
        value: Some(literal::Value::Collection(LiteralCollection {
            literals: vec![int(2), int(3)],
        })),
        ..Default::default()
    };
    let fx = exec.step_at(
        Event::Start {
            inputs: LiteralMap {
                literals: [("x".to_string(), int(1)), ("xs".to_string(), xs)].into(),
            },
        },
        t0,
    );
    let launched = starts(&fx);
    assert_eq!(launched.len(), 3, "{fx:?}");
    let a = launched.iter().find(|t| t.node_id == "a").unwrap().node;
    let m = launched.iter().find(|t| t.node_id == "m").unwrap().node;
    // A runtime notes what an attempt made outside and where its logs are.
    exec.note_attempt(a, None, 0, "arn:job/1", &["https://logs/1".to_string()]);
    let task = |node, index, attempt, status| Event::Task {
        node,
        index,
        attempt,
        status,
    };
    // Each step goes through the records, as a runtime stores them between events.
    let (mut exec, _) = stored(&program, &exec);
    exec.step_at(task(a, None, 0, TaskStatus::Running), t0 + 100);
    exec.step_at(
        task(
            a,
            None,
            0,
            TaskStatus::Failed {
                code: "Boom".into(),
                message: "x".repeat(5000),
                kind: ErrorKind::User,
                recoverable: true,
            },
        ),
        t0 + 250,
    );
    let (mut exec, _) = stored(&program, &exec);
    // Attempt 1 runs past its timeout; attempt 2 succeeds.
    exec.step_at(
        Event::Timer {
            node: a,
            index: None,
            attempt: 1,
            kind: TimerKind::AttemptTimeout,
        },
        t0 + 10_300,
    );
    exec.step_at(task(a, None, 2, TaskStatus::Running), t0 + 10_400);
    exec.step_at(
        task(
            a,
            None,
            2,
            TaskStatus::Succeeded {
                outputs: outputs(2),
                cached: false,
            },
        ),
        t0 + 10_500,
    );
    // Element 0 is served from the cache; element 1 runs and succeeds.
    let (mut exec, _) = stored(&program, &exec);
    exec.step_at(
        task(
            m,
            Some(0),
            0,
            TaskStatus::Succeeded {
                outputs: outputs(4),
                cached: true,
            },
        ),
        t0 + 20,
    );
    exec.step_at(task(m, Some(1), 0, TaskStatus::Running), t0 + 30);
    // A late, duplicated status changes nothing in the history.
    exec.step_at(task(a, None, 0, TaskStatus::Running), t0 + 11_000);
    exec.step_at(
        task(
            m,
            Some(1),
            0,
            TaskStatus::Succeeded {
                outputs: outputs(9),
                cached: false,
            },
        ),
        t0 + 12_000,
    );
    assert_eq!(exec.phase(), ExecPhase::Succeeded);
    let (_, view) = stored(&program, &exec);

    assert_eq!(view.name, "h");
    assert_eq!(view.phase, "Succeeded");
    assert_eq!(view.started_ms, Some(t0));
    assert_eq!(view.ended_ms, Some(t0 + 12_000));
    let node = |id: &str| view.nodes.iter().find(|n| n.id == id).unwrap();

    let a = node("a");
    let phases: Vec<(&str, u64)> = a
        .phases
        .iter()
        .map(|p| (p.phase.as_str(), p.at_ms - t0))
        .collect();
    assert_eq!(
        phases,
        vec![("Queued", 0), ("Running", 100), ("Succeeded", 10_500)]
    );
    let attempts: Vec<_> = a
        .attempts
        .iter()
        .map(|r| {
            (
                r.attempt,
                r.queued_ms - t0,
                r.started_ms.map(|s| s - t0),
                r.ended_ms.map(|e| e - t0),
                r.phase.as_deref(),
                r.error.as_ref().map(|e| e.code.as_str()),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        vec![
            (0, 0, Some(100), Some(250), Some("Failed"), Some("Boom")),
            (
                1,
                250,
                None,
                Some(10_300),
                Some("TimedOut"),
                Some("Timeout")
            ),
            (
                2,
                10_300,
                Some(10_400),
                Some(10_500),
                Some("Succeeded"),
                None
            ),
        ]
    );
    let first = &a.attempts[0];
    assert_eq!(first.external.as_deref(), Some("arn:job/1"));
    assert_eq!(first.logs, vec!["https://logs/1".to_string()]);
    assert_eq!(first.name, "h-a-0");
    let message = &first.error.as_ref().unwrap().message;
    assert!(
        message.len() <= 1024 && message.ends_with("..."),
        "errors are kept bounded: {} bytes",
        message.len()
    );
    assert_eq!(first.error.as_ref().unwrap().kind, "user");
    assert_eq!(a.attempts[2].cache, "off");

    let m = node("m");
    let array = m.array.as_ref().unwrap();
    assert_eq!((array.size, array.succeeded, array.failed), (2, 2, 0));
    let elements: Vec<_> = array
        .elements
        .iter()
        .map(|e| {
            let r = &e.attempts[0];
            (
                e.phase.as_str(),
                r.cache.as_str(),
                r.started_ms.map(|s| s - t0),
                r.ended_ms.map(|s| s - t0),
                r.name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        elements,
        vec![
            ("Succeeded", "hit", None, Some(20), "h-m-0-0"),
            ("Succeeded", "miss", Some(30), Some(12_000), "h-m-1-0"),
        ]
    );
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["outputs"]["ys"], serde_json::json!([4, 9]));
    assert_eq!(json["inputs"]["x"], serde_json::json!(1));
}

#[test]
fn an_abort_ends_running_attempts_in_the_history() {
    let pkg = Arc::new(compile(&yaml::load("h.yaml", WF).unwrap()).unwrap());
    let program = Program {
        package: pkg,
        workflow: "wf".into(),
    };
    let mut exec = Execution::new(&program, ExecConfig::new("h")).unwrap();
    let xs = Literal {
        value: Some(literal::Value::Collection(LiteralCollection {
            literals: vec![int(2)],
        })),
        ..Default::default()
    };
    exec.step_at(
        Event::Start {
            inputs: LiteralMap {
                literals: [("x".to_string(), int(1)), ("xs".to_string(), xs)].into(),
            },
        },
        5_000,
    );
    exec.step_at(
        Event::Abort {
            reason: "stop".into(),
        },
        7_000,
    );
    let (_, view) = stored(&program, &exec);
    assert_eq!(view.phase, "Aborted");
    assert_eq!(view.ended_ms, Some(7_000));
    assert_eq!(view.error.as_ref().unwrap().message, "stop");
    for n in view
        .nodes
        .iter()
        .filter(|n| ["a", "m"].contains(&n.id.as_str()))
    {
        let attempts = match &n.array {
            Some(a) => a.elements[0].attempts.clone(),
            None => n.attempts.clone(),
        };
        assert_eq!(attempts.len(), 1, "{n:?}");
        assert_eq!(attempts[0].phase.as_deref(), Some("Aborted"), "{n:?}");
        assert_eq!(attempts[0].ended_ms, Some(7_000));
        assert_eq!(n.phases.last().unwrap().phase, "Aborted");
    }
}
