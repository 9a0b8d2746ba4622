//! The execution's state as records: one [`ExecutionState`] plus one [`NodeState`] per node, so a
//! runtime stores it per node and rebuilds it with [`Execution::restore`] on its next event.

use std::collections::VecDeque;
use std::sync::Arc;

use updraft_proto::updraft::{
    ArrayProgress, AttemptsState, ExecutionState, NodeState as NodeRecord, StateError, WaitingUnit,
};

use super::{ArrayState, Attempts, Execution, NodeState};
use crate::compile::{NodeIdx, NodeKind};
use crate::exec::{ErrorKind, ExecConfig, ExecError, ExecPhase, NodePhase, Program};

const NODE_PHASES: [NodePhase; 8] = [
    NodePhase::NotYetStarted,
    NodePhase::Queued,
    NodePhase::Running,
    NodePhase::Succeeded,
    NodePhase::Failed,
    NodePhase::Skipped,
    NodePhase::Aborted,
    NodePhase::TimedOut,
];

const EXEC_PHASES: [ExecPhase; 6] = [
    ExecPhase::Queued,
    ExecPhase::Running,
    ExecPhase::Failing,
    ExecPhase::Succeeded,
    ExecPhase::Failed,
    ExecPhase::Aborted,
];

pub(super) fn node_phase_code(p: NodePhase) -> u32 {
    NODE_PHASES
        .iter()
        .position(|x| *x == p)
        .map_or(0, |i| i as u32 + 1)
}

fn node_phase(code: u32, what: &str) -> Result<NodePhase, String> {
    NODE_PHASES
        .get((code as usize).wrapping_sub(1))
        .copied()
        .ok_or_else(|| format!("{what}: unknown node phase {code}"))
}

/// The node phase a stored number stands for.
pub fn node_phase_of(code: u32) -> Option<NodePhase> {
    node_phase(code, "node").ok()
}

/// The stored number of an execution phase.
pub fn exec_phase_code(p: ExecPhase) -> u32 {
    EXEC_PHASES
        .iter()
        .position(|x| *x == p)
        .map_or(0, |i| i as u32 + 1)
}

/// The execution phase a stored number stands for.
pub fn exec_phase(code: u32) -> Option<ExecPhase> {
    EXEC_PHASES.get((code as usize).wrapping_sub(1)).copied()
}

/// An error as stored.
pub fn error_record(e: &ExecError) -> StateError {
    StateError {
        node: e.node.clone(),
        code: e.code.clone(),
        message: e.message.clone(),
        system: e.kind == ErrorKind::System,
    }
}

/// A stored error.
pub fn error_from_record(e: StateError) -> ExecError {
    ExecError {
        node: e.node,
        code: e.code,
        message: e.message,
        kind: if e.system {
            ErrorKind::System
        } else {
            ErrorKind::User
        },
    }
}

fn attempts_record(a: &Attempts) -> AttemptsState {
    AttemptsState {
        phase: a.phase.map_or(0, node_phase_code),
        in_flight: a.in_flight,
        attempt: a.attempt,
        user_failures: a.user_failures,
        system_failures: a.system_failures,
        outputs: a.outputs.clone(),
        history: a.history.clone(),
    }
}

fn attempts_from(a: AttemptsState, what: &str) -> Result<Attempts, String> {
    Ok(Attempts {
        phase: match a.phase {
            0 => None,
            c => Some(node_phase(c, what)?),
        },
        in_flight: a.in_flight,
        attempt: a.attempt,
        user_failures: a.user_failures,
        system_failures: a.system_failures,
        outputs: a.outputs,
        history: a.history,
    })
}

impl Execution {
    /// The child executions running now (of launch-plan nodes and dynamic tasks), by name: where a
    /// signal this execution receives also goes, so gates in children hear it (as Flyte's signals reach
    /// every gate of the execution tree).
    pub fn running_children(&self) -> Vec<String> {
        (0..self.nodes.len() as NodeIdx)
            .filter(|&n| self.nodes[n as usize].phase == NodePhase::Running)
            .filter_map(
                |n| match (&self.nodes[n as usize].dynamic, &self.wf().node(n).kind) {
                    (Some(name), _) => Some(name.clone()),
                    (None, NodeKind::LaunchPlan { .. }) => Some(self.child_name(n)),
                    _ => None,
                },
            )
            .collect()
    }

    /// How many nodes the execution's workflow has (and so how many [`NodeState`] records it keeps).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The execution-wide part of the state.
    pub fn state_record(&self) -> ExecutionState {
        ExecutionState {
            name: self.config.name.clone(),
            workflow: self.workflow.clone(),
            system_retries: self.config.system_retries,
            max_parallelism: self.config.max_parallelism,
            overwrite_cache: self.config.overwrite_cache,
            phase: exec_phase_code(self.phase),
            inputs: Some(self.inputs.clone()),
            top_pending: self.top_pending,
            error: self.error.as_ref().map(error_record),
            outputs: self.outputs.clone(),
            running_tasks: self.running_tasks,
            waiting: self
                .waiting
                .iter()
                .map(|(node, index)| WaitingUnit {
                    node: *node,
                    index: *index,
                })
                .collect(),
            signal_waiters: self
                .signal_waiters
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            early_signals: self
                .early_signals
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            nodes: self.nodes.len() as u32,
            started_ms: self.started_ms,
            ended_at: self.ended_at,
        }
    }

    /// Node `node`'s state (`None` past the last node).
    pub fn node_record(&self, node: u32) -> Option<NodeRecord> {
        let st = self.nodes.get(node as usize)?;
        Some(NodeRecord {
            index: node,
            id: self.wf().node(node).id.clone(),
            phase: node_phase_code(st.phase),
            remaining: st.remaining,
            pending_children: st.pending_children,
            child_failed: st.child_failed.as_ref().map(error_record),
            task: Some(attempts_record(&st.task)),
            inputs: st.inputs.as_deref().cloned(),
            outputs: st.outputs.clone(),
            error: st.error.as_ref().map(error_record),
            array: st.array.as_ref().map(|a| ArrayProgress {
                size: a.size,
                next: a.next,
                running: a.running,
                succeeded: a.succeeded,
                failed: a.failed,
                allowed_failures: a.allowed_failures,
                elements: a.elements.iter().map(attempts_record).collect(),
                shared_inputs: Some((*a.shared_inputs).clone()),
            }),
            dynamic: st.dynamic.clone(),
            phases: st.phases.clone(),
        })
    }

    /// Rebuilds an execution of `program` from its records (as [`Execution::state_record`] and
    /// [`Execution::node_record`] made them). A node without a record has not changed since the execution
    /// was made (a runtime stores only the records a step changed). Records of another workflow, of an
    /// unknown node or stored twice are refused.
    pub fn restore(
        program: &Program,
        state: ExecutionState,
        nodes: Vec<NodeRecord>,
    ) -> Result<Self, String> {
        let mut config = ExecConfig::new(state.name.clone());
        config.system_retries = state.system_retries;
        config.max_parallelism = state.max_parallelism;
        config.overwrite_cache = state.overwrite_cache;
        if state.workflow != program.workflow {
            return Err(format!(
                "the state is of workflow `{}`, not `{}`",
                state.workflow, program.workflow
            ));
        }
        let mut exec = Self::new(program, config)?;
        if state.nodes as usize != exec.nodes.len() {
            return Err(format!(
                "workflow `{}` has {} nodes; the state is of one with {}",
                program.workflow,
                exec.nodes.len(),
                state.nodes
            ));
        }
        exec.phase = exec_phase(state.phase)
            .ok_or_else(|| format!("unknown execution phase {}", state.phase))?;
        exec.inputs = state.inputs.unwrap_or_default();
        exec.top_pending = state.top_pending;
        exec.error = state.error.map(error_from_record);
        exec.outputs = state.outputs;
        exec.running_tasks = state.running_tasks;
        exec.waiting = state
            .waiting
            .into_iter()
            .map(|w| (w.node, w.index))
            .collect::<VecDeque<_>>();
        exec.signal_waiters = state.signal_waiters.into_iter().collect();
        exec.early_signals = state.early_signals.into_iter().collect();
        exec.started_ms = state.started_ms;
        exec.ended_at = state.ended_at;
        exec.now_ms = state.started_ms;
        let mut seen = vec![false; exec.nodes.len()];
        for r in nodes {
            let what = format!("node {} (`{}`)", r.index, r.id);
            match seen.get_mut(r.index as usize) {
                Some(s) if !*s => *s = true,
                Some(_) => return Err(format!("{what}: stored twice")),
                None => return Err(format!("{what}: no such node")),
            }
            let slot = &mut exec.nodes[r.index as usize];
            let array = match r.array {
                Some(a) => Some(Box::new(ArrayState {
                    size: a.size,
                    next: a.next,
                    running: a.running,
                    succeeded: a.succeeded,
                    failed: a.failed,
                    allowed_failures: a.allowed_failures,
                    elements: a
                        .elements
                        .into_iter()
                        .map(|e| attempts_from(e, &what))
                        .collect::<Result<_, _>>()?,
                    shared_inputs: Arc::new(a.shared_inputs.unwrap_or_default()),
                })),
                None => None,
            };
            *slot = NodeState {
                phase: node_phase(r.phase, &what)?,
                remaining: r.remaining,
                pending_children: r.pending_children,
                child_failed: r.child_failed.map(error_from_record),
                task: attempts_from(r.task.unwrap_or_default(), &what)?,
                inputs: r.inputs.map(Arc::new),
                outputs: r.outputs,
                error: r.error.map(error_from_record),
                array,
                dynamic: r.dynamic,
                phases: r.phases,
            };
        }
        Ok(exec)
    }
}
