//! The execution engine, driven by a scripted runtime: tasks are Rust closures standing in for the task
//! code; timers fire at once; signals are sent by the tests. Then a seeded simulation with duplicated,
//! reordered and late events and crashes between effect and commit.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use updraft_engine::exec::{
    Effect, ErrorKind, Event, ExecConfig, ExecError, ExecPhase, Execution, NodePhase, Program,
    TaskLaunch, TaskStatus, TimerKind,
};
use updraft_engine::literal::{from_json, none_lit, primitive_lit};
use updraft_engine::{CompiledPackage, Limits, Package, compile, types, yaml};
use updraft_proto::core::{DynamicJobSpec, Literal, LiteralMap, literal, primitive, scalar};

/// A task's behaviour: (task name, inputs, attempt, array index) → status.
type Behaviour = dyn Fn(&str, &LiteralMap, u32, Option<u32>) -> TaskStatus;

fn int(l: &Literal) -> i64 {
    let l = match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Union(u)) => u.value.as_deref().unwrap(),
            _ => l,
        },
        _ => l,
    };
    match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => match p.value {
                Some(primitive::Value::Integer(i)) => i,
                ref other => panic!("not an int: {other:?}"),
            },
            other => panic!("not a primitive: {other:?}"),
        },
        other => panic!("not a scalar: {other:?}"),
    }
}

fn ints(l: &Literal) -> Vec<Option<i64>> {
    match &l.value {
        Some(literal::Value::Collection(c)) => c
            .literals
            .iter()
            .map(|x| match &x.value {
                Some(literal::Value::Scalar(s))
                    if matches!(s.value, Some(scalar::Value::NoneType(_))) =>
                {
                    None
                }
                _ => Some(int(x)),
            })
            .collect(),
        other => panic!("not a list: {other:?}"),
    }
}

fn lit_int(i: i64) -> Literal {
    primitive_lit(primitive::Value::Integer(i))
}

fn lit_str(s: &str) -> Literal {
    primitive_lit(primitive::Value::StringValue(s.into()))
}

fn ok(pairs: Vec<(&str, Literal)>) -> TaskStatus {
    TaskStatus::Succeeded {
        outputs: LiteralMap {
            literals: pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        },
        cached: false,
    }
}

fn user_error(recoverable: bool) -> TaskStatus {
    TaskStatus::Failed {
        code: "Boom".into(),
        message: "the task raised".into(),
        kind: ErrorKind::User,
        recoverable,
    }
}

/// Drives an execution to the end, answering effects in order; records every task attempt started.
struct Driver {
    exec: Execution,
    started: Vec<TaskLaunch>,
    aborted: Vec<String>,
    children: Vec<String>,
    phases: Vec<(u32, NodePhase)>,
    queue: VecDeque<Event>,
    finished: Option<(ExecPhase, Option<LiteralMap>)>,
}

impl Driver {
    fn new(pkg: &Arc<CompiledPackage>, wf: &str, config: ExecConfig) -> Self {
        let program = Program {
            package: pkg.clone(),
            workflow: wf.into(),
        };
        Self::of(&program, config)
    }

    fn of(program: &Program, config: ExecConfig) -> Self {
        Self {
            exec: Execution::new(program, config).unwrap(),
            started: vec![],
            aborted: vec![],
            children: vec![],
            phases: vec![],
            queue: VecDeque::new(),
            finished: None,
        }
    }

    fn apply(&mut self, effects: Vec<Effect>, behave: &Behaviour) {
        for e in effects {
            match e {
                Effect::StartTask(t) => {
                    let status = behave(&t.task, &t.inputs, t.attempt, t.index);
                    self.queue.push_back(Event::Task {
                        node: t.node,
                        index: t.index,
                        attempt: t.attempt,
                        status: TaskStatus::Running,
                    });
                    self.queue.push_back(Event::Task {
                        node: t.node,
                        index: t.index,
                        attempt: t.attempt,
                        status,
                    });
                    self.started.push(t);
                }
                Effect::Timer {
                    node,
                    index,
                    attempt,
                    kind,
                    ..
                } => self.queue.push_back(Event::Timer {
                    node,
                    index,
                    attempt,
                    kind,
                }),
                Effect::AbortTask { name, .. } => self.aborted.push(name),
                Effect::StartChild { name, .. } | Effect::AbortChild { name, .. } => {
                    self.children.push(name)
                }
                Effect::StartDynamic {
                    node,
                    program,
                    name,
                    ..
                } => {
                    // The sub-workflow runs to its end as a child execution; its tasks count as started.
                    let (result, started) = run_child(&program, &name, behave);
                    self.started.extend(started);
                    self.children.push(name);
                    self.queue.push_back(Event::Child { node, result });
                }
                Effect::NodePhase { node, phase } => self.phases.push((node, phase)),
                Effect::Finished { phase, outputs, .. } => self.finished = Some((phase, outputs)),
            }
        }
    }

    fn run(&mut self, inputs: LiteralMap, behave: &Behaviour) -> ExecPhase {
        let fx = self.exec.step(Event::Start { inputs });
        self.apply(fx, behave);
        self.pump(behave)
    }

    fn pump(&mut self, behave: &Behaviour) -> ExecPhase {
        let mut guard = 0;
        while let Some(ev) = self.queue.pop_front() {
            guard += 1;
            assert!(guard < 1_000_000, "runaway");
            let fx = self.exec.step(ev);
            self.apply(fx, behave);
        }
        self.exec.phase()
    }

    fn output(&self, name: &str) -> Literal {
        self.exec.outputs().unwrap().literals[name].clone()
    }
}

/// Runs a child execution (no inputs) fault-free: its result as the parent sees it, and its task attempts.
fn run_child(
    program: &Program,
    name: &str,
    behave: &Behaviour,
) -> (Result<LiteralMap, ExecError>, Vec<TaskLaunch>) {
    let mut d = Driver::of(program, ExecConfig::new(name));
    let phase = d.run(LiteralMap::default(), behave);
    let result = match phase {
        ExecPhase::Succeeded => Ok(d.exec.outputs().cloned().unwrap()),
        _ => Err(d.exec.error().cloned().unwrap()),
    };
    (result, d.started)
}

fn yaml_pkg(text: &str) -> Arc<CompiledPackage> {
    Arc::new(compile(&yaml::load("t.yaml", text).unwrap()).unwrap_or_else(|p| panic!("{p}")))
}

fn fixture_pkg(names: &[&str]) -> Arc<CompiledPackage> {
    let mut pkg = Package::default();
    for n in names {
        let bytes = std::fs::read(format!(
            "{}/../tests/fixtures/flytekit/{n}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        pkg.merge(Package::from_tgz(n, &bytes, Limits::default()).unwrap())
            .unwrap();
    }
    Arc::new(compile(&pkg).unwrap())
}

fn inputs(pairs: &[(&str, Literal)]) -> LiteralMap {
    LiteralMap {
        literals: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// Python tasks of the flytekit fixtures, in Rust.
fn fixture_tasks(task: &str, i: &LiteralMap, _attempt: u32, index: Option<u32>) -> TaskStatus {
    let get = |k: &str| int(&i.literals[k]);
    let elem = |k: &str| ints(&i.literals[k])[index.unwrap() as usize].unwrap();
    match task.rsplit('.').next().unwrap() {
        "double" => ok(vec![("o0", lit_int(2 * get("x")))]),
        "negate" => ok(vec![("o0", lit_int(-get("x")))]),
        "square" => ok(vec![("o0", lit_int(get("x") * get("x")))]),
        "describe" => ok(vec![(
            "o0",
            lit_str(&format!("{}->{}", get("base"), get("y"))),
        )]),
        "add" => ok(vec![("o0", lit_int(get("a") + get("b")))]),
        "mul" => ok(vec![("o0", lit_int(get("a") * get("b")))]),
        "inc" => ok(vec![("o0", lit_int(get("x") + 1))]),
        "join" => ok(vec![(
            "o0",
            lit_str(
                &ints(&i.literals["xs"])
                    .into_iter()
                    .map(|x| x.unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        )]),
        "fan_out" => TaskStatus::Dynamic {
            spec: Box::new(fan_out_spec()),
        },
        "total" => ok(vec![(
            "o0",
            lit_int(ints(&i.literals["xs"]).into_iter().flatten().sum()),
        )]),
        t if t.starts_with("map_square") => ok(vec![("o0", lit_int(elem("x") * elem("x")))]),
        t if t.starts_with("map_scale") => ok(vec![("o0", lit_int(elem("x") * get("factor")))]),
        t if t.starts_with("map_picky") => {
            let x = elem("x");
            if x % 3 == 0 {
                user_error(false)
            } else {
                ok(vec![("o0", lit_int(x + 100))])
            }
        }
        other => panic!("no behaviour for {other}"),
    }
}

#[test]
fn branches_pick_the_right_case_or_fail() {
    let pkg = fixture_pkg(&["branches.tgz"]);
    let wf = "fixtures.branches.branch_wf";
    for (x, want) in [(3, "10->6"), (12, "10->400"), (-4, "10->4")] {
        let mut d = Driver::new(&pkg, wf, ExecConfig::new("b"));
        assert_eq!(
            d.run(
                inputs(&[("x", lit_int(x)), ("base", lit_int(10))]),
                &fixture_tasks
            ),
            ExecPhase::Succeeded,
            "x={x}"
        );
        assert_eq!(d.output("o0"), lit_str(want), "x={x}");
        // Exactly one case ran; the others were skipped.
        let skipped = d
            .phases
            .iter()
            .filter(|(_, p)| *p == NodePhase::Skipped)
            .count();
        assert_eq!(skipped, 2, "x={x}");
    }
    let mut d = Driver::new(&pkg, wf, ExecConfig::new("b"));
    assert_eq!(
        d.run(
            inputs(&[("x", lit_int(0)), ("base", lit_int(10))]),
            &fixture_tasks
        ),
        ExecPhase::Failed
    );
    assert_eq!(d.exec.error().unwrap().message, "x must not be zero");
}

#[test]
fn subworkflows_run_inline() {
    let pkg = fixture_pkg(&["subworkflows.tgz"]);
    let mut d = Driver::new(&pkg, "fixtures.subworkflows.outer", ExecConfig::new("s"));
    assert_eq!(
        d.run(inputs(&[("x", lit_int(3))]), &fixture_tasks),
        ExecPhase::Succeeded
    );
    // inner(3, 2): s=5, p=10; inner(10, 5): s=15, p=75; add(15, 75) = 90
    assert_eq!(int(&d.output("o0")), 90);
    assert_eq!(d.started.len(), 5);
    assert!(
        d.started.iter().any(|t| t.node_id == "n1-n0"),
        "{:?}",
        d.started.iter().map(|t| &t.node_id).collect::<Vec<_>>()
    );
}

#[test]
fn map_tasks_gather_outputs_and_tolerate_failures_by_ratio() {
    let pkg = fixture_pkg(&["maps.tgz"]);
    let mut d = Driver::new(&pkg, "fixtures.maps.maps_wf", ExecConfig::new("m"));
    let xs = from_json(
        &serde_json::json!([1, 2, 3, 4, 5]),
        &types::parse("list[int]").unwrap(),
    )
    .unwrap();
    assert_eq!(
        d.run(inputs(&[("xs", xs)]), &fixture_tasks),
        ExecPhase::Succeeded
    );
    assert_eq!(
        ints(&d.output("o0")),
        vec![Some(1), Some(4), Some(9), Some(16), Some(25)]
    );
    assert_eq!(
        ints(&d.output("o1")),
        vec![Some(3), Some(6), Some(9), Some(12), Some(15)]
    );
    assert_eq!(
        ints(&d.output("o2")),
        vec![Some(101), Some(102), None, Some(104), Some(105)]
    );
    assert_eq!(int(&d.output("o3")), 55);
    // Parallelism 2 on the squares: at no point were more than two of its elements started but unfinished.
    let square_elems = d
        .started
        .iter()
        .filter(|t| t.task.contains("map_square"))
        .count();
    assert_eq!(square_elems, 5);

    // 2 of 5 failing is too many for min_success_ratio 0.5 only when more than 2 fail.
    let xs = from_json(
        &serde_json::json!([3, 6, 9, 1]),
        &types::parse("list[int]").unwrap(),
    )
    .unwrap();
    let mut d = Driver::new(&pkg, "fixtures.maps.maps_wf", ExecConfig::new("m2"));
    assert_eq!(
        d.run(inputs(&[("xs", xs)]), &fixture_tasks),
        ExecPhase::Failed
    );
    assert!(
        d.exec
            .error()
            .unwrap()
            .message
            .contains("of the array's elements failed"),
        "{:?}",
        d.exec.error()
    );
}

const RETRY: &str = r#"
version: 1
image: img:1
tasks:
  flaky: {type: python, module: m, function: flaky, inputs: {x: int}, outputs: {y: int}, retries: 2}
  after: {type: python, module: m, function: after, inputs: {y: int}, outputs: {z: int}}
  side: {type: python, module: m, function: side, inputs: {x: int}, outputs: {y: int}}
workflows:
  wf:
    inputs: {x: int}
    outputs: {z: "${b.z}"}
    nodes:
      - {id: a, task: flaky, inputs: {x: "${inputs.x}"}}
      - {id: b, task: after, inputs: {y: "${a.y}"}}
      - {id: c, task: side, inputs: {x: "${inputs.x}"}}
"#;

fn retry_behaviour(
    fail_first: u32,
    kind: ErrorKind,
    recoverable: bool,
) -> impl Fn(&str, &LiteralMap, u32, Option<u32>) -> TaskStatus {
    move |task, i, attempt, _| match task {
        "flaky" if attempt < fail_first => TaskStatus::Failed {
            code: "E".into(),
            message: format!("attempt {attempt}"),
            kind,
            recoverable,
        },
        "flaky" | "side" => ok(vec![("y", lit_int(int(&i.literals["x"]) + 1))]),
        "after" => ok(vec![("z", lit_int(int(&i.literals["y"]) * 10))]),
        _ => unreachable!(),
    }
}

#[test]
fn user_retries_are_bounded_by_the_task() {
    let pkg = yaml_pkg(RETRY);
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("r"));
    assert_eq!(
        d.run(
            inputs(&[("x", lit_int(1))]),
            &retry_behaviour(2, ErrorKind::User, true)
        ),
        ExecPhase::Succeeded
    );
    assert_eq!(int(&d.output("z")), 20);
    let attempts: Vec<u32> = d
        .started
        .iter()
        .filter(|t| t.task == "flaky")
        .map(|t| t.attempt)
        .collect();
    assert_eq!(attempts, vec![0, 1, 2]);
    let names: BTreeSet<&String> = d.started.iter().map(|t| &t.name).collect();
    assert_eq!(
        names.len(),
        d.started.len(),
        "every attempt has its own name"
    );

    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("r"));
    assert_eq!(
        d.run(
            inputs(&[("x", lit_int(1))]),
            &retry_behaviour(3, ErrorKind::User, true)
        ),
        ExecPhase::Failed
    );
    assert_eq!(d.exec.error().unwrap().message, "attempt 2");
    // The dependent was skipped; the independent node still ran (FAIL_IMMEDIATELY aborts only what runs).
    assert!(
        d.phases.contains(&(1, NodePhase::Skipped))
            || d.phases.iter().any(|(_, p)| *p == NodePhase::Aborted)
    );
}

#[test]
fn non_recoverable_errors_are_not_retried_and_system_errors_have_their_own_budget() {
    let pkg = yaml_pkg(RETRY);
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("r"));
    assert_eq!(
        d.run(
            inputs(&[("x", lit_int(1))]),
            &retry_behaviour(1, ErrorKind::User, false)
        ),
        ExecPhase::Failed
    );
    assert_eq!(d.started.iter().filter(|t| t.task == "flaky").count(), 1);

    // Two user retries allowed, but system errors draw on the system budget (3 by default).
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("r"));
    assert_eq!(
        d.run(
            inputs(&[("x", lit_int(1))]),
            &retry_behaviour(3, ErrorKind::System, true)
        ),
        ExecPhase::Succeeded
    );
    assert_eq!(d.started.iter().filter(|t| t.task == "flaky").count(), 4);
    let mut cfg = ExecConfig::new("r");
    cfg.system_retries = 1;
    let mut d = Driver::new(&pkg, "wf", cfg);
    assert_eq!(
        d.run(
            inputs(&[("x", lit_int(1))]),
            &retry_behaviour(3, ErrorKind::System, true)
        ),
        ExecPhase::Failed
    );
}

#[test]
fn stale_and_duplicate_events_change_nothing() {
    let pkg = yaml_pkg(RETRY);
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("r"));
    let fx = d.exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(1))]),
    });
    let a = match &fx[..] {
        [.., Effect::StartTask(t), _] | [.., Effect::StartTask(t)] => t.node,
        _ => panic!("{fx:?}"),
    };
    // A success for attempt 5 (never started) is ignored; a second Start is ignored.
    assert!(
        d.exec
            .step(Event::Task {
                node: a,
                index: None,
                attempt: 5,
                status: ok(vec![("y", lit_int(9))])
            })
            .is_empty()
    );
    assert!(
        d.exec
            .step(Event::Start {
                inputs: LiteralMap::default()
            })
            .is_empty()
    );
    d.apply(fx, &retry_behaviour(0, ErrorKind::User, true));
    assert_eq!(
        d.pump(&retry_behaviour(0, ErrorKind::User, true)),
        ExecPhase::Succeeded
    );
    // After the end, nothing changes.
    assert!(
        d.exec
            .step(Event::Task {
                node: a,
                index: None,
                attempt: 0,
                status: user_error(true)
            })
            .is_empty()
    );
    assert!(
        d.exec
            .step(Event::Abort {
                reason: "late".into()
            })
            .is_empty()
    );
    assert_eq!(d.exec.phase(), ExecPhase::Succeeded);
}

#[test]
fn an_attempt_is_over_only_once_it_cannot_start_again() {
    let pkg = yaml_pkg(RETRY);
    let mut exec = Driver::new(&pkg, "wf", ExecConfig::new("o")).exec;
    // Not started: a message starting it may still come (again).
    assert!(!exec.attempt_over(0, None, 0));
    let fx = exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(1))]),
    });
    let a = fx
        .iter()
        .find_map(|e| match e {
            Effect::StartTask(t) if t.task == "flaky" => Some(t.node),
            _ => None,
        })
        .unwrap();
    assert!(!exec.attempt_over(a, None, 0), "running");
    let fx = exec.step(Event::Task {
        node: a,
        index: None,
        attempt: 0,
        status: user_error(true),
    });
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::StartTask(t) if t.attempt == 1))
    );
    assert!(exec.attempt_over(a, None, 0), "a retry runs in its place");
    assert!(!exec.attempt_over(a, None, 1));
    assert!(!exec.attempt_over(a, None, 2), "never started");
    exec.step(Event::Task {
        node: a,
        index: None,
        attempt: 1,
        status: ok(vec![("y", lit_int(2))]),
    });
    assert!(exec.attempt_over(a, None, 1), "its node succeeded");
    assert!(!exec.attempt_over(99, None, 0), "no such node");
    exec.step(Event::Abort {
        reason: "enough".into(),
    });
    assert!(exec.attempt_over(a, None, 2), "the execution ended");
}

#[test]
fn abort_stops_running_work() {
    let pkg = yaml_pkg(RETRY);
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("ab"));
    let fx = d.exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(1))]),
    });
    let started = fx
        .iter()
        .filter(|e| matches!(e, Effect::StartTask(_)))
        .count();
    assert_eq!(started, 2, "a and c start together");
    let fx = d.exec.step(Event::Abort {
        reason: "user asked".into(),
    });
    let aborts = fx
        .iter()
        .filter(|e| matches!(e, Effect::AbortTask { .. }))
        .count();
    assert_eq!(aborts, 2);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Finished {
            phase: ExecPhase::Aborted,
            ..
        }
    )));
    assert_eq!(d.exec.error().unwrap().message, "user asked");
}

#[test]
fn fail_stops_running_work_and_fails_with_the_reason() {
    let pkg = yaml_pkg(RETRY);
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("fl"));
    d.exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(1))]),
    });
    let fx = d.exec.step(Event::Fail {
        code: "PoisonMessage".into(),
        message: "a message could not be processed".into(),
    });
    let aborts = fx
        .iter()
        .filter(|e| matches!(e, Effect::AbortTask { .. }))
        .count();
    assert_eq!(aborts, 2, "both running attempts are stopped");
    assert_eq!(d.exec.phase(), ExecPhase::Failed);
    let err = d.exec.error().unwrap();
    assert_eq!(
        (err.code.as_str(), err.kind),
        ("PoisonMessage", ErrorKind::System)
    );
    // Nothing moves a finished execution.
    assert!(
        d.exec
            .step(Event::Abort {
                reason: "late".into()
            })
            .is_empty()
    );
}

const GATES: &str = r#"
version: 1
image: img:1
tasks:
  report: {type: echo, inputs: {text: str}, outputs: {text: str}}
workflows:
  wf:
    inputs: {text: str}
    outputs: {approved: "${ok.text}", note: "${note.value}"}
    nodes:
      - {id: pause, gate: {sleep: 5s}}
      - {id: note, gate: {signal: review-note, type: str}, after: [pause]}
      - {id: ok, gate: {approve: publish}, inputs: {text: "${inputs.text}"}}
"#;

#[test]
fn gates_sleep_wait_for_signals_and_approvals() {
    let pkg = yaml_pkg(GATES);
    let behave = |_: &str, _: &LiteralMap, _: u32, _: Option<u32>| -> TaskStatus { unreachable!() };
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("g"));
    // The approval arrives before its gate is reached: it is kept.
    d.exec.step(Event::Signal {
        id: "publish".into(),
        value: Box::new(primitive_lit(primitive::Value::Boolean(true))),
    });
    assert_eq!(
        d.run(inputs(&[("text", lit_str("draft"))]), &behave),
        ExecPhase::Running,
        "waiting for the note"
    );
    // A value of the wrong type does not end the wait.
    d.exec.step(Event::Signal {
        id: "review-note".into(),
        value: Box::new(lit_int(3)),
    });
    assert_eq!(d.exec.phase(), ExecPhase::Running);
    let fx = d.exec.step(Event::Signal {
        id: "review-note".into(),
        value: Box::new(lit_str("lgtm")),
    });
    d.apply(fx, &behave);
    assert_eq!(d.exec.phase(), ExecPhase::Succeeded);
    assert_eq!(d.output("approved"), lit_str("draft"));
    assert_eq!(d.output("note"), lit_str("lgtm"));

    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("g2"));
    d.run(inputs(&[("text", lit_str("draft"))]), &behave);
    d.exec.step(Event::Signal {
        id: "publish".into(),
        value: Box::new(primitive_lit(primitive::Value::Boolean(false))),
    });
    d.exec.step(Event::Signal {
        id: "review-note".into(),
        value: Box::new(lit_str("no")),
    });
    assert_eq!(d.exec.phase(), ExecPhase::Failed);
    assert!(d.exec.error().unwrap().message.contains("was not approved"));
}

const TIMEOUTS: &str = r#"
version: 1
image: img:1
tasks:
  slow: {type: python, module: m, function: slow, inputs: {x: int}, outputs: {y: int}, timeout: 10s, retries: 1}
workflows:
  wf:
    inputs: {x: int}
    outputs: {y: "${a.y}"}
    nodes:
      - {id: a, task: slow, inputs: {x: "${inputs.x}"}}
"#;

#[test]
fn attempt_timeouts_abort_and_retry() {
    let pkg = yaml_pkg(TIMEOUTS);
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("t"));
    let fx = d.exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(1))]),
    });
    let (node, timer) = fx
        .iter()
        .find_map(|e| match e {
            Effect::Timer {
                node, kind, after, ..
            } => Some((*node, (*kind, *after))),
            _ => None,
        })
        .unwrap();
    assert_eq!(timer.1.as_secs(), 10);
    // The timer fires before the task reports: attempt 0 is aborted, attempt 1 starts.
    let fx = d.exec.step(Event::Timer {
        node,
        index: None,
        attempt: 0,
        kind: timer.0,
    });
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::AbortTask { attempt: 0, .. })),
        "{fx:?}"
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::StartTask(t) if t.attempt == 1)),
        "{fx:?}"
    );
    // The late success of attempt 0 is ignored; attempt 1's counts.
    assert!(
        d.exec
            .step(Event::Task {
                node,
                index: None,
                attempt: 0,
                status: ok(vec![("y", lit_int(7))])
            })
            .is_empty()
    );
    d.exec.step(Event::Task {
        node,
        index: None,
        attempt: 1,
        status: ok(vec![("y", lit_int(2))]),
    });
    assert_eq!(d.exec.phase(), ExecPhase::Succeeded);
    assert_eq!(int(&d.exec.outputs().unwrap().literals["y"]), 2);
}

#[test]
fn cache_keys_come_with_cached_tasks() {
    let pkg = Arc::new(
        compile(
            &yaml::load(
                "hello.yaml",
                &std::fs::read_to_string(format!(
                    "{}/../examples/hello.yaml",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            )
            .unwrap(),
        )
        .unwrap(),
    );
    let mut d = Driver::new(&pkg, "hello", ExecConfig::new("c"));
    let behave = |task: &str, i: &LiteralMap, _: u32, _: Option<u32>| match task {
        "square" => ok(vec![("y", lit_int(int(&i.literals["x"]).pow(2)))]),
        "total" => ok(vec![(
            "sum",
            lit_int(ints(&i.literals["xs"]).into_iter().flatten().sum()),
        )]),
        "shout" => ok(vec![("loud", lit_str("BIG!"))]),
        other => panic!("{other}"),
    };
    let numbers = from_json(
        &serde_json::json!([1, 2, 3, 4]),
        &types::parse("list[int]").unwrap(),
    )
    .unwrap();
    let phase = d.run(
        inputs(&[("numbers", numbers), ("name", lit_str("world"))]),
        &behave,
    );
    assert_eq!(phase, ExecPhase::Succeeded);
    assert_eq!(int(&d.output("sum")), 30);
    assert_eq!(
        d.output("message"),
        lit_str("world"),
        "30 is not > 100: the echo case ran in the engine"
    );
    let squares: Vec<&TaskLaunch> = d.started.iter().filter(|t| t.task == "square").collect();
    assert_eq!(squares.len(), 4);
    let keys: BTreeSet<&String> = squares
        .iter()
        .map(|t| t.cache_key.as_ref().unwrap())
        .collect();
    assert_eq!(keys.len(), 4, "a key per distinct input");
    assert!(
        d.started
            .iter()
            .filter(|t| t.task == "total")
            .all(|t| t.cache_key.is_none())
    );
    // Elements of a YAML map get their own element as input.
    assert_eq!(int(&squares[2].inputs.literals["x"]), 3);
}

#[test]
fn an_attempt_waiting_on_a_serialized_cache_key_looks_again_until_it_ends() {
    let pkg = yaml_pkg(
        r#"
version: 1
image: python:3.12
tasks:
  slow: {type: container, command: [sh, -c, "true"], inputs: {x: int}, outputs: {}, cache: {version: "1", serializable: true}, timeout: 60s}
workflows:
  wf:
    inputs: {x: int}
    nodes: [{id: a, task: slow, inputs: {x: "${inputs.x}"}}]
"#,
    );
    let program = Program {
        package: pkg,
        workflow: "wf".into(),
    };
    let mut exec = Execution::new(&program, ExecConfig::new("w")).unwrap();
    let fx = exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(3))]),
    });
    let first = starts_of(&fx);
    assert_eq!(first.len(), 1);
    let launch = first[0].clone();
    assert!(launch.cache_serializable && launch.cache_key.is_some());
    let wait = |attempt| Event::Timer {
        node: launch.node,
        index: None,
        attempt,
        kind: TimerKind::CacheWait,
    };
    // The runtime found the key held and waited: the same attempt is asked for again, with no second
    // timeout timer.
    let again = exec.step(wait(0));
    assert_eq!(again, vec![Effect::StartTask(launch.clone())]);
    // A wait for another attempt changes nothing.
    assert!(exec.step(wait(1)).is_empty());
    // Once the attempt has ended (answered from the cache), a late wait starts nothing.
    exec.step(Event::Task {
        node: launch.node,
        index: None,
        attempt: 0,
        status: TaskStatus::Succeeded {
            outputs: LiteralMap::default(),
            cached: true,
        },
    });
    assert_eq!(exec.phase(), ExecPhase::Succeeded);
    assert!(exec.step(wait(0)).is_empty());
}

// ---------- deterministic simulation ----------

/// A small deterministic generator (xorshift64*), so a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Runs `wf` with faults: events delivered in random order, some twice, some late (after others), and
/// crashes between effect and commit (the step's effects are carried out, its new state is lost, and the
/// event is delivered again). Task creation is idempotent by name, as plugins make it, and a repeated start
/// is followed by a status check.
/// Returns (phase, outputs, names of task attempts created).
fn simulate(
    pkg: &Arc<CompiledPackage>,
    wf: &str,
    input: &LiteralMap,
    behave: &Behaviour,
    seed: u64,
    config: &ExecConfig,
    budget: Option<u32>,
) -> (ExecPhase, Option<LiteralMap>, BTreeSet<String>) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let program = Program {
        package: pkg.clone(),
        workflow: wf.into(),
    };
    let mut exec = Execution::new(&program, config.clone()).unwrap();
    exec.limit_starts(budget);
    let mut created: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending: Vec<Event> = vec![Event::Start {
        inputs: input.clone(),
    }];
    let mut steps = 0;
    while !pending.is_empty() && steps < 100_000 {
        steps += 1;
        let i = rng.below(pending.len());
        let ev = if rng.chance(15) {
            pending[i].clone()
        } else {
            pending.swap_remove(i)
        };
        let crash = rng.chance(10);
        let before = crash.then(|| exec.clone());
        // Each event a transition of its own, as far as the budget goes.
        exec.limit_starts(budget);
        let fx = exec.step(ev.clone());
        for e in fx {
            match e {
                Effect::StartTask(t) => {
                    // Creation is idempotent by name: a repeated start finds the job already made, and the
                    // runtime then checks its status (as its delayed check messages do), so the job's
                    // outcome is reported again.
                    let first = !created.contains_key(&t.name);
                    *created.entry(t.name.clone()).or_default() += 1;
                    if first {
                        pending.push(Event::Task {
                            node: t.node,
                            index: t.index,
                            attempt: t.attempt,
                            status: TaskStatus::Running,
                        });
                    }
                    pending.push(Event::Task {
                        node: t.node,
                        index: t.index,
                        attempt: t.attempt,
                        status: behave(&t.task, &t.inputs, t.attempt, t.index),
                    });
                }
                Effect::Timer {
                    node,
                    index,
                    attempt,
                    kind,
                    ..
                } => pending.push(Event::Timer {
                    node,
                    index,
                    attempt,
                    kind,
                }),
                Effect::StartDynamic {
                    node,
                    program,
                    name,
                    ..
                } => {
                    // Child creation is idempotent by name too: a repeated start reports the same end.
                    let (result, started) = run_child(&program, &name, behave);
                    if !created.contains_key(&name) {
                        for t in started {
                            *created.entry(t.name).or_default() += 1;
                        }
                    }
                    *created.entry(name).or_default() += 1;
                    pending.push(Event::Child { node, result });
                }
                _ => {}
            }
        }
        if let Some(state) = before {
            exec = state;
            pending.push(ev);
        } else if rng.chance(3) {
            // As the serverless runtime does, carry the state to the next event only through its
            // stored records (now and then: it is slow in debug builds).
            exec = through_records(&program, &exec);
        }
    }
    (
        exec.phase(),
        exec.outputs().cloned(),
        created.into_keys().collect(),
    )
}

/// `exec` stored as records (encoded and decoded, as a runtime stores them) and restored.
fn through_records(program: &Program, exec: &Execution) -> Execution {
    use updraft_proto::Message;
    let state = exec.state_record().encode_to_vec();
    let nodes: Vec<Vec<u8>> = (0..exec.node_count() as u32)
        .map(|i| exec.node_record(i).unwrap().encode_to_vec())
        .collect();
    let restored = Execution::restore(
        program,
        updraft_proto::updraft::ExecutionState::decode(state.as_slice()).unwrap(),
        nodes
            .iter()
            .map(|n| updraft_proto::updraft::NodeState::decode(n.as_slice()).unwrap())
            .collect(),
    )
    .unwrap();
    assert_eq!(restored.state_record().encode_to_vec(), state);
    restored
}

#[test]
fn restoring_refuses_records_that_do_not_fit() {
    let pkg = fixture_pkg(&["branches.tgz"]);
    let program = Program {
        package: pkg.clone(),
        workflow: "fixtures.branches.branch_wf".into(),
    };
    let mut exec = Execution::new(&program, ExecConfig::new("r")).unwrap();
    exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(12)), ("base", lit_int(10))]),
    });
    let nodes = |e: &Execution| -> Vec<_> {
        (0..e.node_count() as u32)
            .map(|i| e.node_record(i).unwrap())
            .collect()
    };
    // A node without a record is as it was made.
    let fresh = Execution::new(&program, ExecConfig::new("r")).unwrap();
    let mut fewer = nodes(&exec);
    let last = fewer.pop().unwrap();
    let back = Execution::restore(&program, exec.state_record(), fewer).unwrap();
    assert_eq!(back.node_record(last.index), fresh.node_record(last.index));
    let mut state = exec.state_record();
    state.nodes += 1;
    let err = Execution::restore(&program, state, nodes(&exec)).unwrap_err();
    assert!(err.contains("nodes"), "{err}");
    let mut twice = nodes(&exec);
    let last = twice.len() - 1;
    twice[last] = twice[0].clone();
    let err = Execution::restore(&program, exec.state_record(), twice).unwrap_err();
    assert!(err.contains("stored twice"), "{err}");
    let mut bad = nodes(&exec);
    bad[0].phase = 42;
    let err = Execution::restore(&program, exec.state_record(), bad).unwrap_err();
    assert!(err.contains("unknown node phase 42"), "{err}");
    let other = Program {
        package: pkg,
        workflow: "fixtures.branches.other".into(),
    };
    assert!(Execution::restore(&other, exec.state_record(), nodes(&exec)).is_err());
    // What fits comes back as it was.
    let back = Execution::restore(&program, exec.state_record(), nodes(&exec)).unwrap();
    assert_eq!(nodes(&back), nodes(&exec));
    assert_eq!(back.phase(), exec.phase());
}

fn check_simulation(
    pkg: &Arc<CompiledPackage>,
    wf: &str,
    input: &LiteralMap,
    behave: &Behaviour,
    seeds: std::ops::Range<u64>,
) {
    check_simulation_with(pkg, wf, input, behave, seeds, &ExecConfig::new("sim"));
}

fn check_simulation_with(
    pkg: &Arc<CompiledPackage>,
    wf: &str,
    input: &LiteralMap,
    behave: &Behaviour,
    seeds: std::ops::Range<u64>,
    config: &ExecConfig,
) {
    check_simulation_budgeted(pkg, wf, input, behave, seeds, config, None);
}

/// As [`check_simulation_with`], each step a transition of its own starting at most `budget` attempts (the rest by
/// `Continue` timers, delivered under the same faults); compared with the fault-free run without one.
fn check_simulation_budgeted(
    pkg: &Arc<CompiledPackage>,
    wf: &str,
    input: &LiteralMap,
    behave: &Behaviour,
    seeds: std::ops::Range<u64>,
    config: &ExecConfig,
    budget: Option<u32>,
) {
    let mut d = Driver::new(pkg, wf, config.clone());
    let phase = d.run(input.clone(), behave);
    let mut want_names: BTreeSet<String> = d.started.iter().map(|t| t.name.clone()).collect();
    want_names.extend(d.children.iter().cloned());
    let want = (phase, d.exec.outputs().cloned());
    for seed in seeds {
        let (p, o, names) = simulate(pkg, wf, input, behave, seed, config, budget);
        assert_eq!(
            (p, o.clone()),
            want,
            "seed {seed}: outcome differs from the fault-free run"
        );
        assert_eq!(
            names, want_names,
            "seed {seed}: a different set of task attempts was started"
        );
    }
}

fn seeds() -> u64 {
    std::env::var("UPDRAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn simulation_branches_and_subworkflows() {
    let n = seeds();
    let pkg = fixture_pkg(&["branches.tgz"]);
    check_simulation(
        &pkg,
        "fixtures.branches.branch_wf",
        &inputs(&[("x", lit_int(12)), ("base", lit_int(10))]),
        &fixture_tasks,
        0..n,
    );
    let pkg = fixture_pkg(&["subworkflows.tgz"]);
    check_simulation(
        &pkg,
        "fixtures.subworkflows.outer",
        &inputs(&[("x", lit_int(3))]),
        &fixture_tasks,
        0..n,
    );
}

#[test]
fn simulation_maps_and_retries() {
    let n = seeds();
    let pkg = fixture_pkg(&["maps.tgz"]);
    let xs = from_json(
        &serde_json::json!([1, 2, 3, 4, 5, 6]),
        &types::parse("list[int]").unwrap(),
    )
    .unwrap();
    check_simulation(
        &pkg,
        "fixtures.maps.maps_wf",
        &inputs(&[("xs", xs.clone())]),
        &fixture_tasks,
        0..n,
    );
    // The same with a parallelism cap: queued work and freed slots under faults.
    let mut capped = ExecConfig::new("sim");
    capped.max_parallelism = Some(2);
    check_simulation_with(
        &pkg,
        "fixtures.maps.maps_wf",
        &inputs(&[("xs", xs.clone())]),
        &fixture_tasks,
        0..n,
        &capped,
    );
    // With a start budget per transition, with and without the cap: the same outcome and attempts.
    for config in [ExecConfig::new("sim"), capped] {
        check_simulation_budgeted(
            &pkg,
            "fixtures.maps.maps_wf",
            &inputs(&[("xs", xs.clone())]),
            &fixture_tasks,
            0..n / 4,
            &config,
            Some(2),
        );
    }
    let pkg = yaml_pkg(RETRY);
    check_simulation(
        &pkg,
        "wf",
        &inputs(&[("x", lit_int(1))]),
        &retry_behaviour(2, ErrorKind::User, true),
        0..n,
    );
    check_simulation(
        &pkg,
        "wf",
        &inputs(&[("x", lit_int(1))]),
        &retry_behaviour(5, ErrorKind::User, true),
        0..n,
    );
}

#[test]
fn a_start_budget_bounds_each_transition_and_continues_with_the_rest() {
    // The maps fixture: five squares (parallelism 2) and five scales (unlimited), at most 3 starts a
    // transition (one `limit_starts` each); each that puts starts off asks one Continue timer, whose
    // event starts the next.
    let pkg = fixture_pkg(&["maps.tgz"]);
    let program = Program {
        package: pkg,
        workflow: "fixtures.maps.maps_wf".into(),
    };
    let xs = from_json(
        &serde_json::json!([1, 2, 3, 4, 5]),
        &types::parse("list[int]").unwrap(),
    )
    .unwrap();
    let mut exec = Execution::new(&program, ExecConfig::new("b")).unwrap();
    exec.limit_starts(Some(3));
    let continues = |fx: &[Effect]| {
        fx.iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Timer {
                        kind: TimerKind::Continue,
                        ..
                    }
                )
            })
            .count()
    };
    // Without a budget, the start starts everything at once.
    let mut free = Execution::new(&program, ExecConfig::new("b")).unwrap();
    let want: BTreeSet<String> = starts_of(&free.step(Event::Start {
        inputs: inputs(&[("xs", xs.clone())]),
    }))
    .into_iter()
    .map(|t| t.name)
    .collect();
    assert!(want.len() > 6, "{want:?}");
    let mut fx = exec.step(Event::Start {
        inputs: inputs(&[("xs", xs)]),
    });
    let go_on = Event::Timer {
        node: 0,
        index: None,
        attempt: 0,
        kind: TimerKind::Continue,
    };
    let mut all = Vec::new();
    let mut steps = 1;
    loop {
        let started = starts_of(&fx);
        assert!(started.len() <= 3, "{fx:?}");
        all.extend(started);
        let more = all.len() < want.len();
        assert_eq!(continues(&fx), usize::from(more), "step {steps}: {fx:?}");
        if !more {
            break;
        }
        // More events in the same unit (no new budget) start nothing and ask no second Continue:
        // the budget bounds a transition, however many events it applies.
        let same = exec.step(go_on.clone());
        assert!(starts_of(&same).is_empty(), "step {steps}: {same:?}");
        assert_eq!(continues(&same), 0, "step {steps}: {same:?}");
        exec.limit_starts(Some(3));
        fx = exec.step(go_on.clone());
        steps += 1;
    }
    assert_eq!(steps, want.len().div_ceil(3));
    let names: BTreeSet<String> = all.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, want);
    assert_eq!(all.len(), want.len(), "an attempt started twice");
    // A Continue with nothing put off (a duplicate) starts nothing.
    exec.limit_starts(Some(3));
    assert!(starts_of(&exec.step(go_on)).is_empty());
    // A restored execution keeps its put-off work (waiting) but not the budget: the runtime sets it.
    let again = through_records(&program, &exec);
    assert_eq!(again.state_record(), exec.state_record());
}

/// The task attempts a step's effects start.
fn starts_of(fx: &[Effect]) -> Vec<TaskLaunch> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::StartTask(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn none_literal_is_none() {
    // Guard for the helpers above: none literals are told apart from values.
    assert_eq!(
        ints(&Literal {
            value: Some(literal::Value::Collection(
                updraft_proto::core::LiteralCollection {
                    literals: vec![none_lit(), lit_int(1)]
                }
            )),
            ..Default::default()
        }),
        vec![None, Some(1)]
    );
}

#[test]
fn parallelism_caps_running_attempts() {
    // Execution-wide cap: a and c are both ready, but only one starts until a slot frees.
    let pkg = yaml_pkg(RETRY);
    let mut cfg = ExecConfig::new("p");
    cfg.max_parallelism = Some(1);
    let program = Program {
        package: pkg.clone(),
        workflow: "wf".into(),
    };
    let mut exec = Execution::new(&program, cfg).unwrap();
    let fx = exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(1))]),
    });
    let starts = starts_of(&fx);
    assert_eq!(starts.len(), 1);
    let first = starts[0].clone();
    let fx = exec.step(Event::Task {
        node: first.node,
        index: None,
        attempt: 0,
        status: ok(vec![("y", lit_int(2))]),
    });
    let next = starts_of(&fx);
    assert_eq!(
        next.len(),
        1,
        "the freed slot goes to exactly one waiting task: {fx:?}"
    );

    // Array cap: the fixture's squares map has parallelism 2.
    let pkg = fixture_pkg(&["maps.tgz"]);
    let program = Program {
        package: pkg,
        workflow: "fixtures.maps.maps_wf".into(),
    };
    let mut exec = Execution::new(&program, ExecConfig::new("p2")).unwrap();
    let xs = from_json(
        &serde_json::json!([1, 2, 3, 4, 5]),
        &types::parse("list[int]").unwrap(),
    )
    .unwrap();
    let fx = exec.step(Event::Start {
        inputs: inputs(&[("xs", xs)]),
    });
    let squares = fx
        .iter()
        .filter(|e| matches!(e, Effect::StartTask(t) if t.task.contains("map_square")))
        .count();
    let scales = fx
        .iter()
        .filter(|e| matches!(e, Effect::StartTask(t) if t.task.contains("map_scale")))
        .count();
    assert_eq!(
        (squares, scales),
        (2, 5),
        "parallelism 2 for squares, unlimited for scale"
    );
}

/// `outer` with add(a, b) failing when a == 5: the first subworkflow fails.
fn failing_add(task: &str, i: &LiteralMap, attempt: u32, index: Option<u32>) -> TaskStatus {
    if task.ends_with(".add") && int(&i.literals["a"]) == 5 {
        return user_error(false);
    }
    if task.ends_with(".cleanup") {
        return ok(vec![]);
    }
    fixture_tasks(task, i, attempt, index)
}

#[test]
fn failure_policy_and_failure_node() {
    let pkg = fixture_pkg(&["subworkflows.tgz"]);
    let mut d = Driver::new(&pkg, "fixtures.subworkflows.outer", ExecConfig::new("f"));
    // x = 5: the first subworkflow's add(5, 2) fails, without retries.
    let phase = d.run(inputs(&[("x", lit_int(5))]), &failing_add);
    assert_eq!(phase, ExecPhase::Failed);
    let err = d.exec.error().unwrap();
    assert_eq!(err.code, "Boom");
    assert!(
        err.node.ends_with("-n0"),
        "the failing node is named: {err:?}"
    );
    // The failure node ran, with the workflow's inputs.
    let cleanup = d
        .started
        .iter()
        .find(|t| t.task.ends_with(".cleanup"))
        .expect("failure node ran");
    assert_eq!(int(&cleanup.inputs.literals["x"]), 5);
    // Nodes downstream of the failure were skipped, not run.
    assert!(
        !d.started.iter().any(|t| t.node_id.starts_with("n1-")),
        "{:?}",
        d.started.iter().map(|t| &t.node_id).collect::<Vec<_>>()
    );
}

const TIMED: &str = r#"
version: 1
image: img:1
tasks:
  t: {type: python, module: m, function: t, inputs: {x: int}, outputs: {y: int}}
workflows:
  wf:
    inputs: {x: int}
    outputs: {y: "${a.y}"}
    nodes:
      - {id: a, task: t, timeout: 1h, inputs: {x: "${inputs.x}"}}
      - {id: child, launch_plan: sub, inputs: {x: "${inputs.x}"}}
  sub:
    inputs: {x: int}
    outputs: {y: "${b.y}"}
    nodes:
      - {id: b, task: t, inputs: {x: "${inputs.x}"}}
"#;

#[test]
fn node_timeouts_and_child_executions() {
    let pkg = yaml_pkg(TIMED);
    let program = Program {
        package: pkg,
        workflow: "wf".into(),
    };
    let mut exec = Execution::new(&program, ExecConfig::new("to")).unwrap();
    let fx = exec.step(Event::Start {
        inputs: inputs(&[("x", lit_int(1))]),
    });
    let child = fx
        .iter()
        .find_map(|e| {
            if let Effect::StartChild {
                node,
                name,
                launch_plan,
                inputs,
            } = e
            {
                Some((*node, name.clone(), launch_plan.clone(), inputs.clone()))
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(child.2, "sub");
    assert_eq!(child.1, "to-child");
    assert_eq!(int(&child.3.literals["x"]), 1);
    // A running child is where signals also go.
    assert_eq!(exec.running_children(), ["to-child"]);
    let (a, kind) = fx
        .iter()
        .find_map(|e| {
            if let Effect::Timer { node, kind, .. } = e {
                Some((*node, *kind))
            } else {
                None
            }
        })
        .unwrap();
    // The child finishes; the node timeout fires before `a` reports: the node times out.
    exec.step(Event::Child {
        node: child.0,
        result: Ok(inputs(&[("y", lit_int(5))])),
    });
    assert_eq!(exec.node_phase(child.0), NodePhase::Succeeded);
    let fx = exec.step(Event::Timer {
        node: a,
        index: None,
        attempt: 0,
        kind,
    });
    assert!(
        fx.iter().any(|e| matches!(e, Effect::AbortTask { .. })),
        "{fx:?}"
    );
    assert_eq!(exec.node_phase(a), NodePhase::TimedOut);
    assert_eq!(exec.phase(), ExecPhase::Failed);
    assert_eq!(exec.error().unwrap().code, "NodeTimeout");
}

const MIN_OK: &str = r#"
version: 1
image: img:1
tasks:
  t: {type: python, module: m, function: t, inputs: {x: int}, outputs: {y: int}}
workflows:
  wf:
    inputs: {xs: "list[int]"}
    outputs: {ys: "${m.y}"}
    nodes:
      - {id: m, map: {task: t, min_successes: 3}, inputs: {x: "${inputs.xs}"}}
"#;

#[test]
fn min_successes_counts_elements() {
    let pkg = yaml_pkg(MIN_OK);
    let behave = |_: &str, i: &LiteralMap, _: u32, _: Option<u32>| {
        let x = int(&i.literals["x"]);
        if x < 0 {
            user_error(false)
        } else {
            ok(vec![("y", lit_int(x * 2))])
        }
    };
    let list = |v: serde_json::Value| from_json(&v, &types::parse("list[int]").unwrap()).unwrap();
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("k"));
    assert_eq!(
        d.run(
            inputs(&[("xs", list(serde_json::json!([1, -1, 2, 3])))]),
            &behave
        ),
        ExecPhase::Succeeded
    );
    assert_eq!(ints(&d.output("ys")), vec![Some(2), None, Some(4), Some(6)]);
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("k2"));
    assert_eq!(
        d.run(
            inputs(&[("xs", list(serde_json::json!([1, -1, -2, 3])))]),
            &behave
        ),
        ExecPhase::Failed
    );
    let mut d = Driver::new(&pkg, "wf", ExecConfig::new("k3"));
    assert_eq!(
        d.run(inputs(&[("xs", list(serde_json::json!([])))]), &behave),
        ExecPhase::Succeeded,
        "an empty map succeeds"
    );
    assert_eq!(ints(&d.output("ys")), Vec::<Option<i64>>::new());
}

const ARRAY_FAILS: &str = r#"
version: 1
image: img:1
tasks:
  t: {type: python, module: m, function: t, inputs: {x: int}, outputs: {y: int}}
workflows:
  wf:
    failure_policy: fail_after_executable_nodes_complete
    inputs: {xs: "list[int]", x: int}
    outputs: {ys: "${m.y}", y: "${c.y}"}
    nodes:
      - {id: m, map: {task: t}, inputs: {x: "${inputs.xs}"}}
      - {id: c, task: t, inputs: {x: "${inputs.x}"}}
"#;

#[test]
fn aborted_work_frees_its_slots_and_queued_elements_of_a_failed_array_never_start() {
    let pkg = yaml_pkg(ARRAY_FAILS);
    let mut cfg = ExecConfig::new("af");
    cfg.max_parallelism = Some(2);
    let program = Program {
        package: pkg,
        workflow: "wf".into(),
    };
    let mut exec = Execution::new(&program, cfg).unwrap();
    let list = from_json(
        &serde_json::json!([-1, 1, 2, 3]),
        &types::parse("list[int]").unwrap(),
    )
    .unwrap();
    let fx = exec.step(Event::Start {
        inputs: inputs(&[("xs", list), ("x", lit_int(7))]),
    });
    let started = starts_of(&fx);
    assert_eq!(started.len(), 2, "two slots: elements 0 and 1");
    // Element 0 fails: the array fails and aborts element 1; both slots are free again, so `c` starts,
    // and elements 2 and 3 never do.
    let fx = exec.step(Event::Task {
        node: started[0].node,
        index: Some(0),
        attempt: 0,
        status: user_error(false),
    });
    let aborted = fx
        .iter()
        .filter(|e| matches!(e, Effect::AbortTask { index: Some(1), .. }))
        .count();
    assert_eq!(aborted, 1, "{fx:?}");
    let next = starts_of(&fx);
    assert_eq!(next.len(), 1, "{fx:?}");
    assert_eq!(next[0].node_id, "c");
    let fx = exec.step(Event::Task {
        node: next[0].node,
        index: None,
        attempt: 0,
        status: ok(vec![("y", lit_int(8))]),
    });
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::StartTask(_))),
        "no element of the failed array starts: {fx:?}"
    );
    assert_eq!(exec.phase(), ExecPhase::Failed);
}

// ---------- dynamic tasks ----------

/// The futures.pb the real flytekit wrote for `fan_out(n=3)` (see tests/fixtures/flytekit/regenerate.sh).
fn fan_out_spec() -> DynamicJobSpec {
    let bytes = std::fs::read(format!(
        "{}/../tests/fixtures/flytekit/futures/fan_out.pb",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    updraft_proto::Message::decode(&bytes[..]).unwrap()
}

#[test]
fn dynamic_tasks_run_the_sub_workflow_they_return() {
    let pkg = fixture_pkg(&["dynamic.tgz"]);
    let mut d = Driver::new(&pkg, "fixtures.dynamic.dynamic_wf", ExecConfig::new("dy"));
    let phase = d.run(inputs(&[("n", lit_int(3))]), &fixture_tasks);
    assert_eq!(phase, ExecPhase::Succeeded, "{:?}", d.exec.error());
    assert_eq!(d.output("o0"), lit_str("1,2,3"));
    assert_eq!(d.children, vec!["dy-n0-0-dynamic".to_string()]);
    let names: Vec<&str> = d.started.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dy-n0-0",
            "dy-n0-0-dynamic-dn0-0",
            "dy-n0-0-dynamic-dn1-0",
            "dy-n0-0-dynamic-dn2-0",
            "dy-n0-0-dynamic-dn3-0"
        ]
    );
}

#[test]
fn a_dynamic_sub_workflow_failure_fails_the_node_and_duplicates_start_nothing() {
    let pkg = fixture_pkg(&["dynamic.tgz"]);
    let program = Program {
        package: pkg,
        workflow: "fixtures.dynamic.dynamic_wf".into(),
    };
    let mut exec = Execution::new(&program, ExecConfig::new("df")).unwrap();
    exec.step(Event::Start {
        inputs: inputs(&[("n", lit_int(3))]),
    });
    let futures = Event::Task {
        node: 0,
        index: None,
        attempt: 0,
        status: TaskStatus::Dynamic {
            spec: Box::new(fan_out_spec()),
        },
    };
    let fx = exec.step(futures.clone());
    let Some(Effect::StartDynamic { program, name, .. }) =
        fx.iter().find(|e| matches!(e, Effect::StartDynamic { .. }))
    else {
        panic!("{fx:?}")
    };
    assert_eq!(name, "df-n0-0-dynamic");
    assert_eq!(exec.running_children(), ["df-n0-0-dynamic"]);
    let wf = &program.package.workflows[&program.workflow];
    assert_eq!(wf.nodes.len(), 4, "dn0..dn3");
    // The same status again, or a late success of the attempt, changes nothing.
    assert!(exec.step(futures).is_empty());
    assert!(
        exec.step(Event::Task {
            node: 0,
            index: None,
            attempt: 0,
            status: ok(vec![("o0", lit_str("x"))]),
        })
        .is_empty()
    );
    let err = ExecError {
        node: "dn1".into(),
        code: "Boom".into(),
        message: "inc failed".into(),
        kind: ErrorKind::User,
    };
    exec.step(Event::Child {
        node: 0,
        result: Err(err.clone()),
    });
    assert_eq!(exec.node_phase(0), NodePhase::Failed);
    assert_eq!(exec.phase(), ExecPhase::Failed);
    assert_eq!(exec.error(), Some(&err));
}

#[test]
fn aborting_a_dynamic_node_aborts_its_sub_workflow() {
    let pkg = fixture_pkg(&["dynamic.tgz"]);
    let program = Program {
        package: pkg,
        workflow: "fixtures.dynamic.dynamic_wf".into(),
    };
    let mut exec = Execution::new(&program, ExecConfig::new("da")).unwrap();
    exec.step(Event::Start {
        inputs: inputs(&[("n", lit_int(3))]),
    });
    exec.step(Event::Task {
        node: 0,
        index: None,
        attempt: 0,
        status: TaskStatus::Dynamic {
            spec: Box::new(fan_out_spec()),
        },
    });
    let fx = exec.step(Event::Abort {
        reason: "stop".into(),
    });
    assert!(
        fx.contains(&Effect::AbortChild {
            node: 0,
            name: "da-n0-0-dynamic".into()
        }),
        "{fx:?}"
    );
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::AbortTask { .. })),
        "the attempt itself is over: {fx:?}"
    );
    assert_eq!(exec.phase(), ExecPhase::Aborted);
}

#[test]
fn a_dynamic_sub_workflow_that_does_not_compile_fails_the_node_saying_why() {
    let pkg = fixture_pkg(&["dynamic.tgz"]);
    let program = Program {
        package: pkg,
        workflow: "fixtures.dynamic.dynamic_wf".into(),
    };
    let mut spec = fan_out_spec();
    // The join reads an output no node makes, and no task template comes with the spec.
    spec.tasks.clear();
    let mut pkg_without_tasks = (*program.package).clone();
    pkg_without_tasks.tasks.retain(|k, _| !k.ends_with(".join"));
    let program = Program {
        package: Arc::new(pkg_without_tasks),
        workflow: program.workflow,
    };
    let mut exec = Execution::new(&program, ExecConfig::new("dc")).unwrap();
    exec.step(Event::Start {
        inputs: inputs(&[("n", lit_int(3))]),
    });
    let fx = exec.step(Event::Task {
        node: 0,
        index: None,
        attempt: 0,
        status: TaskStatus::Dynamic {
            spec: Box::new(spec),
        },
    });
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::StartDynamic { .. })),
        "{fx:?}"
    );
    assert_eq!(exec.phase(), ExecPhase::Failed);
    let e = exec.error().unwrap();
    assert_eq!(e.code, "DynamicSpecInvalid");
    assert!(
        e.message.contains("futures.pb of node n0")
            && e.message.contains("dn3")
            && e.message.contains("fixtures.dynamic.join"),
        "{}",
        e.message
    );
}

#[test]
fn simulation_dynamic_tasks() {
    let pkg = fixture_pkg(&["dynamic.tgz"]);
    check_simulation(
        &pkg,
        "fixtures.dynamic.dynamic_wf",
        &inputs(&[("n", lit_int(3))]),
        &fixture_tasks,
        0..seeds(),
    );
}

#[test]
fn elements_of_a_cached_flytekit_map_have_their_own_cache_keys() {
    // flytekit map elements read the whole lists and pick their element by index; their cache keys must
    // still come from their own element, or every element would share the first one's outputs.
    let mut pkg = (*fixture_pkg(&["maps.tgz"])).clone();
    for t in pkg.tasks.values_mut() {
        if t.name.contains("map_square") {
            let m = t.template.metadata.get_or_insert_with(Default::default);
            m.discoverable = true;
            m.discovery_version = "1".into();
        }
    }
    let pkg = Arc::new(pkg);
    let xs = from_json(
        &serde_json::json!([1, 2, 3, 2]),
        &types::parse("list[int]").unwrap(),
    )
    .unwrap();
    let mut d = Driver::new(&pkg, "fixtures.maps.maps_wf", ExecConfig::new("k"));
    assert_eq!(
        d.run(inputs(&[("xs", xs)]), &fixture_tasks),
        ExecPhase::Succeeded
    );
    let keys: Vec<String> = d
        .started
        .iter()
        .filter(|t| t.task.contains("map_square"))
        .map(|t| t.cache_key.clone().unwrap())
        .collect();
    assert_eq!(keys.len(), 4);
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
    assert_eq!(keys[1], keys[3], "the same element value, the same key");
}
