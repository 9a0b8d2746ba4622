//! Completion: dependents, scopes (workflow, subworkflow, branch), failure policies, aborts.

use std::collections::{BTreeMap, VecDeque};

use updraft_proto::core::LiteralMap;

use super::{Execution, Todo, ValuesView};
use crate::compile::{FailurePolicy, NodeIdx, NodeKind, Otherwise};
use crate::exec::resolve::resolve;
use crate::exec::{Effect, ErrorKind, ExecError, ExecPhase, NodePhase};

impl Execution {
    /// Everything below `node` that runs is aborted (array elements, task attempt, child execution,
    /// nested scope nodes).
    pub(super) fn abort_running_work(&mut self, node: NodeIdx, fx: &mut Vec<Effect>) {
        let wf_node = self.wf().node(node).clone();
        let st = &self.nodes[node as usize];
        match &wf_node.kind {
            NodeKind::Task { .. } if st.dynamic.is_some() => {
                let name = st.dynamic.clone().unwrap_or_default();
                fx.push(Effect::AbortChild { node, name });
            }
            NodeKind::Task { .. } if matches!(st.phase, NodePhase::Queued | NodePhase::Running) => {
                let attempt = st.task.attempt;
                let name = self.task_name(node, None, attempt);
                self.free_slot(node, None);
                self.attempt_ended(node, None, attempt, NodePhase::Aborted, None, false);
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
                        self.attempt_ended(node, Some(i), attempt, NodePhase::Aborted, None, false);
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
                let name = self.child_name(node);
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
    pub(super) fn abort_nodes(&mut self, nodes: &[NodeIdx], fx: &mut Vec<Effect>) {
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
    pub(super) fn done(&mut self, node: NodeIdx, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
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

    pub(super) fn child_done(
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

    pub(super) fn complete_subworkflow(
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

    pub(super) fn finish_scope_top(&mut self, fx: &mut Vec<Effect>, todo: &mut VecDeque<Todo>) {
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

    pub(super) fn ready_failure_node(
        &mut self,
        f: NodeIdx,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
        // The failure node runs while the execution is failing; `ready` checks only the node's own phase.
        todo.push_back(Todo::Ready(f));
        self.drain(fx, todo);
    }
}
