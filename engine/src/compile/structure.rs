//! Parts of a scope: cycle checks, branch and array children, inlined subworkflows, workflow outputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use updraft_proto::core::{
    LiteralType, Node as ProtoNode, WorkflowTemplate, array_node, node::Target,
};

use super::workflow::{Builder, PendingCheck, PendingValue, Scope, failure_policy};
use super::{BindingValue, Interface, NodeIdx, NodeKind, Source, SuccessCriteria};
use crate::types;

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_cycles(&mut self, children: &[NodeIdx]) {
        let mut indegree: HashMap<NodeIdx, usize> = children
            .iter()
            .map(|&c| (c, self.nodes[c as usize].upstream.len()))
            .collect();
        let mut ready: Vec<NodeIdx> = children
            .iter()
            .copied()
            .filter(|c| indegree[c] == 0)
            .collect();
        let mut done = 0;
        while let Some(n) = ready.pop() {
            done += 1;
            for &d in &self.nodes[n as usize].downstream {
                if let Some(k) = indegree.get_mut(&d) {
                    *k -= 1;
                    if *k == 0 {
                        ready.push(d);
                    }
                }
            }
        }
        if done < children.len() {
            let mut stuck: Vec<String> = children
                .iter()
                .filter(|c| indegree[c] > 0)
                .map(|&c| self.nodes[c as usize].id.clone())
                .collect();
            stuck.sort();
            let first = children.iter().copied().find(|c| indegree[c] > 0);
            self.problem(
                first,
                "upstream",
                format!("dependency cycle among nodes {}", stuck.join(", ")),
            );
        }
    }

    /// Fills node `idx` from `node`; promises resolve in `scope` and the nodes they name go into `refs`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn child(
        &mut self,
        parent_id: &str,
        node: &ProtoNode,
        parent: NodeIdx,
        scope: &Scope,
        prefix: &str,
        refs: &mut BTreeSet<NodeIdx>,
        pending: &mut Vec<PendingCheck>,
        depth: usize,
    ) -> Option<NodeIdx> {
        let child = self.alloc(format!("{parent_id}-{}", node.id), Some(parent))?;
        if node.id.is_empty() {
            self.problem(Some(child), "id", "the node has no id");
        }
        self.fill_node(node, child, scope, prefix, refs, pending, depth + 1);
        for up in &node.upstream_node_ids {
            if let Some(u) = scope.ids.get(up) {
                refs.insert(*u);
            }
        }
        Some(child)
    }

    pub(super) fn inline(
        &mut self,
        idx: NodeIdx,
        name: &str,
        template: &WorkflowTemplate,
        iface: &Interface,
        depth: usize,
    ) {
        self.wf_stack.push(name.to_string());
        let prefix = format!("{}-", self.nodes[idx as usize].id);
        let (children, scope) = self.build_scope(
            template,
            &prefix,
            Some(idx),
            Source::Inputs(Some(idx)),
            iface.inputs.clone(),
            depth + 1,
        );
        let mut pending = Vec::new();
        let label = format!("{} (subworkflow {name})", self.entity);
        let saved = std::mem::replace(&mut self.entity, label);
        let outputs = self.bind_outputs(template, iface, &scope, &mut pending);
        self.run_checks(&scope, pending);
        self.entity = saved;
        self.wf_stack.pop();
        self.nodes[idx as usize].kind = NodeKind::Subworkflow {
            workflow: name.to_string(),
            children,
            outputs,
            failure_policy: failure_policy(template),
        };
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn array(
        &mut self,
        a: &updraft_proto::core::ArrayNode,
        idx: NodeIdx,
        scope: &Scope,
        prefix: &str,
        refs: &mut BTreeSet<NodeIdx>,
        depth: usize,
    ) -> Option<(NodeKind, Option<BTreeMap<String, LiteralType>>)> {
        let Some(sub) = &a.node else {
            self.problem(
                Some(idx),
                "array_node.node",
                "the array node has no sub-node",
            );
            return None;
        };
        if !matches!(sub.target, Some(Target::TaskNode(_))) {
            self.problem(
                Some(idx),
                "array_node.node",
                "the array sub-node must run a task",
            );
            return None;
        }
        let id = self.nodes[idx as usize].id.clone();
        let mut sub_pending = Vec::new();
        self.array_sub = true;
        let child = self.child(&id, sub, idx, scope, prefix, refs, &mut sub_pending, depth);
        self.array_sub = false;
        let child = child?;
        let success = match a.success_criteria {
            Some(array_node::SuccessCriteria::MinSuccesses(n)) => SuccessCriteria::MinSuccesses(n),
            Some(array_node::SuccessCriteria::MinSuccessRatio(r)) => {
                if !(0.0..=1.0).contains(&r) {
                    self.problem(
                        Some(idx),
                        "array_node.min_success_ratio",
                        format!("{r} is not between 0 and 1"),
                    );
                }
                if r >= 1.0 {
                    SuccessCriteria::All
                } else {
                    SuccessCriteria::MinSuccessRatio(r)
                }
            }
            None => SuccessCriteria::All,
        };
        let parallelism = match a.parallelism_option {
            Some(array_node::ParallelismOption::Parallelism(0)) | None => None,
            Some(array_node::ParallelismOption::Parallelism(p)) => Some(p),
        };
        let original = a.is_original_sub_node_interface.unwrap_or(false);
        let bound: BTreeSet<&String> = a.bound_inputs.iter().collect();
        let task_iface = match &self.nodes[child as usize].kind {
            NodeKind::Task { task } => self.compiled.tasks.get(task).map(|t| t.interface.clone()),
            _ => None,
        };
        let (expected, mapped) = match task_iface {
            None => {
                self.unknown_outputs.insert(idx);
                (None, Vec::new())
            }
            Some(iface) if original => {
                let partial = success != SuccessCriteria::All;
                self.nodes[idx as usize].outputs = iface
                    .outputs
                    .iter()
                    .map(|(k, t)| {
                        (
                            k.clone(),
                            types::list_of(if partial {
                                types::optional(t.clone())
                            } else {
                                t.clone()
                            }),
                        )
                    })
                    .collect();
                let mapped: Vec<String> = iface
                    .inputs
                    .keys()
                    .filter(|k| !bound.contains(k))
                    .cloned()
                    .collect();
                let exp = iface
                    .inputs
                    .iter()
                    .map(|(k, t)| {
                        (
                            k.clone(),
                            if bound.contains(k) {
                                t.clone()
                            } else {
                                types::list_of(t.clone())
                            },
                        )
                    })
                    .collect();
                (Some(exp), mapped)
            }
            Some(iface) => {
                self.nodes[idx as usize].outputs = iface.outputs.clone();
                let mapped = iface
                    .inputs
                    .iter()
                    .filter(|(k, t)| !bound.contains(k) && types::element(t).is_some())
                    .map(|(k, _)| k.clone())
                    .collect();
                (Some(iface.inputs), mapped)
            }
        };
        if mapped.is_empty() && expected.is_some() {
            self.problem(
                Some(idx),
                "array_node",
                "the array has no list input to map over",
            );
        }
        Some((
            NodeKind::Array {
                sub: child,
                parallelism,
                success,
                mapped,
                original_interface: original,
            },
            expected,
        ))
    }

    pub(super) fn bind_outputs(
        &mut self,
        template: &WorkflowTemplate,
        iface: &Interface,
        scope: &Scope,
        pending: &mut Vec<PendingCheck>,
    ) -> Vec<(String, BindingValue)> {
        let mut out = Vec::new();
        let mut refs = BTreeSet::new();
        for b in &template.outputs {
            let field = format!("outputs.{}", b.var);
            let Some(t) = iface.outputs.get(&b.var) else {
                self.problem(None, field, "not an output of the workflow's interface");
                continue;
            };
            let Some(data) = &b.binding else {
                self.problem(None, field, "the binding has no value");
                continue;
            };
            if let Some(v) = self.convert_unowned(data, scope, &mut refs, &field) {
                pending.push(PendingCheck {
                    node: None,
                    field,
                    value: PendingValue::Owned(v.clone()),
                    expected: t.clone(),
                });
                out.push((b.var.clone(), v));
            }
        }
        for var in iface.outputs.keys() {
            if !template.outputs.iter().any(|b| &b.var == var) {
                self.problem(
                    None,
                    format!("outputs.{var}"),
                    "the workflow output is not bound",
                );
            }
        }
        out
    }
}
