//! An execution's history as one document — what `updraft status --json`, the console and the report
//! show — made from its stored records alone ([`ExecutionState`] and one [`NodeState`] per node), so it
//! reads the same from a local run's folder and from a deployed stack's table. Times are milliseconds
//! since the Unix epoch; phases are the engine's names (`Queued`, `Running`, `Succeeded`, …).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use updraft_proto::updraft::{AttemptRecord, ExecutionState, NodeState, StateError};

use super::{dns_name, exec_phase, node_phase_of};
use crate::literal::to_json;

/// One execution: its phase, times, error or outputs, and every node's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecutionView {
    /// Execution name.
    pub name: String,
    /// The workflow it runs.
    pub workflow: String,
    /// Its phase.
    pub phase: String,
    /// When it started (None before).
    pub started_ms: Option<u64>,
    /// When it ended (None while it runs).
    pub ended_ms: Option<u64>,
    /// The error it failed with.
    pub error: Option<ErrorView>,
    /// Its inputs, as JSON.
    pub inputs: Value,
    /// Its outputs as JSON, once it succeeded.
    pub outputs: Option<Value>,
    /// Its nodes, in the workflow's order.
    pub nodes: Vec<NodeView>,
    /// Child executions (of launch-plan nodes and dynamic tasks), when the reader looked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildView>,
    /// The workflow's graph, when the reader had the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphView>,
}

/// A workflow's nodes as a graph: what each runs, the scope it is in and what it waits for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphView {
    /// Every node, in the workflow's order (index = position).
    pub nodes: Vec<GraphNode>,
}

/// One node of a [`GraphView`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphNode {
    /// Node id.
    pub id: String,
    /// `task`, `map`, `branch`, `subworkflow`, `launch_plan`, `sleep`, `approve` or `signal`.
    pub kind: String,
    /// What it runs: the task, the launch plan, the sub-workflow, the signal; empty for a branch.
    pub runs: String,
    /// The branch, map or subworkflow node it belongs to (a map's own sub-node is its task).
    pub parent: Option<u32>,
    /// The nodes of its scope it waits for.
    pub upstream: Vec<u32>,
    /// The node run when the workflow fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failure_node: bool,
}

impl GraphView {
    /// The graph of `wf`.
    pub fn of(wf: &crate::CompiledWorkflow) -> Self {
        use crate::compile::{Gate, NodeKind};
        let nodes = wf
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (kind, runs) = match &n.kind {
                    NodeKind::Task { task } => ("task", task.clone()),
                    NodeKind::Array { sub, .. } => match &wf.node(*sub).kind {
                        NodeKind::Task { task } => ("map", task.clone()),
                        _ => ("map", String::new()),
                    },
                    NodeKind::Branch { .. } => ("branch", String::new()),
                    NodeKind::Subworkflow { workflow, .. } => ("subworkflow", workflow.clone()),
                    NodeKind::LaunchPlan { launch_plan } => ("launch_plan", launch_plan.clone()),
                    NodeKind::Gate(Gate::Sleep(d)) => ("sleep", format!("{}s", d.as_secs_f64())),
                    NodeKind::Gate(Gate::Approve { signal_id }) => ("approve", signal_id.clone()),
                    NodeKind::Gate(Gate::Signal { signal_id, .. }) => ("signal", signal_id.clone()),
                };
                GraphNode {
                    id: n.id.clone(),
                    kind: kind.into(),
                    runs,
                    parent: n.parent,
                    upstream: n.upstream.clone(),
                    failure_node: wf.failure_node == Some(i as u32),
                }
            })
            .collect();
        Self { nodes }
    }
}

/// A child execution and the node that started it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChildView {
    /// The parent's node id.
    pub node: String,
    /// The child.
    pub execution: ExecutionView,
}

/// An error as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorView {
    /// The node it names (empty for the execution's own).
    pub node: String,
    /// Machine-readable code.
    pub code: String,
    /// What happened.
    pub message: String,
    /// `user` (the task's own) or `system` (the platform's).
    pub kind: String,
}

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeView {
    /// Node index in the workflow.
    pub index: u32,
    /// Node id.
    pub id: String,
    /// Its phase.
    pub phase: String,
    /// Its phase changes, oldest first.
    pub phases: Vec<PhaseView>,
    /// Its task attempts (a task node's), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptView>,
    /// An array node's progress and elements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<ArrayView>,
    /// The child execution running the sub-workflow its dynamic task returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<String>,
    /// The error it failed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    /// Its inputs as JSON, once resolved (a note in their place when larger than [`MAX_SHOWN`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
    /// Its outputs as JSON, once it succeeded (as `inputs`, bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
}

impl NodeView {
    /// The attempts of the node, or of its array element `index` (none for an element not kept).
    pub fn attempts_of(&self, index: Option<u32>) -> &[AttemptView] {
        match (index, &self.array) {
            (Some(i), Some(a)) => a
                .elements
                .iter()
                .find(|e| e.index == i)
                .map_or(&[][..], |e| &e.attempts),
            _ => &self.attempts,
        }
    }
}

/// Bytes of a node's inputs or outputs (as JSON) a view holds; larger ones are named, not shown.
pub const MAX_SHOWN: usize = 16 * 1024;

/// `m` as JSON, or a note of its size when larger than [`MAX_SHOWN`].
fn bounded_json(m: &updraft_proto::core::LiteralMap) -> Value {
    let v = literals_json(m);
    let len = serde_json::to_string(&v).map_or(0, |s| s.len());
    if len > MAX_SHOWN {
        Value::String(format!("({len} bytes of JSON: too large to show here)"))
    } else {
        v
    }
}

/// A phase change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseView {
    /// The new phase.
    pub phase: String,
    /// When.
    pub at_ms: u64,
}

/// An array node's progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArrayView {
    /// Elements.
    pub size: u32,
    /// Elements running.
    pub running: u32,
    /// Elements that succeeded.
    pub succeeded: u32,
    /// Elements that failed.
    pub failed: u32,
    /// Its elements (none kept for a large array once it succeeded).
    pub elements: Vec<ElementView>,
}

/// One array element.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ElementView {
    /// Its index.
    pub index: u32,
    /// Its phase (`NotYetStarted` before it was queued).
    pub phase: String,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One task attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptView {
    /// Attempt number, from 0.
    pub attempt: u32,
    /// Its deterministic name (the pod's, the job's, the local folder's).
    pub name: String,
    /// When it was asked for.
    pub queued_ms: u64,
    /// When it was first seen running (None if never seen so: a quick or cached attempt).
    pub started_ms: Option<u64>,
    /// When it ended (None while it runs).
    pub ended_ms: Option<u64>,
    /// How it ended (None while it runs).
    pub phase: Option<String>,
    /// `off` (not cached), `miss` (ran, then stored) or `hit` (served from the cache).
    pub cache: String,
    /// The error it ended with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    /// What it made outside, when not `name` (a job's ARN or id, a query's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
    /// Where its logs are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

fn node_phase_name(code: u32) -> String {
    node_phase_of(code).map_or_else(|| format!("Unknown({code})"), |p| format!("{p:?}"))
}

fn error_view(e: &StateError) -> ErrorView {
    ErrorView {
        node: e.node.clone(),
        code: e.code.clone(),
        message: e.message.clone(),
        kind: if e.system { "system" } else { "user" }.into(),
    }
}

fn literals_json(m: &updraft_proto::core::LiteralMap) -> Value {
    Value::Object(
        m.literals
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
    )
}

impl ExecutionView {
    /// The history of execution `state` from its node records (in any order; a node without a record has
    /// not started).
    pub fn new(state: &ExecutionState, nodes: &[NodeState]) -> Self {
        let base = state.started_ms;
        let started = (base > 0).then_some(base);
        let at = |offset: u64| base.saturating_add(offset);
        let mut records: Vec<&NodeState> = nodes.iter().collect();
        records.sort_by_key(|n| n.index);
        let attempts = |history: &[AttemptRecord], node: &str, index: Option<u32>| {
            history
                .iter()
                .map(|r| {
                    let name = dns_name(&match index {
                        Some(i) => format!("{}-{node}-{i}-{}", state.name, r.attempt),
                        None => format!("{}-{node}-{}", state.name, r.attempt),
                    });
                    AttemptView {
                        attempt: r.attempt,
                        name,
                        queued_ms: at(r.queued_at),
                        started_ms: r.started_at.map(at),
                        ended_ms: r.ended_at.map(at),
                        phase: (r.phase != 0).then(|| node_phase_name(r.phase)),
                        cache: match r.cache {
                            1 => "miss",
                            2 => "hit",
                            _ => "off",
                        }
                        .into(),
                        error: r.error.as_ref().map(error_view),
                        external: (!r.external.is_empty()).then(|| r.external.clone()),
                        logs: r.logs.clone(),
                    }
                })
                .collect::<Vec<_>>()
        };
        let nodes = records
            .into_iter()
            .map(|n| NodeView {
                index: n.index,
                id: n.id.clone(),
                phase: node_phase_name(n.phase),
                phases: n
                    .phases
                    .iter()
                    .map(|p| PhaseView {
                        phase: node_phase_name(p.phase),
                        at_ms: at(p.at),
                    })
                    .collect(),
                attempts: n
                    .task
                    .as_ref()
                    .map(|t| attempts(&t.history, &n.id, None))
                    .unwrap_or_default(),
                array: n.array.as_ref().map(|a| ArrayView {
                    size: a.size,
                    running: a.running,
                    succeeded: a.succeeded,
                    failed: a.failed,
                    elements: a
                        .elements
                        .iter()
                        .enumerate()
                        .map(|(i, e)| ElementView {
                            index: i as u32,
                            phase: match e.phase {
                                0 => "NotYetStarted".into(),
                                c => node_phase_name(c),
                            },
                            attempts: attempts(&e.history, &n.id, Some(i as u32)),
                        })
                        .collect(),
                }),
                dynamic: n.dynamic.clone(),
                error: n.error.as_ref().map(error_view),
                inputs: n.inputs.as_ref().map(bounded_json),
                outputs: n.outputs.as_ref().map(bounded_json),
            })
            .collect();
        Self {
            name: state.name.clone(),
            workflow: state.workflow.clone(),
            phase: exec_phase(state.phase)
                .map_or_else(|| format!("Unknown({})", state.phase), |p| format!("{p:?}")),
            started_ms: started,
            ended_ms: state.ended_at.map(at),
            error: state.error.as_ref().map(error_view),
            inputs: state.inputs.as_ref().map_or(Value::Null, literals_json),
            outputs: state.outputs.as_ref().map(literals_json),
            nodes,
            children: Vec::new(),
            graph: None,
        }
    }
}
