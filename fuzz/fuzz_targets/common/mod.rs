//! What the engine's fuzz targets share: a program with every node kind and events made from bytes.

use std::sync::Arc;
use std::time::Duration;

use updraft_engine::exec::{ErrorKind, Event, Execution, Program, TaskStatus, TimerKind};
use updraft_engine::{compile, yaml};
use updraft_proto::Message;
use updraft_proto::core::{DynamicJobSpec, Literal, LiteralMap};

/// The YAML fixture with every node kind (tasks, a map, branches, a subworkflow, a launch plan,
/// gates) and its workflow that uses them all.
pub fn program() -> Program {
    let text = include_str!("../../../tests/fixtures/yaml/everything.yaml");
    let pkg = yaml::load("everything.yaml", text).expect("the fixture loads");
    let compiled = compile(&pkg).expect("the fixture compiles");
    Program {
        package: Arc::new(compiled),
        workflow: "pipeline".into(),
    }
}

/// Reads the fuzzer's bytes a piece at a time.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    /// The next byte (0 once they run out).
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer once they run out).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// A length-prefixed slice (one byte of length, times 4).
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = self.byte() as usize * 4;
        self.take(n)
    }

    /// True while bytes are left.
    pub fn more(&self) -> bool {
        !self.0.is_empty()
    }
}

/// An event made from the bytes: task statuses (outputs as `outputs.pb`, sub-workflows as
/// `futures.pb`, failures), timers, signals, children's ends, aborts and failures, for any node,
/// element and attempt.
pub fn event(b: &mut Bytes) -> Event {
    let kind = b.byte() % 9;
    let node = u32::from(b.byte() % 48);
    let index = match b.byte() {
        0..=127 => None,
        i => Some(u32::from(i % 8)),
    };
    let attempt = u32::from(b.byte() % 4);
    let status = |b: &mut Bytes| match b.byte() % 5 {
        0 => TaskStatus::Running,
        1 => TaskStatus::Succeeded {
            outputs: LiteralMap::decode(b.chunk()).unwrap_or_default(),
            cached: b.byte() % 2 == 0,
        },
        2 => TaskStatus::Dynamic {
            spec: Box::new(DynamicJobSpec::decode(b.chunk()).unwrap_or_default()),
        },
        3 => TaskStatus::Queued,
        _ => TaskStatus::Failed {
            code: "Fuzz".into(),
            message: String::from_utf8_lossy(b.take(8)).into_owned(),
            kind: if b.byte() % 2 == 0 {
                ErrorKind::User
            } else {
                ErrorKind::System
            },
            recoverable: b.byte() % 2 == 0,
        },
    };
    match kind {
        0..=2 => Event::Task {
            node,
            index,
            attempt,
            status: status(b),
        },
        3 => Event::Timer {
            node,
            index,
            attempt,
            kind: match b.byte() % 5 {
                0 => TimerKind::Sleep,
                1 => TimerKind::AttemptTimeout,
                2 => TimerKind::NodeTimeout,
                3 => TimerKind::CacheWait,
                _ => TimerKind::Continue,
            },
        },
        4 => Event::Signal {
            id: ["review-note", "publish", "other"][usize::from(b.byte() % 3)].into(),
            value: Box::new(Literal::decode(b.chunk()).unwrap_or_default()),
        },
        5 => Event::Child {
            node,
            result: match b.byte() % 2 {
                0 => Ok(LiteralMap::decode(b.chunk()).unwrap_or_default()),
                _ => Err(updraft_engine::exec::ExecError {
                    node: String::new(),
                    code: "Fuzz".into(),
                    message: "child failed".into(),
                    kind: ErrorKind::User,
                }),
            },
        },
        6 => Event::Abort {
            reason: "fuzz".into(),
        },
        7 => Event::Fail {
            code: "Fuzz".into(),
            message: "fuzz".into(),
        },
        _ => Event::Start {
            inputs: LiteralMap::decode(b.chunk()).unwrap_or_default(),
        },
    }
}

/// Steps the events the rest of the bytes make, with a start budget some of the time, and reads
/// what a runtime reads after each step.
pub fn drive(exec: &mut Execution, b: &mut Bytes) {
    let budget = (b.byte() % 2 == 0).then(|| u32::from(b.byte() % 4) + 1);
    exec.limit_starts(budget);
    let mut steps = 0;
    while b.more() && steps < 64 {
        steps += 1;
        // A new unit of work (a transition) now and then.
        if b.byte() % 4 == 0 {
            exec.limit_starts(budget);
        }
        let fx = exec.step(event(b));
        std::hint::black_box(fx);
        for i in 0..exec.node_count() as u32 {
            std::hint::black_box(exec.node_record(i));
        }
        std::hint::black_box(exec.state_record().encode_to_vec());
        std::hint::black_box(exec.running_children());
        let _ = Duration::ZERO;
    }
}
