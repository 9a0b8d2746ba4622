//! Task attempts: launching under the parallelism caps, statuses, retries, timeouts.

use std::collections::VecDeque;

use updraft_proto::core::LiteralMap;

use std::sync::Arc;

use super::{Attempts, Execution, Todo, dns_name};
use crate::compile::{Gate, NodeIdx, NodeKind, compile_dynamic};
use crate::exec::{
    Effect, ErrorKind, ExecError, NodePhase, Program, TaskLaunch, TaskStatus, TimerKind, cache_key,
};

/// How an attempt starts: answered by the engine (an echo task), or launched with its timeout.
enum AttemptStart {
    Echo(u32, Arc<LiteralMap>),
    Task(TaskLaunch, Option<std::time::Duration>),
}

impl Execution {
    /// Requests a task attempt (for a task node, or element `index` of an array), or queues it when the
    /// execution is at its parallelism limit.
    pub(super) fn launch(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        if self
            .config
            .max_parallelism
            .is_some_and(|m| self.running_tasks >= m)
        {
            self.waiting.push_back((node, index));
            return;
        }
        if self.budget_spent() {
            self.waiting.push_back((node, index));
            self.deferred = true;
            return;
        }
        self.started_in_budget += 1;
        self.running_tasks += 1;
        self.unit_mut(node, index).in_flight = true;
        match self.attempt_start(node, index) {
            AttemptStart::Echo(attempt, inputs) => {
                self.attempt_queued(node, index, attempt, false);
                todo.push_back(Todo::Echo(node, index, attempt, inputs));
            }
            AttemptStart::Task(launch, timeout) => {
                let attempt = launch.attempt;
                self.attempt_queued(node, index, attempt, launch.cache_key.is_some());
                fx.push(Effect::StartTask(launch));
                // Each attempt is bounded by the node's timeout, or else the task's.
                if let Some(after) = timeout {
                    fx.push(Effect::Timer {
                        node,
                        index,
                        attempt,
                        kind: TimerKind::AttemptTimeout,
                        after,
                    });
                }
            }
        }
    }

    /// What starting the current attempt of `node` (element `index`) takes: an echo the engine answers
    /// itself, or a task launch with the attempt's timeout.
    fn attempt_start(&self, node: NodeIdx, index: Option<u32>) -> AttemptStart {
        let wf_node = self.wf().node(node);
        let sub = match &wf_node.kind {
            NodeKind::Array { sub, .. } => *sub,
            _ => node,
        };
        let task_name = match &self.wf().node(sub).kind {
            NodeKind::Task { task } => task.clone(),
            _ => String::new(),
        };
        let st = &self.nodes[node as usize];
        let (attempt, inputs) = match (index, &st.array) {
            (Some(i), Some(a)) => (
                a.elements[i as usize].attempt,
                self.element_inputs(node, i, a),
            ),
            _ => (st.task.attempt, st.inputs.clone().unwrap_or_default()),
        };
        let task = self.pkg.tasks.get(&task_name);
        if task.is_some_and(|t| t.runs_in_engine()) {
            return AttemptStart::Echo(attempt, inputs);
        }
        let meta = task
            .and_then(|t| t.template.metadata.clone())
            .unwrap_or_default();
        let node_meta = &wf_node.metadata;
        let cacheable = match node_meta.cacheable_value {
            Some(updraft_proto::core::node_metadata::CacheableValue::Cacheable(c)) => c,
            None => meta.discoverable,
        };
        let version = match &node_meta.cache_version_value {
            Some(updraft_proto::core::node_metadata::CacheVersionValue::CacheVersion(v)) => {
                v.clone()
            }
            None => meta.discovery_version.clone(),
        };
        let cache_serializable = match node_meta.cache_serializable_value {
            Some(
                updraft_proto::core::node_metadata::CacheSerializableValue::CacheSerializable(s),
            ) => s,
            None => meta.cache_serializable,
        };
        let interruptible = match node_meta.interruptible_value {
            Some(updraft_proto::core::node_metadata::InterruptibleValue::Interruptible(i)) => i,
            None => match meta.interruptible_value {
                Some(updraft_proto::core::task_metadata::InterruptibleValue::Interruptible(i)) => i,
                None => self.wf().interruptible,
            },
        };
        let cache_key = (cacheable && !version.is_empty()).then(|| {
            // An array element is identified by its own element of the mapped lists, even when the task
            // reads the whole lists and picks its element by index (a task with a per-element interface
            // already has its own view as its inputs).
            let per_element = matches!(
                wf_node.kind,
                NodeKind::Array {
                    original_interface: true,
                    ..
                }
            );
            let ignored = &meta.cache_ignore_input_vars;
            match (index, &self.nodes[node as usize].array) {
                (Some(i), Some(a)) if !per_element => cache_key(
                    &task_name,
                    &version,
                    &self.element_view(node, i, a),
                    ignored,
                ),
                _ => cache_key(&task_name, &version, &inputs, ignored),
            }
        });
        let node_id = wf_node.id.clone();
        let name = self.task_name(node, index, attempt);
        let shared = matches!(
            wf_node.kind,
            NodeKind::Array {
                original_interface: false,
                ..
            }
        );
        let array_size = match (index, &self.nodes[node as usize].array) {
            (Some(_), Some(a)) if shared => Some(a.size),
            _ => None,
        };
        let launch = TaskLaunch {
            execution: self.config.name.clone(),
            node,
            node_id,
            index,
            attempt,
            task: task_name,
            inputs,
            name,
            interruptible,
            cache_key,
            cache_serializable,
            array_size,
        };
        let timeout = wf_node
            .metadata
            .timeout
            .or(meta.timeout)
            .filter(|t| t.seconds > 0 || t.nanos > 0)
            .map(|t| crate::literal::std_duration(&t));
        AttemptStart::Task(launch, timeout)
    }

    /// The steps since the budget was set have started as many attempts as it allows.
    fn budget_spent(&self) -> bool {
        self.start_budget
            .is_some_and(|b| self.started_in_budget >= b)
    }

    /// Starts waiting work while there is capacity (entries whose node or element has since ended are
    /// dropped). Runs once the step's other work has settled, so a slot freed while a node is failing
    /// never goes to that node's own queued work.
    pub(super) fn pump_waiting(&mut self, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        while self
            .config
            .max_parallelism
            .is_none_or(|m| self.running_tasks < m)
        {
            if self.budget_spent() {
                self.deferred |= !self.waiting.is_empty();
                return;
            }
            let Some((n, i)) = self.waiting.pop_front() else {
                return;
            };
            let node_live = matches!(
                self.nodes[n as usize].phase,
                NodePhase::Queued | NodePhase::Running
            );
            let live = node_live
                && match i {
                    Some(i) => self.nodes[n as usize]
                        .array
                        .as_ref()
                        .is_some_and(|a| a.elements[i as usize].phase == Some(NodePhase::Queued)),
                    None => true,
                };
            if live {
                self.launch(n, i, fx, todo);
            }
        }
    }

    pub(super) fn on_task(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        status: TaskStatus,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        let Some(st) = self.nodes.get(node as usize) else {
            return;
        };
        if !matches!(st.phase, NodePhase::Queued | NodePhase::Running) {
            return;
        }
        let unit = match (index, &st.array) {
            (Some(i), Some(a)) => match a.elements.get(i as usize) {
                Some(e) => e.clone(),
                None => return,
            },
            (None, None) if matches!(self.wf().node(node).kind, NodeKind::Task { .. }) => {
                st.task.clone()
            }
            _ => return,
        };
        let unit_phase = if index.is_some() {
            unit.phase.unwrap_or(NodePhase::NotYetStarted)
        } else {
            st.phase
        };
        if unit.attempt != attempt
            || !matches!(unit_phase, NodePhase::Queued | NodePhase::Running)
            || st.dynamic.is_some()
        {
            // Stale, or about an attempt whose dynamic sub-workflow already runs in its place.
            return;
        }
        match &status {
            TaskStatus::Queued => {}
            TaskStatus::Running => self.attempt_running(node, index, attempt),
            TaskStatus::Succeeded { cached, .. } => {
                let hit = *cached;
                self.attempt_ended(node, index, attempt, NodePhase::Succeeded, None, hit);
            }
            TaskStatus::Dynamic { .. } => {
                self.attempt_ended(node, index, attempt, NodePhase::Succeeded, None, false);
            }
            TaskStatus::Failed {
                code,
                message,
                kind,
                ..
            } => {
                let err = ExecError {
                    node: self.wf().node(node).id.clone(),
                    code: code.clone(),
                    message: message.clone(),
                    kind: *kind,
                };
                self.attempt_ended(node, index, attempt, NodePhase::Failed, Some(&err), false);
            }
        }
        match status {
            TaskStatus::Queued => {}
            TaskStatus::Running => match index {
                Some(i) => {
                    if let Some(a) = self.nodes[node as usize].array.as_mut() {
                        a.elements[i as usize].phase = Some(NodePhase::Running);
                    }
                }
                None => self.set_phase(node, NodePhase::Running, fx),
            },
            TaskStatus::Succeeded { outputs, .. } => {
                self.free_slot(node, index);
                match index {
                    Some(i) => self.element_done(node, i, Some(outputs), fx, todo),
                    None => {
                        self.set_phase(node, NodePhase::Running, fx);
                        self.succeed_checked(node, outputs, fx, todo);
                    }
                }
            }
            TaskStatus::Dynamic { spec } => {
                self.free_slot(node, index);
                if let Some(i) = index {
                    let err = self.user_error(
                        node,
                        "DynamicInArray",
                        format!("element {i} returned a dynamic sub-workflow, which array elements cannot run"),
                    );
                    self.nodes[node as usize].error.get_or_insert(err);
                    self.element_done(node, i, None, fx, todo);
                    return;
                }
                self.set_phase(node, NodePhase::Running, fx);
                let wf_node = self.wf().node(node);
                match compile_dynamic(&self.pkg, &wf_node.id, &wf_node.outputs, &spec) {
                    Ok((package, workflow)) => {
                        let name = self.dynamic_name(node, attempt);
                        self.nodes[node as usize].dynamic = Some(name.clone());
                        fx.push(Effect::StartDynamic {
                            node,
                            program: Program {
                                package: Arc::new(package),
                                workflow,
                            },
                            spec,
                            name,
                        });
                    }
                    Err(problems) => {
                        // A sub-workflow that does not compile fails the same way on every attempt.
                        let err = self.user_error(node, "DynamicSpecInvalid", problems.to_string());
                        self.fail(node, NodePhase::Failed, err, fx, todo);
                    }
                }
            }
            TaskStatus::Failed {
                code,
                message,
                kind,
                recoverable,
            } => {
                self.free_slot(node, index);
                let budget = match kind {
                    ErrorKind::User => self.user_retries(node),
                    ErrorKind::System => self.config.system_retries,
                };
                let used = match kind {
                    ErrorKind::User => unit.user_failures,
                    ErrorKind::System => unit.system_failures,
                };
                if recoverable && used < budget {
                    let u = self.unit_mut(node, index);
                    u.attempt += 1;
                    match kind {
                        ErrorKind::User => u.user_failures += 1,
                        ErrorKind::System => u.system_failures += 1,
                    }
                    u.phase = Some(NodePhase::Queued);
                    self.launch(node, index, fx, todo);
                    return;
                }
                let err = ExecError {
                    node: self.wf().node(node).id.clone(),
                    code,
                    message,
                    kind,
                };
                match index {
                    Some(i) => {
                        self.nodes[node as usize].error.get_or_insert(err);
                        self.element_done(node, i, None, fx, todo);
                    }
                    None => self.fail(node, NodePhase::Failed, err, fx, todo),
                }
            }
        }
    }

    /// An aborted unit gives its slot back (without starting waiting work: the caller is failing a node).
    pub(super) fn free_slot(&mut self, node: NodeIdx, index: Option<u32>) {
        if std::mem::take(&mut self.unit_mut(node, index).in_flight) {
            self.running_tasks = self.running_tasks.saturating_sub(1);
        }
    }

    pub(super) fn unit_mut(&mut self, node: NodeIdx, index: Option<u32>) -> &mut Attempts {
        let st = &mut self.nodes[node as usize];
        match (index, st.array.as_mut()) {
            (Some(i), Some(a)) => &mut a.elements[i as usize],
            _ => &mut st.task,
        }
    }

    pub(super) fn user_retries(&self, node: NodeIdx) -> u32 {
        let wf_node = self.wf().node(node);
        if let Some(r) = &wf_node.metadata.retries {
            return r.retries;
        }
        let sub = match &wf_node.kind {
            NodeKind::Array { sub, .. } => *sub,
            _ => node,
        };
        match &self.wf().node(sub).kind {
            NodeKind::Task { task } => self
                .pkg
                .tasks
                .get(task)
                .and_then(|t| t.template.metadata.as_ref())
                .and_then(|m| m.retries)
                .map_or(0, |r| r.retries),
            _ => 0,
        }
    }

    pub(super) fn on_timer(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        kind: TimerKind,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        let Some(st) = self.nodes.get(node as usize) else {
            return;
        };
        if st.phase.is_terminal() || st.phase == NodePhase::NotYetStarted {
            return;
        }
        match kind {
            TimerKind::Sleep => {
                if matches!(self.wf().node(node).kind, NodeKind::Gate(Gate::Sleep(_))) {
                    self.succeed(node, LiteralMap::default(), fx, todo);
                }
            }
            TimerKind::NodeTimeout => {
                let id = self.wf().node(node).id.clone();
                let err = ExecError {
                    node: id,
                    code: "NodeTimeout".into(),
                    message: "the node ran past its timeout".into(),
                    kind: ErrorKind::User,
                };
                self.fail(node, NodePhase::TimedOut, err, fx, todo);
            }
            TimerKind::CacheWait => {
                // Look again (the cache, then the key's reservation) for an attempt that waited on
                // another computing its result; one that has since ended or was retried is left.
                let current = self.attempt(node, index) == attempt;
                let in_flight = match (index, &st.array) {
                    (Some(i), Some(a)) => a.elements.get(i as usize).is_some_and(|e| e.in_flight),
                    _ => st.task.in_flight,
                };
                if current
                    && in_flight
                    && st.dynamic.is_none()
                    && let AttemptStart::Task(launch, _) = self.attempt_start(node, index)
                {
                    fx.push(Effect::StartTask(launch));
                }
            }
            TimerKind::AttemptTimeout => {
                // A dynamic task's attempt is over once its sub-workflow runs; the node's timeout still holds.
                if self.attempt(node, index) != attempt || st.dynamic.is_some() {
                    return;
                }
                let name = self.task_name(node, index, attempt);
                fx.push(Effect::AbortTask {
                    node,
                    index,
                    attempt,
                    name,
                });
                let (code, message) = ("Timeout", "the task attempt ran past its timeout");
                let err = ExecError {
                    node: self.wf().node(node).id.clone(),
                    code: code.into(),
                    message: message.into(),
                    kind: ErrorKind::User,
                };
                self.attempt_ended(node, index, attempt, NodePhase::TimedOut, Some(&err), false);
                let status = TaskStatus::Failed {
                    code: code.into(),
                    message: message.into(),
                    kind: ErrorKind::User,
                    recoverable: true,
                };
                self.on_task(node, index, attempt, status, fx, todo);
            }
            // Handled by `step` (it names no node).
            TimerKind::Continue => {}
        }
    }

    /// The deterministic name of the child execution running the sub-workflow that attempt `attempt` of
    /// dynamic task node `node` returned.
    pub(super) fn dynamic_name(&self, node: NodeIdx, attempt: u32) -> String {
        let id = &self.wf().node(node).id;
        dns_name(&format!("{}-{id}-{attempt}-dynamic", self.config.name))
    }

    /// The deterministic name of a launch-plan node's child execution.
    pub(super) fn child_name(&self, node: NodeIdx) -> String {
        dns_name(&format!("{}-{}", self.config.name, self.wf().node(node).id))
    }

    pub(super) fn task_name(&self, node: NodeIdx, index: Option<u32>, attempt: u32) -> String {
        let id = &self.wf().node(node).id;
        dns_name(&match index {
            Some(i) => format!("{}-{id}-{i}-{attempt}", self.config.name),
            None => format!("{}-{id}-{attempt}", self.config.name),
        })
    }
}
