//! Array nodes: sizing, element launches under the array's parallelism, success criteria, gathering.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use updraft_proto::core::{Literal, LiteralCollection, LiteralMap, literal};

use super::{ArrayState, Attempts, Execution, Todo};
use crate::compile::{NodeIdx, NodeKind, SuccessCriteria};
use crate::exec::resolve::unwrap_union;
use crate::exec::{Effect, ExecError, NodePhase};
use crate::literal::none_lit;

impl Execution {
    /// The inputs element `i` runs with: its own element of each mapped list (and the other inputs whole)
    /// when the task's interface is per element; the whole lists when flytekit made the task read its
    /// element by index.
    pub(super) fn element_inputs(&self, node: NodeIdx, i: u32, a: &ArrayState) -> Arc<LiteralMap> {
        match &self.wf().node(node).kind {
            NodeKind::Array {
                original_interface: true,
                ..
            } => Arc::new(self.element_view(node, i, a)),
            _ => a.shared_inputs.clone(),
        }
    }

    /// Element `i`'s own view of the inputs: its element of each mapped list, the other inputs whole.
    /// This is what identifies the element (its cache key), however the task reads its inputs.
    pub(super) fn element_view(&self, node: NodeIdx, i: u32, a: &ArrayState) -> LiteralMap {
        let NodeKind::Array { mapped, .. } = &self.wf().node(node).kind else {
            return (*a.shared_inputs).clone();
        };
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
        LiteralMap { literals }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_array(
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

    pub(super) fn fill_array(
        &mut self,
        node: NodeIdx,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
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

    pub(super) fn finish_array(
        &mut self,
        node: NodeIdx,
        fx: &mut Vec<Effect>,
        todo: &mut VecDeque<Todo>,
    ) {
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
        // What is left of the array once it succeeded: as it was, for its elements' phases and
        // histories (a runtime that stores it in parts rewrites none of them), or only its counts when
        // it has too many elements to keep.
        let mut kept = a;
        if kept.size > super::history::MAX_ELEMENTS {
            kept.elements = Vec::new();
            kept.shared_inputs = Default::default();
        }
        self.nodes[node as usize].array = Some(kept);
        self.succeed(node, LiteralMap { literals: out }, fx, todo);
    }

    pub(super) fn element_done(
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
}
