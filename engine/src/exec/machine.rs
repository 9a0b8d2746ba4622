//! The state machine behind [`Execution::step`].

mod array;
mod attempts;
mod history;
mod scope;
mod snapshot;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use updraft_proto::core::{Literal, LiteralMap, literal, primitive, scalar};
use updraft_proto::updraft::{AttemptRecord, PhaseChange};

use super::resolve::{Values, evaluate, resolve, unwrap_union};
use super::{
    Effect, ErrorKind, Event, ExecConfig, ExecError, ExecPhase, NodePhase, Program, TaskStatus,
    TimerKind,
};
use crate::compile::{CompiledPackage, CompiledWorkflow, Gate, NodeIdx, NodeKind, Otherwise};
use crate::types;

pub use snapshot::{error_from_record, error_record, exec_phase, exec_phase_code, node_phase_of};

/// One attempt-carrying unit: a task node, or one element of an array node.
#[derive(Debug, Clone, Default)]
struct Attempts {
    phase: Option<NodePhase>,
    /// A started attempt holds one of the execution's parallelism slots until it ends or is aborted.
    in_flight: bool,
    attempt: u32,
    user_failures: u32,
    system_failures: u32,
    outputs: Option<LiteralMap>,
    /// What became of its attempts (see [`history`]).
    history: Vec<AttemptRecord>,
}

#[derive(Debug, Clone)]
struct ArrayState {
    size: u32,
    next: u32,
    running: u32,
    succeeded: u32,
    failed: u32,
    /// Failures tolerated before the array fails.
    allowed_failures: u32,
    elements: Vec<Attempts>,
    /// The inputs every element sees (whole lists: flytekit map tasks read their element by index).
    shared_inputs: Arc<LiteralMap>,
}

#[derive(Debug, Clone)]
struct NodeState {
    phase: NodePhase,
    /// Upstream siblings that have not succeeded yet.
    remaining: u32,
    /// Children of this scope node (subworkflow, branch) not finished yet.
    pending_children: u32,
    /// A child of this scope failed.
    child_failed: Option<ExecError>,
    task: Attempts,
    inputs: Option<Arc<LiteralMap>>,
    outputs: Option<LiteralMap>,
    error: Option<ExecError>,
    array: Option<Box<ArrayState>>,
    /// The child execution running the sub-workflow this node's dynamic task returned.
    dynamic: Option<String>,
    /// Its phase changes (see [`history`]).
    phases: Vec<PhaseChange>,
}

enum Todo {
    Ready(NodeIdx),
    Done(NodeIdx),
    /// An echo task attempt, answered inside the engine: its outputs are its inputs.
    Echo(NodeIdx, Option<u32>, u32, Arc<LiteralMap>),
}

/// One execution of a workflow: its state and the step function.
#[derive(Debug, Clone)]
pub struct Execution {
    pkg: Arc<CompiledPackage>,
    workflow: String,
    config: ExecConfig,
    phase: ExecPhase,
    inputs: LiteralMap,
    nodes: Vec<NodeState>,
    top_pending: u32,
    error: Option<ExecError>,
    outputs: Option<LiteralMap>,
    running_tasks: u32,
    waiting: VecDeque<(NodeIdx, Option<u32>)>,
    signal_waiters: HashMap<String, NodeIdx>,
    early_signals: HashMap<String, Literal>,
    /// Most attempts the steps since [`Execution::limit_starts`] start (the runtime's, not stored).
    start_budget: Option<u32>,
    /// Attempts started since the budget was set.
    started_in_budget: u32,
    /// The step under way put off attempts for the budget.
    deferred: bool,
    /// A step since the budget was set asked to go on with the attempts it put off.
    continue_asked: bool,
    /// When it started, in milliseconds since the Unix epoch (0 before, or when no runtime said).
    started_ms: u64,
    /// When it ended, in milliseconds since it started.
    ended_at: Option<u64>,
    /// The time the runtime gave the step under way ([`Execution::step_at`]); not stored.
    now_ms: u64,
}

struct ValuesView<'a> {
    inputs: &'a LiteralMap,
    nodes: &'a [NodeState],
}

impl Values for ValuesView<'_> {
    fn scope_inputs(&self, scope: Option<u32>) -> Option<&LiteralMap> {
        match scope {
            None => Some(self.inputs),
            Some(n) => self.nodes.get(n as usize)?.inputs.as_deref(),
        }
    }

    fn node_outputs(&self, node: u32) -> Option<&LiteralMap> {
        self.nodes.get(node as usize)?.outputs.as_ref()
    }
}

/// A DNS-1123 label (lowercase alphanumerics and `-`, at most 63 characters) made from `raw`, unique per
/// input: long names keep a prefix and end with a digest of the whole.
pub fn dns_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-').to_string();
    if s.len() <= 63 && s == raw {
        return s;
    }
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(raw.as_bytes())
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect();
    let keep: String = s.chars().take(52).collect();
    format!("{}-{digest}", keep.trim_end_matches('-'))
}

impl Execution {
    /// A new, not yet started execution of `program`.
    pub fn new(program: &Program, config: ExecConfig) -> Result<Self, String> {
        let wf = program
            .package
            .workflows
            .get(&program.workflow)
            .ok_or_else(|| format!("no workflow `{}`", program.workflow))?;
        let nodes = wf
            .nodes
            .iter()
            .map(|n| NodeState {
                phase: NodePhase::NotYetStarted,
                remaining: n.upstream.len() as u32,
                pending_children: 0,
                child_failed: None,
                task: Attempts::default(),
                inputs: None,
                outputs: None,
                error: None,
                array: None,
                dynamic: None,
                phases: Vec::new(),
            })
            .collect();
        Ok(Self {
            pkg: program.package.clone(),
            workflow: program.workflow.clone(),
            config,
            phase: ExecPhase::Queued,
            inputs: LiteralMap::default(),
            nodes,
            top_pending: wf.roots.len() as u32,
            error: None,
            outputs: None,
            running_tasks: 0,
            waiting: VecDeque::new(),
            signal_waiters: HashMap::new(),
            early_signals: HashMap::new(),
            start_budget: None,
            started_in_budget: 0,
            deferred: false,
            continue_asked: false,
            started_ms: 0,
            ended_at: None,
            now_ms: 0,
        })
    }

    /// Bounds how many attempts the [`Execution::step`]s from now until the next call start
    /// together (None: no bound, the default). A runtime calls it as each unit of its work begins —
    /// a transition that applies a batch of events — so that the unit's work is bounded however wide
    /// a fan-out or map is and however many events it applies (a function's timeout bounds the
    /// transition, not each event). The rest wait in order, as for the parallelism cap, and the
    /// first step that puts some off ends with an [`Effect::Timer`] of kind [`TimerKind::Continue`],
    /// whose event (in the next unit, after the next call) starts the next ones. Not part of the
    /// stored state: set it after each restore.
    pub fn limit_starts(&mut self, per_unit: Option<u32>) {
        self.start_budget = per_unit.map(|n| n.max(1));
        self.started_in_budget = 0;
        self.continue_asked = false;
    }

    fn wf(&self) -> &CompiledWorkflow {
        &self.pkg.workflows[&self.workflow]
    }

    /// The execution's phase.
    pub fn phase(&self) -> ExecPhase {
        self.phase
    }

    /// A node's phase.
    pub fn node_phase(&self, node: NodeIdx) -> NodePhase {
        self.nodes[node as usize].phase
    }

    /// A node's outputs, once it succeeded.
    pub fn node_outputs(&self, node: NodeIdx) -> Option<&LiteralMap> {
        self.nodes[node as usize].outputs.as_ref()
    }

    /// A node's error, if it failed.
    pub fn node_error(&self, node: NodeIdx) -> Option<&ExecError> {
        self.nodes[node as usize].error.as_ref()
    }

    /// The workflow's outputs, once it succeeded.
    pub fn outputs(&self) -> Option<&LiteralMap> {
        self.outputs.as_ref()
    }

    /// The error the execution failed with.
    pub fn error(&self) -> Option<&ExecError> {
        self.error.as_ref()
    }

    /// Progress of an array node once it started: (elements, succeeded, failed).
    pub fn array_progress(&self, node: NodeIdx) -> Option<(u32, u32, u32)> {
        let a = self.nodes.get(node as usize)?.array.as_ref()?;
        Some((a.size, a.succeeded, a.failed))
    }

    /// The current attempt of a node (or of one array element).
    pub fn attempt(&self, node: NodeIdx, index: Option<u32>) -> u32 {
        let n = &self.nodes[node as usize];
        match (index, &n.array) {
            (Some(i), Some(a)) => a.elements.get(i as usize).map_or(0, |e| e.attempt),
            _ => n.task.attempt,
        }
    }

    /// True once a task attempt has ended and will never be started again: a later attempt exists, its
    /// node (or array element) has finished, or a dynamic sub-workflow runs in its place. Its objects
    /// can then be deleted; before, an attempt whose start was never committed may still be started
    /// (idempotently, by name) and must find what it made.
    pub fn attempt_over(&self, node: NodeIdx, index: Option<u32>, attempt: u32) -> bool {
        if self.phase().is_terminal() {
            return true;
        }
        let Some(n) = self.nodes.get(node as usize) else {
            return false;
        };
        // A node that has finished starts nothing again (a succeeded array may keep no elements).
        if n.phase.is_terminal() {
            return true;
        }
        let (current, phase) = match (index, &n.array) {
            (Some(i), Some(a)) => match a.elements.get(i as usize) {
                Some(e) => (e.attempt, e.phase.unwrap_or(NodePhase::NotYetStarted)),
                None => return false,
            },
            _ => (n.task.attempt, n.phase),
        };
        current > attempt
            || (current == attempt
                && (phase.is_terminal() || (index.is_none() && n.dynamic.is_some())))
    }

    /// Applies one event and returns what the runtime must do; the history it records is stamped with
    /// the time of the last [`Execution::step_at`] (none: the execution's start).
    pub fn step(&mut self, event: Event) -> Vec<Effect> {
        self.step_at(event, self.now_ms)
    }

    /// Applies one event at `now_ms` (milliseconds since the Unix epoch, as the runtime's clock reads)
    /// and returns what the runtime must do. The time only stamps the history (phase changes, attempts'
    /// starts and ends): the engine's decisions never depend on it.
    pub fn step_at(&mut self, event: Event, now_ms: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.phase.is_terminal() {
            return fx;
        }
        self.now_ms = now_ms;
        if self.started_ms == 0 && matches!(event, Event::Start { .. }) {
            self.started_ms = now_ms;
        }
        self.deferred = false;
        let mut todo = VecDeque::new();
        match event {
            Event::Start { inputs } => {
                if self.phase != ExecPhase::Queued {
                    return fx;
                }
                self.inputs = inputs;
                self.phase = ExecPhase::Running;
                let roots = self.wf().roots.clone();
                if roots.is_empty() {
                    self.finish_scope_top(&mut fx, &mut todo);
                }
                for r in roots {
                    if self.nodes[r as usize].remaining == 0 {
                        todo.push_back(Todo::Ready(r));
                    }
                }
            }
            Event::Task {
                node,
                index,
                attempt,
                status,
            } => self.on_task(node, index, attempt, status, &mut fx, &mut todo),
            // The work put off goes on as the step drains.
            Event::Timer {
                kind: TimerKind::Continue,
                ..
            } => {}
            Event::Timer {
                node,
                index,
                attempt,
                kind,
            } => self.on_timer(node, index, attempt, kind, &mut fx, &mut todo),
            Event::Signal { id, value } => match self.signal_waiters.get(&id).copied() {
                Some(node) if self.nodes[node as usize].phase == NodePhase::Running => {
                    self.signal_waiters.remove(&id);
                    self.on_signal(node, *value, &mut fx, &mut todo);
                }
                Some(_) => {}
                None => {
                    self.early_signals.entry(id).or_insert(*value);
                }
            },
            Event::Child { node, result } => {
                let i = node as usize;
                if i < self.nodes.len()
                    && self.nodes[i].phase == NodePhase::Running
                    && (self.nodes[i].dynamic.is_some()
                        || matches!(self.wf().node(node).kind, NodeKind::LaunchPlan { .. }))
                {
                    match result {
                        Ok(out) => self.succeed_checked(node, out, &mut fx, &mut todo),
                        Err(e) => self.fail(node, NodePhase::Failed, e, &mut fx, &mut todo),
                    }
                }
            }
            Event::Abort { reason } => {
                let err = ExecError {
                    node: String::new(),
                    code: "Aborted".into(),
                    message: reason,
                    kind: ErrorKind::User,
                };
                self.stop_all(ExecPhase::Aborted, err, &mut fx);
                return fx;
            }
            Event::Fail { code, message } => {
                let err = ExecError {
                    node: String::new(),
                    code,
                    message,
                    kind: ErrorKind::System,
                };
                self.stop_all(ExecPhase::Failed, err, &mut fx);
                return fx;
            }
        }
        self.drain(&mut fx, &mut todo);
        if self.deferred
            && !self.continue_asked
            && !self.phase.is_terminal()
            && !self.waiting.is_empty()
        {
            self.continue_asked = true;
            fx.push(Effect::Timer {
                node: 0,
                index: None,
                attempt: 0,
                kind: TimerKind::Continue,
                after: std::time::Duration::ZERO,
            });
        }
        fx
    }

    /// Stops all running work and ends the execution in `phase` with `err`.
    fn stop_all(&mut self, phase: ExecPhase, err: ExecError, fx: &mut Vec<Effect>) {
        if self.phase == ExecPhase::Queued {
            self.phase = ExecPhase::Running;
        }
        let all: Vec<NodeIdx> = (0..self.nodes.len() as NodeIdx).collect();
        self.abort_nodes(&all, fx);
        self.finish(phase, None, Some(err), fx);
    }

    fn drain(&mut self, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        loop {
            self.drain_todo(fx, todo);
            if self.phase.is_terminal() || self.waiting.is_empty() {
                return;
            }
            self.pump_waiting(fx, todo);
            if todo.is_empty() {
                return;
            }
        }
    }

    fn drain_todo(&mut self, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        while let Some(t) = todo.pop_front() {
            if self.phase.is_terminal() {
                return;
            }
            match t {
                Todo::Ready(n) => self.ready(n, fx, todo),
                Todo::Done(n) => self.done(n, fx, todo),
                Todo::Echo(n, index, attempt, inputs) => {
                    let status = TaskStatus::Succeeded {
                        outputs: (*inputs).clone(),
                        cached: false,
                    };
                    self.on_task(n, index, attempt, status, fx, todo);
                }
            }
        }
    }

    fn set_phase(&mut self, node: NodeIdx, phase: NodePhase, fx: &mut Vec<Effect>) {
        let at = self.elapsed();
        let st = &mut self.nodes[node as usize];
        if st.phase != phase {
            st.phase = phase;
            history::phase_changed(&mut st.phases, phase, at);
            fx.push(Effect::NodePhase { node, phase });
        }
    }

    fn resolve_inputs(&self, node: NodeIdx) -> Result<LiteralMap, String> {
        let view = ValuesView {
            inputs: &self.inputs,
            nodes: &self.nodes,
        };
        let mut out = BTreeMap::new();
        for (var, b) in &self.wf().node(node).inputs {
            out.insert(
                var.clone(),
                resolve(b, &view).map_err(|e| format!("input `{var}`: {e}"))?,
            );
        }
        Ok(LiteralMap { literals: out })
    }

    fn user_error(&self, node: NodeIdx, code: &str, message: String) -> ExecError {
        ExecError {
            node: self.wf().node(node).id.clone(),
            code: code.into(),
            message,
            kind: ErrorKind::User,
        }
    }

    /// A node whose inputs are all available (and whose scope is running) starts.
    fn ready(&mut self, node: NodeIdx, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        if self.nodes[node as usize].phase != NodePhase::NotYetStarted {
            return;
        }
        let inputs = match self.resolve_inputs(node) {
            Ok(i) => Arc::new(i),
            Err(e) => {
                let err = self.user_error(node, "BindingError", e);
                self.fail(node, NodePhase::Failed, err, fx, todo);
                return;
            }
        };
        self.nodes[node as usize].inputs = Some(inputs.clone());
        let wf_node = self.wf().node(node).clone();
        if let Some(t) = wf_node
            .metadata
            .timeout
            .filter(|t| t.seconds > 0 || t.nanos > 0)
        {
            // As Flyte compiles it: a node's timeout bounds each attempt, and the node as a whole gets
            // twice that (its active deadline). A gate has no attempts: the timeout bounds its wait.
            let per_attempt = crate::literal::std_duration(&t);
            let after = if matches!(wf_node.kind, NodeKind::Gate(_)) {
                per_attempt
            } else {
                per_attempt * 2
            };
            fx.push(Effect::Timer {
                node,
                index: None,
                attempt: 0,
                kind: TimerKind::NodeTimeout,
                after,
            });
        }
        match &wf_node.kind {
            NodeKind::Task { .. } => {
                self.set_phase(node, NodePhase::Queued, fx);
                self.launch(node, None, fx, todo);
            }
            NodeKind::Array {
                success, mapped, ..
            } => {
                self.start_array(node, &inputs, *success, mapped, fx, todo);
            }
            NodeKind::Branch { cases, otherwise } => {
                self.set_phase(node, NodePhase::Running, fx);
                let mut chosen = None;
                for (cond, child) in cases {
                    match evaluate(cond, &inputs, 0) {
                        Ok(true) if chosen.is_none() => chosen = Some(*child),
                        Ok(_) => {}
                        Err(e) => {
                            let err = self.user_error(node, "ConditionError", e);
                            self.fail(node, NodePhase::Failed, err, fx, todo);
                            return;
                        }
                    }
                }
                let chosen = chosen.or(match otherwise {
                    Otherwise::Node(n) => Some(*n),
                    _ => None,
                });
                let mut others: Vec<NodeIdx> = cases.iter().map(|(_, c)| *c).collect();
                if let Otherwise::Node(n) = otherwise {
                    others.push(*n);
                }
                for o in others.into_iter().filter(|o| Some(*o) != chosen) {
                    self.set_phase(o, NodePhase::Skipped, fx);
                }
                match (chosen, otherwise) {
                    (Some(c), _) => {
                        self.nodes[node as usize].pending_children = 1;
                        todo.push_back(Todo::Ready(c));
                    }
                    (None, Otherwise::Fail(msg)) => {
                        let err = self.user_error(node, "BranchFailure", msg.clone());
                        self.fail(node, NodePhase::Failed, err, fx, todo);
                    }
                    (None, _) => {
                        let err = self.user_error(
                            node,
                            "NoBranchTaken",
                            "no case of the branch holds and it has no else".into(),
                        );
                        self.fail(node, NodePhase::Failed, err, fx, todo);
                    }
                }
            }
            NodeKind::Subworkflow { children, .. } => {
                self.set_phase(node, NodePhase::Running, fx);
                self.nodes[node as usize].pending_children = children.len() as u32;
                if children.is_empty() {
                    self.complete_subworkflow(node, fx, todo);
                }
                for &c in children {
                    if self.nodes[c as usize].remaining == 0 {
                        todo.push_back(Todo::Ready(c));
                    }
                }
            }
            NodeKind::LaunchPlan { launch_plan } => {
                self.set_phase(node, NodePhase::Running, fx);
                let name = self.child_name(node);
                fx.push(Effect::StartChild {
                    node,
                    launch_plan: launch_plan.clone(),
                    inputs: (*inputs).clone(),
                    name,
                });
            }
            NodeKind::Gate(g) => {
                self.set_phase(node, NodePhase::Running, fx);
                match g {
                    Gate::Sleep(d) => fx.push(Effect::Timer {
                        node,
                        index: None,
                        attempt: 0,
                        kind: TimerKind::Sleep,
                        after: *d,
                    }),
                    Gate::Approve { signal_id } | Gate::Signal { signal_id, .. } => {
                        if let Some(v) = self.early_signals.remove(signal_id) {
                            self.on_signal(node, v, fx, todo);
                        } else {
                            self.signal_waiters.insert(signal_id.clone(), node);
                        }
                    }
                }
            }
        }
    }

    fn on_signal(
        &mut self,
        node: NodeIdx,
        value: Literal,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        match self.wf().node(node).kind.clone() {
            NodeKind::Gate(Gate::Approve { signal_id }) => {
                let approved = matches!(
                    &unwrap_union(&value).value,
                    Some(literal::Value::Scalar(s)) if matches!(&s.value, Some(scalar::Value::Primitive(p)) if p.value == Some(primitive::Value::Boolean(true)))
                );
                if approved {
                    let out = self.nodes[node as usize]
                        .inputs
                        .as_deref()
                        .cloned()
                        .unwrap_or_default();
                    self.succeed(node, out, fx, todo);
                } else {
                    let err = self.user_error(
                        node,
                        "Rejected",
                        format!("`{signal_id}` was not approved"),
                    );
                    self.fail(node, NodePhase::Failed, err, fx, todo);
                }
            }
            NodeKind::Gate(Gate::Signal {
                signal_id,
                r#type,
                output,
            }) => {
                if types::literal_fits(&value, &r#type) {
                    self.succeed(
                        node,
                        LiteralMap {
                            literals: [(output, value)].into(),
                        },
                        fx,
                        todo,
                    );
                } else {
                    // A wrong value does not end the wait: keep waiting for a valid one.
                    self.signal_waiters.insert(signal_id, node);
                }
            }
            _ => {}
        }
    }

    fn succeed(
        &mut self,
        node: NodeIdx,
        outputs: LiteralMap,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        let st = &mut self.nodes[node as usize];
        if st.phase.is_terminal() {
            return;
        }
        st.outputs = Some(outputs);
        self.set_phase(node, NodePhase::Succeeded, fx);
        todo.push_back(Todo::Done(node));
    }

    /// Succeeds with `outputs` if they hold every output the node declares; fails it otherwise.
    fn succeed_checked(
        &mut self,
        node: NodeIdx,
        outputs: LiteralMap,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        let missing: Vec<&String> = self
            .wf()
            .node(node)
            .outputs
            .keys()
            .filter(|k| !outputs.literals.contains_key(*k))
            .collect();
        if missing.is_empty() {
            self.succeed(node, outputs, fx, todo);
        } else {
            let err = self.user_error(
                node,
                "MissingOutputs",
                format!("the task did not produce {missing:?}"),
            );
            self.fail(node, NodePhase::Failed, err, fx, todo);
        }
    }

    fn fail(
        &mut self,
        node: NodeIdx,
        phase: NodePhase,
        err: ExecError,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        if self.nodes[node as usize].phase.is_terminal() {
            return;
        }
        // Stop what it still runs: array elements, children, a child execution.
        self.abort_running_work(node, fx);
        self.nodes[node as usize].error = Some(err);
        self.set_phase(node, phase, fx);
        todo.push_back(Todo::Done(node));
    }

    fn finish(
        &mut self,
        phase: ExecPhase,
        outputs: Option<LiteralMap>,
        error: Option<ExecError>,
        fx: &mut Vec<Effect>,
    ) {
        if self.phase.is_terminal() {
            return;
        }
        self.phase = phase;
        self.ended_at = Some(self.elapsed());
        self.outputs.clone_from(&outputs);
        if error.is_some() {
            self.error.clone_from(&error);
        }
        fx.push(Effect::Finished {
            phase,
            outputs,
            error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::dns_name;

    #[test]
    fn dns_names_are_valid_and_unique() {
        assert_eq!(dns_name("exec-n0-0"), "exec-n0-0");
        let a = dns_name("Exec_1-n1-n0-0");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        assert_ne!(a, dns_name("exec-1-n1-n0-0"));
        let long = dns_name(&"x".repeat(200));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, dns_name(&format!("{}y", "x".repeat(200))));
    }
}
