//! The state machine behind [`Execution::step`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use updraft_proto::core::{Literal, LiteralCollection, LiteralMap, literal, primitive, scalar};

use super::resolve::{Values, evaluate, resolve, unwrap_union};
use super::{
    Effect, ErrorKind, Event, ExecConfig, ExecError, ExecPhase, NodePhase, Program, TaskLaunch,
    TaskStatus, TimerKind, cache_key,
};
use crate::compile::{
    CompiledPackage, CompiledWorkflow, FailurePolicy, Gate, NodeIdx, NodeKind, Otherwise,
    SuccessCriteria,
};
use crate::literal::none_lit;
use crate::plugins::PluginKind;
use crate::types;

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
pub(super) fn dns_name(raw: &str) -> String {
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
        })
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

    /// The current attempt of a node (or of one array element).
    pub fn attempt(&self, node: NodeIdx, index: Option<u32>) -> u32 {
        let n = &self.nodes[node as usize];
        match (index, &n.array) {
            (Some(i), Some(a)) => a.elements.get(i as usize).map_or(0, |e| e.attempt),
            _ => n.task.attempt,
        }
    }

    /// Applies one event and returns what the runtime must do.
    pub fn step(&mut self, event: Event) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.phase.is_terminal() {
            return fx;
        }
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
                    && matches!(self.wf().node(node).kind, NodeKind::LaunchPlan { .. })
                {
                    match result {
                        Ok(out) => self.succeed(node, out, &mut fx, &mut todo),
                        Err(e) => self.fail(node, NodePhase::Failed, e, &mut fx, &mut todo),
                    }
                }
            }
            Event::Abort { reason } => {
                if self.phase == ExecPhase::Queued {
                    self.phase = ExecPhase::Running;
                }
                let all: Vec<NodeIdx> = (0..self.nodes.len() as NodeIdx).collect();
                self.abort_nodes(&all, &mut fx);
                let err = ExecError {
                    node: String::new(),
                    code: "Aborted".into(),
                    message: reason,
                    kind: ErrorKind::User,
                };
                self.finish(ExecPhase::Aborted, None, Some(err), &mut fx);
                return fx;
            }
        }
        self.drain(&mut fx, &mut todo);
        fx
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
        let st = &mut self.nodes[node as usize];
        if st.phase != phase {
            st.phase = phase;
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
            let after = Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
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
                let name = dns_name(&format!("{}-{}", self.config.name, wf_node.id));
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

    /// Requests a task attempt (for a task node, or element `index` of an array), or queues it when the
    /// execution is at its parallelism limit.
    fn launch(
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
        self.running_tasks += 1;
        self.unit_mut(node, index).in_flight = true;
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
        if task.is_some_and(|t| t.plugin == PluginKind::Echo) {
            todo.push_back(Todo::Echo(node, index, attempt, inputs));
            return;
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
        let cache_key = (cacheable && !version.is_empty())
            .then(|| cache_key(&task_name, &version, &inputs, &meta.cache_ignore_input_vars));
        let node_id = wf_node.id.clone();
        let raw = match index {
            Some(i) => format!("{}-{node_id}-{i}-{attempt}", self.config.name),
            None => format!("{}-{node_id}-{attempt}", self.config.name),
        };
        fx.push(Effect::StartTask(TaskLaunch {
            node,
            node_id,
            index,
            attempt,
            task: task_name,
            inputs,
            name: dns_name(&raw),
            interruptible,
            cache_key,
            cache_serializable,
        }));
        if let Some(t) = meta.timeout.filter(|t| t.seconds > 0 || t.nanos > 0) {
            let after = Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
            fx.push(Effect::Timer {
                node,
                index,
                attempt,
                kind: TimerKind::AttemptTimeout,
                after,
            });
        }
    }

    fn element_inputs(&self, node: NodeIdx, i: u32, a: &ArrayState) -> Arc<LiteralMap> {
        match &self.wf().node(node).kind {
            NodeKind::Array {
                original_interface: true,
                mapped,
                ..
            } => {
                // Mapped inputs contribute their element; the others (bound inputs) are passed whole.
                let literals = a
                    .shared_inputs
                    .literals
                    .iter()
                    .map(|(var, l)| {
                        let value = match (mapped.contains(var), &unwrap_union(l).value) {
                            (true, Some(literal::Value::Collection(c))) => {
                                c.literals.get(i as usize).cloned().unwrap_or_else(none_lit)
                            }
                            _ => l.clone(),
                        };
                        (var.clone(), value)
                    })
                    .collect();
                Arc::new(LiteralMap { literals })
            }
            _ => a.shared_inputs.clone(),
        }
    }

    /// Starts waiting work while there is capacity (entries whose node or element has since ended are
    /// dropped). Runs once the step's other work has settled, so a slot freed while a node is failing
    /// never goes to that node's own queued work.
    fn pump_waiting(&mut self, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        while self
            .config
            .max_parallelism
            .is_none_or(|m| self.running_tasks < m)
        {
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

    #[allow(clippy::too_many_arguments)]
    fn start_array(
        &mut self,
        node: NodeIdx,
        inputs: &Arc<LiteralMap>,
        success: SuccessCriteria,
        mapped: &[String],
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        self.set_phase(node, NodePhase::Running, fx);
        let mut size: Option<usize> = None;
        for var in mapped {
            let len = match inputs.literals.get(var).map(|l| &unwrap_union(l).value) {
                Some(Some(literal::Value::Collection(c))) => c.literals.len(),
                _ => {
                    let err =
                        self.user_error(node, "ArrayInput", format!("input `{var}` is not a list"));
                    self.fail(node, NodePhase::Failed, err, fx, todo);
                    return;
                }
            };
            if size.is_some_and(|s| s != len) {
                let err = self.user_error(
                    node,
                    "ArrayInput",
                    "the mapped lists have different lengths".into(),
                );
                self.fail(node, NodePhase::Failed, err, fx, todo);
                return;
            }
            size = Some(len);
        }
        let n = size.unwrap_or(0) as u32;
        let min_ok = match success {
            SuccessCriteria::All => n,
            SuccessCriteria::MinSuccesses(k) => k.min(n),
            SuccessCriteria::MinSuccessRatio(r) => ((r as f64) * n as f64).ceil() as u32,
        };
        self.nodes[node as usize].array = Some(Box::new(ArrayState {
            size: n,
            next: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
            allowed_failures: n - min_ok.min(n),
            elements: vec![Attempts::default(); n as usize],
            shared_inputs: inputs.clone(),
        }));
        if n == 0 {
            self.finish_array(node, fx, todo);
            return;
        }
        self.fill_array(node, fx, todo);
    }

    fn fill_array(&mut self, node: NodeIdx, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        let cap = match &self.wf().node(node).kind {
            NodeKind::Array { parallelism, .. } => parallelism.unwrap_or(u32::MAX),
            _ => u32::MAX,
        };
        loop {
            let Some(a) = self.nodes[node as usize].array.as_mut() else {
                return;
            };
            if a.running >= cap || a.next >= a.size {
                return;
            }
            let i = a.next;
            a.next += 1;
            a.running += 1;
            a.elements[i as usize].phase = Some(NodePhase::Queued);
            self.launch(node, Some(i), fx, todo);
        }
    }

    fn finish_array(&mut self, node: NodeIdx, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        let Some(a) = self.nodes[node as usize].array.take() else {
            return;
        };
        if a.failed > a.allowed_failures {
            self.nodes[node as usize].array = Some(a);
            return;
        }
        let outputs_types = self.wf().node(node).outputs.clone();
        let mut out = BTreeMap::new();
        for var in outputs_types.keys() {
            let literals = a
                .elements
                .iter()
                .map(|e| {
                    e.outputs
                        .as_ref()
                        .and_then(|o| o.literals.get(var).cloned())
                        .unwrap_or_else(none_lit)
                })
                .collect();
            out.insert(
                var.clone(),
                Literal {
                    value: Some(literal::Value::Collection(LiteralCollection { literals })),
                    ..Default::default()
                },
            );
        }
        self.succeed(node, LiteralMap { literals: out }, fx, todo);
    }

    fn on_task(
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
        if unit.attempt != attempt || !matches!(unit_phase, NodePhase::Queued | NodePhase::Running)
        {
            return;
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
                        let missing: Vec<&String> = self
                            .wf()
                            .node(node)
                            .outputs
                            .keys()
                            .filter(|k| !outputs.literals.contains_key(*k))
                            .collect();
                        if missing.is_empty() {
                            self.set_phase(node, NodePhase::Running, fx);
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
    fn free_slot(&mut self, node: NodeIdx, index: Option<u32>) {
        if std::mem::take(&mut self.unit_mut(node, index).in_flight) {
            self.running_tasks = self.running_tasks.saturating_sub(1);
        }
    }

    fn unit_mut(&mut self, node: NodeIdx, index: Option<u32>) -> &mut Attempts {
        let st = &mut self.nodes[node as usize];
        match (index, st.array.as_mut()) {
            (Some(i), Some(a)) => &mut a.elements[i as usize],
            _ => &mut st.task,
        }
    }

    fn user_retries(&self, node: NodeIdx) -> u32 {
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

    fn element_done(
        &mut self,
        node: NodeIdx,
        i: u32,
        outputs: Option<LiteralMap>,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        let Some(a) = self.nodes[node as usize].array.as_mut() else {
            return;
        };
        let e = &mut a.elements[i as usize];
        a.running = a.running.saturating_sub(1);
        match outputs {
            Some(o) => {
                e.phase = Some(NodePhase::Succeeded);
                e.outputs = Some(o);
                a.succeeded += 1;
            }
            None => {
                e.phase = Some(NodePhase::Failed);
                a.failed += 1;
            }
        }
        let (failed, allowed, finished) = (
            a.failed,
            a.allowed_failures,
            a.succeeded + a.failed == a.size,
        );
        if failed > allowed {
            let err = self.nodes[node as usize].error.clone().unwrap_or_else(|| {
                self.user_error(node, "ArrayFailure", "too many elements failed".into())
            });
            let err = ExecError {
                message: format!(
                    "{} of the array's elements failed (at most {allowed} may): {}",
                    failed, err.message
                ),
                ..err
            };
            self.fail(node, NodePhase::Failed, err, fx, todo);
        } else if finished {
            self.finish_array(node, fx, todo);
        } else {
            self.fill_array(node, fx, todo);
        }
    }

    fn on_timer(
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
            TimerKind::AttemptTimeout => {
                if self.attempt(node, index) != attempt {
                    return;
                }
                let name = self.task_name(node, index, attempt);
                fx.push(Effect::AbortTask {
                    node,
                    index,
                    attempt,
                    name,
                });
                let status = TaskStatus::Failed {
                    code: "Timeout".into(),
                    message: "the task attempt ran past its timeout".into(),
                    kind: ErrorKind::User,
                    recoverable: true,
                };
                self.on_task(node, index, attempt, status, fx, todo);
            }
        }
    }

    fn task_name(&self, node: NodeIdx, index: Option<u32>, attempt: u32) -> String {
        let id = &self.wf().node(node).id;
        dns_name(&match index {
            Some(i) => format!("{}-{id}-{i}-{attempt}", self.config.name),
            None => format!("{}-{id}-{attempt}", self.config.name),
        })
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

    /// Everything below `node` that runs is aborted (array elements, task attempt, child execution,
    /// nested scope nodes).
    fn abort_running_work(&mut self, node: NodeIdx, fx: &mut Vec<Effect>) {
        let wf_node = self.wf().node(node).clone();
        let st = &self.nodes[node as usize];
        match &wf_node.kind {
            NodeKind::Task { .. } if matches!(st.phase, NodePhase::Queued | NodePhase::Running) => {
                let attempt = st.task.attempt;
                let name = self.task_name(node, None, attempt);
                self.free_slot(node, None);
                fx.push(Effect::AbortTask {
                    node,
                    index: None,
                    attempt,
                    name,
                });
            }
            NodeKind::Array { .. } => {
                if let Some(a) = &st.array {
                    let running: Vec<(u32, u32)> = a
                        .elements
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| {
                            matches!(e.phase, Some(NodePhase::Queued | NodePhase::Running))
                        })
                        .map(|(i, e)| (i as u32, e.attempt))
                        .collect();
                    for (i, attempt) in running {
                        let name = self.task_name(node, Some(i), attempt);
                        self.free_slot(node, Some(i));
                        fx.push(Effect::AbortTask {
                            node,
                            index: Some(i),
                            attempt,
                            name,
                        });
                    }
                }
            }
            NodeKind::LaunchPlan { .. } if st.phase == NodePhase::Running => {
                let name = dns_name(&format!("{}-{}", self.config.name, wf_node.id));
                fx.push(Effect::AbortChild { node, name });
            }
            NodeKind::Subworkflow { children, .. } => {
                let children = children.clone();
                self.abort_nodes(&children, fx);
            }
            NodeKind::Branch { cases, otherwise } => {
                let mut kids: Vec<NodeIdx> = cases.iter().map(|(_, c)| *c).collect();
                if let Otherwise::Node(n) = otherwise {
                    kids.push(*n);
                }
                self.abort_nodes(&kids, fx);
            }
            _ => {}
        }
    }

    /// Aborts every non-terminal node of `nodes` (and what runs below them), marking them Aborted.
    fn abort_nodes(&mut self, nodes: &[NodeIdx], fx: &mut Vec<Effect>) {
        for &n in nodes {
            let phase = self.nodes[n as usize].phase;
            if phase.is_terminal() {
                continue;
            }
            if phase != NodePhase::NotYetStarted {
                self.abort_running_work(n, fx);
            }
            self.set_phase(n, NodePhase::Aborted, fx);
        }
        self.waiting
            .retain(|(n, _)| !self.nodes[*n as usize].phase.is_terminal());
    }

    /// A node reached a terminal phase: tell its dependents and its scope.
    fn done(&mut self, node: NodeIdx, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        let succeeded = self.nodes[node as usize].phase == NodePhase::Succeeded;
        let wf_node = self.wf().node(node);
        let (parent, downstream) = (wf_node.parent, wf_node.downstream.clone());
        if Some(node) == self.wf().failure_node {
            let err = self.error.clone();
            self.finish(ExecPhase::Failed, None, err, fx);
            return;
        }
        let scope_running = match parent {
            None => self.phase == ExecPhase::Running,
            Some(p) => self.nodes[p as usize].phase == NodePhase::Running,
        };
        for d in downstream {
            let ds = &mut self.nodes[d as usize];
            if ds.phase != NodePhase::NotYetStarted {
                continue;
            }
            if succeeded {
                ds.remaining = ds.remaining.saturating_sub(1);
                if ds.remaining == 0 && scope_running {
                    todo.push_back(Todo::Ready(d));
                }
            } else {
                // An input will never come: the dependent is skipped.
                self.set_phase(d, NodePhase::Skipped, fx);
                todo.push_back(Todo::Done(d));
            }
        }
        let failure = (!succeeded && self.nodes[node as usize].phase != NodePhase::Skipped)
            .then(|| self.nodes[node as usize].error.clone())
            .flatten();
        match parent {
            None => {
                if let Some(e) = failure {
                    self.error.get_or_insert(e);
                    if self.wf().failure_policy == FailurePolicy::FailImmediately {
                        let roots = self.wf().roots.clone();
                        self.abort_nodes(&roots, fx);
                        self.finish_scope_top(fx, todo);
                        return;
                    }
                }
                self.top_pending = self.top_pending.saturating_sub(1);
                if self.top_pending == 0 {
                    self.finish_scope_top(fx, todo);
                }
            }
            Some(p) => self.child_done(p, node, failure, fx, todo),
        }
    }

    fn child_done(
        &mut self,
        parent: NodeIdx,
        child: NodeIdx,
        failure: Option<ExecError>,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        if self.nodes[parent as usize].phase.is_terminal() {
            return;
        }
        match self.wf().node(parent).kind.clone() {
            NodeKind::Branch { .. } => match self.nodes[child as usize].phase {
                NodePhase::Succeeded => {
                    let out = self.nodes[child as usize]
                        .outputs
                        .clone()
                        .unwrap_or_default();
                    self.succeed(parent, out, fx, todo);
                }
                NodePhase::Skipped => {}
                _ => {
                    let err = failure.unwrap_or_else(|| {
                        self.user_error(
                            parent,
                            "BranchFailure",
                            "the chosen case did not succeed".into(),
                        )
                    });
                    self.fail(parent, NodePhase::Failed, err, fx, todo);
                }
            },
            NodeKind::Subworkflow {
                failure_policy,
                children,
                ..
            } => {
                if let Some(e) = failure {
                    self.nodes[parent as usize]
                        .child_failed
                        .get_or_insert(e.clone());
                    if failure_policy == FailurePolicy::FailImmediately {
                        self.abort_nodes(&children, fx);
                        self.fail(parent, NodePhase::Failed, e, fx, todo);
                        return;
                    }
                }
                let st = &mut self.nodes[parent as usize];
                st.pending_children = st.pending_children.saturating_sub(1);
                if st.pending_children == 0 {
                    self.complete_subworkflow(parent, fx, todo);
                }
            }
            _ => {}
        }
    }

    fn complete_subworkflow(
        &mut self,
        node: NodeIdx,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        if let Some(e) = self.nodes[node as usize].child_failed.clone() {
            self.fail(node, NodePhase::Failed, e, fx, todo);
            return;
        }
        let NodeKind::Subworkflow { outputs, .. } = self.wf().node(node).kind.clone() else {
            return;
        };
        let view = ValuesView {
            inputs: &self.inputs,
            nodes: &self.nodes,
        };
        let mut out = BTreeMap::new();
        for (var, b) in &outputs {
            match resolve(b, &view) {
                Ok(l) => {
                    out.insert(var.clone(), l);
                }
                Err(e) => {
                    let err = self.user_error(node, "OutputError", format!("output `{var}`: {e}"));
                    self.fail(node, NodePhase::Failed, err, fx, todo);
                    return;
                }
            }
        }
        self.succeed(node, LiteralMap { literals: out }, fx, todo);
    }

    fn finish_scope_top(&mut self, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        if self.phase != ExecPhase::Running {
            return;
        }
        if let Some(err) = self.error.clone() {
            match self.wf().failure_node {
                Some(f) if self.nodes[f as usize].phase == NodePhase::NotYetStarted => {
                    self.phase = ExecPhase::Failing;
                    self.ready_failure_node(f, fx, todo);
                }
                _ => self.finish(ExecPhase::Failed, None, Some(err), fx),
            }
            return;
        }
        let view = ValuesView {
            inputs: &self.inputs,
            nodes: &self.nodes,
        };
        let mut out = BTreeMap::new();
        for (var, b) in &self.wf().outputs {
            match resolve(b, &view) {
                Ok(l) => {
                    out.insert(var.clone(), l);
                }
                Err(e) => {
                    let err = ExecError {
                        node: String::new(),
                        code: "OutputError".into(),
                        message: format!("output `{var}`: {e}"),
                        kind: ErrorKind::User,
                    };
                    self.finish(ExecPhase::Failed, None, Some(err), fx);
                    return;
                }
            }
        }
        self.finish(
            ExecPhase::Succeeded,
            Some(LiteralMap { literals: out }),
            None,
            fx,
        );
    }

    fn ready_failure_node(&mut self, f: NodeIdx, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
        // The failure node runs while the execution is failing; `ready` checks only the node's own phase.
        todo.push_back(Todo::Ready(f));
        self.drain(fx, todo);
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
