//! The one interpreter of the engine's effects, for every runtime. What is the same everywhere — which
//! task an attempt runs and which connector runs it, a cached result instead of a start, a child
//! execution started as its launch plan would start it, and the errors of each — is decided here; a
//! runtime is a [`Host`] that does the rest its own way (`updraft run` with threads and timers in
//! memory, the serverless stack with a queue and a table).

use std::sync::Arc;
use std::time::Duration;

use updraft_engine::compile::{CompiledTask, NodeIdx};
use updraft_engine::exec::{
    Effect, ErrorKind, Event, ExecError, ExecPhase, NodePhase, Program, TaskLaunch, TaskStatus,
    TimerKind,
};
use updraft_proto::core::LiteralMap;

use crate::{Connector, Registry, failed};

/// How a child execution starts.
#[derive(Debug, Clone)]
pub enum Child {
    /// A launch-plan node's: the launch plan's workflow, with its defaults, the node's inputs and its
    /// fixed inputs.
    LaunchPlan {
        /// The child's program.
        program: Program,
        /// Its inputs, resolved.
        inputs: LiteralMap,
    },
    /// A dynamic task's sub-workflow, with no inputs.
    Dynamic {
        /// The compiled sub-workflow.
        program: Program,
        /// The sub-workflow as the task returned it (`futures.pb`).
        spec: Box<updraft_proto::core::DynamicJobSpec>,
    },
}

/// What [`Host::reserve`] found for a serializable cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The key is this attempt's to compute (it was free, already this attempt's, or its holder's
    /// lease ran out).
    Held,
    /// Attempt `holder` is computing it.
    Busy {
        /// The attempt that holds the key.
        holder: String,
    },
}

/// What a runtime does for [`apply`]: where its tasks, connectors and cache are, and how it starts,
/// stops and schedules things. Each `start` is idempotent by name, as delivery is at least once.
#[async_trait::async_trait]
pub trait Host: Send {
    /// The runtime's own failure (a store or queue that cannot be reached).
    type Error: Send;

    /// The program of the execution the effects are from.
    fn program(&self) -> &Program;
    /// The package launch-plan nodes find their launch plans in: the top execution's (a dynamic
    /// sub-workflow's own package holds only what it returned).
    fn launch_plans(&self) -> Arc<updraft_engine::CompiledPackage> {
        self.program().package.clone()
    }
    /// The connectors of this runtime.
    fn registry(&self) -> &Registry;
    /// A node's path as errors name it.
    fn node_path(&self, node: NodeIdx) -> String;
    /// Whether cached results are ignored (and overwritten).
    fn overwrite_cache(&self) -> bool;
    /// Gives the execution an event before anything else (a cached result, a start refused, a child
    /// that cannot start).
    fn feed(&mut self, event: Event);

    /// The outputs cached under `key`.
    async fn cached(&mut self, key: &str) -> Result<Option<LiteralMap>, Self::Error>;
    /// Reserves cache key `key` for attempt `holder` of a serializable cached task (Flyte's
    /// `cache_serialize`: one attempt computes a key, the others wait for its result). The runtime
    /// releases the key when the attempt ends, and a holder that vanished without ending loses it
    /// (a lease, or a lock the operating system drops).
    async fn reserve(&mut self, key: &str, holder: &str) -> Result<Reservation, Self::Error>;
    /// How long an attempt that found its key busy waits before looking again.
    fn cache_wait(&self) -> Duration;
    /// Starts an attempt of `task` through `connector`; an attempt that cannot start is fed back as its
    /// status.
    async fn start_task(
        &mut self,
        launch: TaskLaunch,
        task: &CompiledTask,
        connector: Arc<dyn Connector>,
    ) -> Result<(), Self::Error>;
    /// Stops attempt `name`, through what its start kept (nothing kept: nothing to stop).
    async fn abort_task(&mut self, name: &str) -> Result<(), Self::Error>;
    /// Delivers [`Event::Timer`] after `after`.
    async fn timer(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        kind: TimerKind,
        after: Duration,
    ) -> Result<(), Self::Error>;
    /// Starts child execution `name` of `node` (a name already started is that child); `Err` the error
    /// the node ends with when this runtime cannot start it.
    async fn start_child(
        &mut self,
        node: NodeIdx,
        name: &str,
        child: Child,
    ) -> Result<Result<(), ExecError>, Self::Error>;
    /// Aborts child execution `name`.
    async fn abort_child(&mut self, node: NodeIdx, name: &str) -> Result<(), Self::Error>;
    /// A node changed phase.
    async fn node_phase(&mut self, node: NodeIdx, phase: NodePhase) -> Result<(), Self::Error>;
    /// The execution ended.
    async fn finished(
        &mut self,
        phase: ExecPhase,
        outputs: Option<LiteralMap>,
        error: Option<ExecError>,
    ) -> Result<(), Self::Error>;
}

/// Applies one effect through `host`.
pub async fn apply<H: Host + ?Sized>(host: &mut H, effect: Effect) -> Result<(), H::Error> {
    match effect {
        Effect::StartTask(t) => start_task(host, t).await,
        Effect::AbortTask { name, .. } => host.abort_task(&name).await,
        Effect::Timer {
            node,
            index,
            attempt,
            kind,
            after,
        } => host.timer(node, index, attempt, kind, after).await,
        Effect::StartChild {
            node,
            launch_plan,
            inputs,
            name,
        } => {
            let package = host.launch_plans();
            let Some(lp) = package.launch_plans.get(&launch_plan) else {
                let error = ExecError {
                    node: host.node_path(node),
                    code: "NoLaunchPlan".into(),
                    message: format!("no launch plan `{launch_plan}`"),
                    kind: ErrorKind::User,
                };
                host.feed(Event::Child {
                    node,
                    result: Err(error),
                });
                return Ok(());
            };
            // As the launch plan would start it: its defaults, the node's inputs, its fixed inputs.
            let mut all = lp.defaults.clone();
            all.extend(inputs.literals);
            all.extend(lp.fixed.clone());
            let child = Child::LaunchPlan {
                program: Program {
                    package: package.clone(),
                    workflow: lp.workflow.clone(),
                },
                inputs: LiteralMap { literals: all },
            };
            start_child(host, node, &name, child).await
        }
        Effect::StartDynamic {
            node,
            program,
            spec,
            name,
        } => start_child(host, node, &name, Child::Dynamic { program, spec }).await,
        Effect::AbortChild { node, name } => host.abort_child(node, &name).await,
        Effect::NodePhase { node, phase } => host.node_phase(node, phase).await,
        Effect::Finished {
            phase,
            outputs,
            error,
        } => host.finished(phase, outputs, error).await,
    }
}

async fn start_child<H: Host + ?Sized>(
    host: &mut H,
    node: NodeIdx,
    name: &str,
    child: Child,
) -> Result<(), H::Error> {
    if let Err(error) = host.start_child(node, name, child).await? {
        host.feed(Event::Child {
            node,
            result: Err(error),
        });
    }
    Ok(())
}

/// Finds the attempt's task and connector, answers from the cache when it holds the result, and
/// otherwise has the host start it.
async fn start_task<H: Host + ?Sized>(host: &mut H, t: TaskLaunch) -> Result<(), H::Error> {
    let refuse = |host: &mut H, t: &TaskLaunch, status: TaskStatus| {
        host.feed(Event::Task {
            node: t.node,
            index: t.index,
            attempt: t.attempt,
            status,
        });
    };
    let package = host.program().package.clone();
    let Some(task) = package.tasks.get(&t.task) else {
        let status = failed(
            "NoTask",
            format!("no task `{}`", t.task),
            ErrorKind::User,
            false,
        );
        refuse(host, &t, status);
        return Ok(());
    };
    // Only tasks of dynamic sub-workflows can get here without one: the others were checked before
    // the execution started.
    let Some(connector) = host.registry().for_task(task).cloned() else {
        let status = failed(
            "NoConnector",
            format!(
                "task `{}` ({}): no connector of this runtime runs this task type",
                t.task, task.template.r#type
            ),
            ErrorKind::User,
            false,
        );
        refuse(host, &t, status);
        return Ok(());
    };
    if let Some(key) = t.cache_key.as_deref()
        && !host.overwrite_cache()
        && let Some(outputs) = host.cached(key).await?
    {
        refuse(
            host,
            &t,
            TaskStatus::Succeeded {
                outputs,
                cached: true,
            },
        );
        return Ok(());
    }
    // A serializable key is computed by one attempt at a time: the others wait and look again (the
    // cache first, so they take its result once it is stored).
    if t.cache_serializable
        && let Some(key) = t.cache_key.as_deref()
        && let Reservation::Busy { holder } = host.reserve(key, &t.name).await?
    {
        tracing::info!(attempt_name = %t.name, holder = %holder, "waiting for another attempt computing the same cache key");
        let after = host.cache_wait();
        return host
            .timer(t.node, t.index, t.attempt, TimerKind::CacheWait, after)
            .await;
    }
    host.start_task(t, task, connector).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::block_on as block;
    use std::collections::BTreeMap;

    /// A host that records what it was asked.
    struct Recorder {
        program: Program,
        registry: Registry,
        cache: BTreeMap<String, LiteralMap>,
        held: BTreeMap<String, String>,
        fed: Vec<Event>,
        calls: Vec<String>,
    }

    #[async_trait::async_trait]
    impl Host for Recorder {
        type Error = String;
        fn program(&self) -> &Program {
            &self.program
        }
        fn registry(&self) -> &Registry {
            &self.registry
        }
        fn node_path(&self, node: NodeIdx) -> String {
            format!("n{node}")
        }
        fn overwrite_cache(&self) -> bool {
            false
        }
        fn feed(&mut self, event: Event) {
            self.fed.push(event);
        }
        async fn cached(&mut self, key: &str) -> Result<Option<LiteralMap>, String> {
            Ok(self.cache.get(key).cloned())
        }
        async fn reserve(&mut self, key: &str, holder: &str) -> Result<Reservation, String> {
            let held = self
                .held
                .entry(key.to_string())
                .or_insert_with(|| holder.to_string());
            Ok(if held == holder {
                Reservation::Held
            } else {
                Reservation::Busy {
                    holder: held.clone(),
                }
            })
        }
        fn cache_wait(&self) -> Duration {
            Duration::from_secs(2)
        }
        async fn start_task(
            &mut self,
            launch: TaskLaunch,
            _task: &CompiledTask,
            connector: Arc<dyn Connector>,
        ) -> Result<(), String> {
            self.calls
                .push(format!("start {} on {}", launch.name, connector.name()));
            Ok(())
        }
        async fn abort_task(&mut self, name: &str) -> Result<(), String> {
            self.calls.push(format!("abort {name}"));
            Ok(())
        }
        async fn timer(
            &mut self,
            node: NodeIdx,
            _: Option<u32>,
            _: u32,
            _: TimerKind,
            after: Duration,
        ) -> Result<(), String> {
            self.calls.push(format!("timer {node} {after:?}"));
            Ok(())
        }
        async fn start_child(
            &mut self,
            node: NodeIdx,
            name: &str,
            child: Child,
        ) -> Result<Result<(), ExecError>, String> {
            match child {
                Child::LaunchPlan { program, inputs } => {
                    let keys: Vec<&String> = inputs.literals.keys().collect();
                    self.calls.push(format!(
                        "child {name} of {node}: {} {keys:?}",
                        program.workflow
                    ));
                    Ok(Ok(()))
                }
                Child::Dynamic { .. } => Ok(Err(ExecError {
                    node: self.node_path(node),
                    code: "Unsupported".into(),
                    message: "no dynamic here".into(),
                    kind: ErrorKind::User,
                })),
            }
        }
        async fn abort_child(&mut self, _: NodeIdx, name: &str) -> Result<(), String> {
            self.calls.push(format!("abort child {name}"));
            Ok(())
        }
        async fn node_phase(&mut self, node: NodeIdx, phase: NodePhase) -> Result<(), String> {
            self.calls.push(format!("{node} {phase:?}"));
            Ok(())
        }
        async fn finished(
            &mut self,
            phase: ExecPhase,
            _: Option<LiteralMap>,
            _: Option<ExecError>,
        ) -> Result<(), String> {
            self.calls.push(format!("finished {phase:?}"));
            Ok(())
        }
    }

    struct Echoes;

    #[async_trait::async_trait]
    impl Connector for Echoes {
        fn name(&self) -> &'static str {
            "echoes"
        }
        fn serves(&self, task: &CompiledTask) -> bool {
            task.template.r#type != "echo"
        }
        fn preflight(&self, _: &CompiledTask) -> Vec<crate::Problem> {
            Vec::new()
        }
        async fn start(&self, _: &crate::Attempt<'_>) -> Result<crate::Handle, TaskStatus> {
            unreachable!("the recorder starts nothing")
        }
        async fn check(
            &self,
            _: &crate::Handle,
            _: &dyn crate::DataStore,
        ) -> Result<TaskStatus, crate::Transient> {
            Ok(TaskStatus::Running)
        }
        async fn abort(&self, _: &crate::Handle) -> Result<(), crate::Transient> {
            Ok(())
        }
    }

    const YAML: &str = r#"
version: 1
image: python:3.12
tasks:
  add:
    type: container
    inputs: {x: int}
    outputs: {y: int}
    command: [sh, -c, "echo 1 > /var/outputs/y"]
    cache: {version: "1"}
  pass:
    type: echo
    inputs: {x: int}
    outputs: {x: int}
workflows:
  inner:
    inputs:
      x: {type: int}
      k: {type: int, default: 7}
    nodes:
      - {id: a, task: add, inputs: {x: "${inputs.x}"}}
  outer:
    nodes:
      - {id: a, task: add, inputs: {x: 1}}
"#;

    fn recorder() -> Recorder {
        let pkg = updraft_engine::yaml::load("t.yaml", YAML).unwrap();
        let compiled = Arc::new(updraft_engine::compile(&pkg).unwrap());
        Recorder {
            program: Program {
                package: compiled,
                workflow: "outer".into(),
            },
            registry: Registry::new().with(Arc::new(Echoes)),
            cache: BTreeMap::new(),
            held: BTreeMap::new(),
            fed: Vec::new(),
            calls: Vec::new(),
        }
    }

    fn launch(task: &str, cache_key: Option<&str>) -> TaskLaunch {
        TaskLaunch {
            execution: "e".into(),
            node: 0,
            node_id: "a".into(),
            index: None,
            attempt: 0,
            task: task.into(),
            inputs: Arc::new(LiteralMap::default()),
            name: "e-a-0".into(),
            interruptible: false,
            cache_key: cache_key.map(str::to_string),
            cache_serializable: false,
            array_size: None,
        }
    }

    fn fed_status(h: &Recorder) -> Vec<String> {
        h.fed
            .iter()
            .map(|e| match e {
                Event::Task { status, .. } => match status {
                    TaskStatus::Failed { code, .. } => code.clone(),
                    TaskStatus::Succeeded { cached, .. } => format!("succeeded cached={cached}"),
                    other => format!("{other:?}"),
                },
                Event::Child { result, .. } => match result {
                    Ok(_) => "child ok".into(),
                    Err(e) => e.code.clone(),
                },
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// The name in the package of the recorder's task `short`.
    fn task_named(h: &Recorder, short: &str) -> String {
        h.program
            .package
            .tasks
            .keys()
            .find(|k| k.ends_with(short))
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_task_starts_on_its_connector_or_is_refused() {
        let mut h = recorder();
        let add = task_named(&h, "add");
        let run = task_named(&h, "pass");
        block(apply(&mut h, Effect::StartTask(launch(&add, None)))).unwrap();
        assert_eq!(h.calls, ["start e-a-0 on echoes"]);
        block(apply(&mut h, Effect::StartTask(launch(&run, None)))).unwrap();
        block(apply(&mut h, Effect::StartTask(launch("nope", None)))).unwrap();
        assert_eq!(fed_status(&h), ["NoConnector", "NoTask"]);
        assert_eq!(h.calls.len(), 1, "nothing else started: {:?}", h.calls);
    }

    #[test]
    fn a_cached_result_is_given_instead_of_a_start() {
        let mut h = recorder();
        let add = task_named(&h, "add");
        h.cache.insert("k1".into(), LiteralMap::default());
        block(apply(&mut h, Effect::StartTask(launch(&add, Some("k1"))))).unwrap();
        assert_eq!(fed_status(&h), ["succeeded cached=true"]);
        assert!(h.calls.is_empty(), "{:?}", h.calls);
        block(apply(&mut h, Effect::StartTask(launch(&add, Some("k2"))))).unwrap();
        assert_eq!(h.calls, ["start e-a-0 on echoes"]);
    }

    #[test]
    fn a_serializable_key_is_computed_by_one_attempt_while_the_others_wait() {
        let mut h = recorder();
        let add = task_named(&h, "add");
        let serial = |name: &str| TaskLaunch {
            name: name.into(),
            cache_serializable: true,
            ..launch(&add, Some("k"))
        };
        block(apply(&mut h, Effect::StartTask(serial("e-a-0")))).unwrap();
        // Another attempt of the same key waits (a timer), and starts nothing.
        block(apply(&mut h, Effect::StartTask(serial("f-a-0")))).unwrap();
        assert_eq!(h.calls, ["start e-a-0 on echoes", "timer 0 2s"]);
        // Asked again by its holder (a duplicate start), the key is still its own.
        block(apply(&mut h, Effect::StartTask(serial("e-a-0")))).unwrap();
        assert_eq!(h.calls.len(), 3);
        assert_eq!(h.calls[2], "start e-a-0 on echoes");
        // Once the result is stored, the waiter takes it instead of starting.
        h.cache.insert("k".into(), LiteralMap::default());
        block(apply(&mut h, Effect::StartTask(serial("f-a-0")))).unwrap();
        assert_eq!(fed_status(&h), ["succeeded cached=true"]);
        assert_eq!(h.calls.len(), 3);
        // A key not serializable is never reserved.
        h.cache.clear();
        block(apply(&mut h, Effect::StartTask(launch(&add, Some("k"))))).unwrap();
        assert_eq!(h.calls.len(), 4);
    }

    #[test]
    fn children_start_as_their_launch_plan_would_or_end_with_the_reason() {
        let mut h = recorder();
        let lp = h
            .program
            .package
            .launch_plans
            .keys()
            .find(|k| k.contains("inner"))
            .cloned()
            .unwrap();
        let mut inputs = LiteralMap::default();
        inputs.literals.insert(
            "x".into(),
            updraft_engine::literal::primitive_lit(updraft_proto::core::primitive::Value::Integer(
                3,
            )),
        );
        block(apply(
            &mut h,
            Effect::StartChild {
                node: 0,
                launch_plan: lp,
                inputs,
                name: "c1".into(),
            },
        ))
        .unwrap();
        assert_eq!(h.calls.len(), 1);
        assert!(
            h.calls[0].starts_with("child c1 of 0: inner"),
            "{:?}",
            h.calls
        );
        // The node's input and the launch plan's default.
        assert!(h.calls[0].ends_with("[\"k\", \"x\"]"), "{:?}", h.calls);
        block(apply(
            &mut h,
            Effect::StartChild {
                node: 0,
                launch_plan: "missing".into(),
                inputs: LiteralMap::default(),
                name: "c2".into(),
            },
        ))
        .unwrap();
        let program = h.program.clone();
        block(apply(
            &mut h,
            Effect::StartDynamic {
                node: 0,
                program,
                spec: Box::default(),
                name: "d1".into(),
            },
        ))
        .unwrap();
        assert_eq!(fed_status(&h), ["NoLaunchPlan", "Unsupported"]);
    }
}
