//! Builds a workflow's flat node arena: scopes, renaming, inlining, dependencies and cycle checks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use updraft_proto::core::{
    LiteralType, Node as ProtoNode, WorkflowTemplate, gate_node, if_else_block, node::Target,
    array_node, workflow_metadata::OnFailurePolicy,
};

use super::{
    BindingValue, CompiledPackage, CompiledWorkflow, FailurePolicy, Gate, Interface, Node, NodeIdx,
    NodeKind, Otherwise, Source, SuccessCriteria, interface_of,
};
use crate::error::{Problem, Problems};
use crate::package::Package;
use crate::types;

/// Most nodes one workflow may compile to (after inlining subworkflows and branches).
pub const MAX_NODES: usize = 2_000_000;
/// Deepest nesting of branches, subworkflows and arrays.
const MAX_DEPTH: usize = 64;

/// The names visible to the nodes of one workflow template.
pub(super) struct Scope {
    /// Local node id → arena index.
    pub ids: HashMap<String, NodeIdx>,
    /// Where this scope's inputs come from.
    pub inputs: Source,
    /// Types of this scope's inputs.
    pub input_types: BTreeMap<String, LiteralType>,
}

/// A binding whose type is checked once every node of its scope is built.
pub(super) struct PendingCheck {
    pub node: Option<NodeIdx>,
    pub field: String,
    pub value: BindingValue,
    pub expected: LiteralType,
}

pub(super) struct Builder<'a> {
    pub pkg: &'a Package,
    pub compiled: &'a CompiledPackage,
    pub nodes: Vec<Node>,
    pub problems: Vec<Problem>,
    pub file: String,
    pub entity: String,
    /// Nodes whose outputs are unknown (their target failed to resolve): promises to them are not checked.
    pub unknown_outputs: HashSet<NodeIdx>,
    wf_stack: Vec<String>,
    too_big: bool,
}

impl Builder<'_> {
    pub fn problem(&mut self, node: Option<NodeIdx>, field: impl Into<String>, reason: impl Into<String>) {
        let node = node.map(|i| self.nodes[i as usize].id.clone());
        self.problems.push(Problem {
            file: self.file.clone(),
            entity: self.entity.clone(),
            node,
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn alloc(&mut self, id: String, parent: Option<NodeIdx>) -> Option<NodeIdx> {
        if self.nodes.len() >= MAX_NODES {
            if !self.too_big {
                self.too_big = true;
                self.problem(None, "nodes", format!("the workflow compiles to more than {MAX_NODES} nodes"));
            }
            return None;
        }
        self.nodes.push(Node {
            id,
            parent,
            kind: NodeKind::Gate(Gate::Sleep(std::time::Duration::ZERO)),
            inputs: Vec::new(),
            input_types: BTreeMap::new(),
            outputs: BTreeMap::new(),
            upstream: Vec::new(),
            downstream: Vec::new(),
            metadata: Default::default(),
        });
        Some((self.nodes.len() - 1) as NodeIdx)
    }
}

/// Compiles the top-level workflow `name` of `pkg`.
pub(super) fn compile_workflow(
    pkg: &Package,
    compiled: &CompiledPackage,
    name: &str,
) -> Result<CompiledWorkflow, Vec<Problem>> {
    let entity = &pkg.workflows[name];
    let template = &entity.template;
    let mut b = Builder {
        pkg,
        compiled,
        nodes: Vec::new(),
        problems: Vec::new(),
        file: entity.origin.display(),
        entity: format!("workflow {name}"),
        unknown_outputs: HashSet::new(),
        wf_stack: vec![name.to_string()],
        too_big: false,
    };
    let interface = interface_of(template.interface.as_ref(), &entity.origin, &b.entity, &mut b.problems);
    let (roots, scope) = b.build_scope(template, "", None, Source::Inputs(None), interface.inputs.clone(), 0);
    let mut pending = Vec::new();
    let outputs = b.bind_outputs(template, &interface, &scope, &mut pending);
    let failure_node = template.failure_node.as_ref().and_then(|f| {
        let idx = b.alloc(f.id.clone(), None)?;
        let mut refs = BTreeSet::new();
        b.fill_node(f, idx, &scope, "", &mut refs, &mut pending, 1);
        Some(idx)
    });
    b.run_checks(&scope, pending);
    let failure_policy = failure_policy(template);
    let interruptible = template.metadata_defaults.as_ref().is_some_and(|d| d.interruptible);
    if !b.problems.is_empty() {
        return Err(b.problems);
    }
    Ok(CompiledWorkflow {
        name: name.to_string(),
        interface,
        nodes: b.nodes,
        roots,
        outputs,
        failure_node,
        failure_policy,
        interruptible,
    })
}

fn failure_policy(t: &WorkflowTemplate) -> FailurePolicy {
    match t.metadata.as_ref().map(|m| m.on_failure()) {
        Some(OnFailurePolicy::FailAfterExecutableNodesComplete) => FailurePolicy::FailAfterExecutableNodesComplete,
        _ => FailurePolicy::FailImmediately,
    }
}

impl Builder<'_> {
    /// Builds the nodes of `template` as one scope; returns its top-level nodes and the scope.
    fn build_scope(
        &mut self,
        template: &WorkflowTemplate,
        prefix: &str,
        parent: Option<NodeIdx>,
        inputs: Source,
        input_types: BTreeMap<String, LiteralType>,
        depth: usize,
    ) -> (Vec<NodeIdx>, Scope) {
        let mut scope = Scope {
            ids: HashMap::new(),
            inputs,
            input_types,
        };
        let mut children = Vec::new();
        let mut built = Vec::new();
        for (i, node) in template.nodes.iter().enumerate() {
            if node.id.is_empty() {
                self.problem(parent, format!("nodes[{i}].id"), "the node has no id");
                continue;
            }
            if scope.ids.contains_key(&node.id) {
                let id = format!("{prefix}{}", node.id);
                self.problems.push(Problem {
                    file: self.file.clone(),
                    entity: self.entity.clone(),
                    node: Some(id),
                    field: "id".into(),
                    reason: "duplicate node id".into(),
                });
                continue;
            }
            let Some(idx) = self.alloc(format!("{prefix}{}", node.id), parent) else {
                return (children, scope);
            };
            scope.ids.insert(node.id.clone(), idx);
            children.push(idx);
            built.push((node, idx));
        }
        let mut pending = Vec::new();
        for (node, idx) in built {
            let mut refs = BTreeSet::new();
            self.fill_node(node, idx, &scope, prefix, &mut refs, &mut pending, depth);
            for up in &node.upstream_node_ids {
                match scope.ids.get(up) {
                    Some(u) => {
                        refs.insert(*u);
                    }
                    None if up == "start-node" => {}
                    None => self.problem(Some(idx), "upstream_node_ids", format!("node `{up}` does not exist")),
                }
            }
            self.nodes[idx as usize].upstream = refs.into_iter().collect();
        }
        for &idx in &children {
            for up in self.nodes[idx as usize].upstream.clone() {
                self.nodes[up as usize].downstream.push(idx);
            }
        }
        self.check_cycles(&children);
        self.run_checks(&scope, pending);
        (children, scope)
    }

    fn check_cycles(&mut self, children: &[NodeIdx]) {
        let mut indegree: HashMap<NodeIdx, usize> = children
            .iter()
            .map(|&c| (c, self.nodes[c as usize].upstream.len()))
            .collect();
        let mut ready: Vec<NodeIdx> = children.iter().copied().filter(|c| indegree[c] == 0).collect();
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
            self.problem(first, "upstream", format!("dependency cycle among nodes {}", stuck.join(", ")));
        }
    }

    /// Fills node `idx` from `node`; promises resolve in `scope` and the nodes they name go into `refs`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill_node(
        &mut self,
        node: &ProtoNode,
        idx: NodeIdx,
        scope: &Scope,
        prefix: &str,
        refs: &mut BTreeSet<NodeIdx>,
        pending: &mut Vec<PendingCheck>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            self.problem(Some(idx), "", format!("nested deeper than {MAX_DEPTH} levels"));
            return;
        }
        self.nodes[idx as usize].metadata = node.metadata.clone().unwrap_or_default();
        let id = self.nodes[idx as usize].id.clone();
        // Types the node's inputs expect (None = unknown) and which of them must be bound.
        let mut expected: Option<BTreeMap<String, LiteralType>> = None;
        let mut required: Option<BTreeSet<String>> = None;
        let mut late = None;
        let kind = match &node.target {
            None => {
                self.problem(Some(idx), "target", "the node has no target (task, workflow, branch, gate or array)");
                self.unknown_outputs.insert(idx);
                return;
            }
            Some(Target::TaskNode(t)) => {
                let name = match &t.reference {
                    Some(updraft_proto::core::task_node::Reference::ReferenceId(r)) => r.name.clone(),
                    None => String::new(),
                };
                match self.compiled.tasks.get(&name) {
                    Some(task) => {
                        expected = Some(task.interface.inputs.clone());
                        self.nodes[idx as usize].outputs = task.interface.outputs.clone();
                    }
                    None => {
                        self.unknown_outputs.insert(idx);
                        if !self.pkg.tasks.contains_key(&name) {
                            self.problem(Some(idx), "task_node.reference_id", missing("task", &name));
                        }
                    }
                }
                NodeKind::Task { task: name }
            }
            Some(Target::WorkflowNode(w)) => match &w.reference {
                Some(updraft_proto::core::workflow_node::Reference::LaunchplanRef(r)) => {
                    match self.compiled.launch_plans.get(&r.name) {
                        Some(lp) => {
                            expected = Some(lp.interface.inputs.clone());
                            required = Some(lp.required.clone());
                            self.nodes[idx as usize].outputs = lp.interface.outputs.clone();
                        }
                        None => {
                            self.unknown_outputs.insert(idx);
                            if !self.pkg.launch_plans.contains_key(&r.name) {
                                self.problem(Some(idx), "workflow_node.launchplan_ref", missing("launch plan", &r.name));
                            }
                        }
                    }
                    NodeKind::LaunchPlan { launch_plan: r.name.clone() }
                }
                Some(updraft_proto::core::workflow_node::Reference::SubWorkflowRef(r)) => {
                    let Some(sub) = self.pkg.workflows.get(&r.name) else {
                        self.unknown_outputs.insert(idx);
                        self.problem(Some(idx), "workflow_node.sub_workflow_ref", missing("workflow", &r.name));
                        return;
                    };
                    if self.wf_stack.contains(&r.name) {
                        self.unknown_outputs.insert(idx);
                        self.problem(
                            Some(idx),
                            "workflow_node.sub_workflow_ref",
                            format!("workflow `{}` calls itself (through {})", r.name, self.wf_stack.join(" → ")),
                        );
                        return;
                    }
                    let mut scratch = Vec::new();
                    let iface = interface_of(sub.template.interface.as_ref(), &sub.origin, "", &mut scratch);
                    expected = Some(iface.inputs.clone());
                    self.nodes[idx as usize].outputs = iface.outputs.clone();
                    late = Some((r.name.clone(), sub.template.clone(), iface));
                    NodeKind::Task { task: String::new() }
                }
                None => {
                    self.problem(Some(idx), "workflow_node.reference", "the workflow node references nothing");
                    self.unknown_outputs.insert(idx);
                    return;
                }
            },
            Some(Target::BranchNode(br)) => {
                let Some(ie) = &br.if_else else {
                    self.problem(Some(idx), "branch_node.if_else", "the branch has no cases");
                    return;
                };
                let mut cases = Vec::new();
                let blocks = ie.case.iter().map(|b| &**b).chain(ie.other.iter()).enumerate();
                let mut case_outputs: Vec<BTreeMap<String, LiteralType>> = Vec::new();
                let mut any_unknown = false;
                for (i, block) in blocks {
                    let field = if i == 0 { "branch_node.if_else.case".to_string() } else { format!("branch_node.if_else.other[{}]", i - 1) };
                    let Some(cond) = &block.condition else {
                        self.problem(Some(idx), format!("{field}.condition"), "the case has no condition");
                        continue;
                    };
                    let Some(then) = &block.then_node else {
                        self.problem(Some(idx), format!("{field}.then_node"), "the case has no node");
                        continue;
                    };
                    let vars: BTreeSet<String> = node.inputs.iter().map(|b| b.var.clone()).collect();
                    self.check_condition(idx, &format!("{field}.condition"), cond, &vars, 0);
                    if let Some(child) = self.child(&id, then, idx, scope, prefix, refs, pending, depth) {
                        any_unknown |= self.unknown_outputs.contains(&child);
                        case_outputs.push(self.nodes[child as usize].outputs.clone());
                        cases.push((cond.clone(), child));
                    }
                }
                if cases.is_empty() && ie.case.is_none() {
                    self.problem(Some(idx), "branch_node.if_else.case", "the branch has no first case");
                }
                let otherwise = match &ie.default {
                    Some(if_else_block::Default::ElseNode(e)) => {
                        match self.child(&id, e, idx, scope, prefix, refs, pending, depth) {
                            Some(child) => {
                                any_unknown |= self.unknown_outputs.contains(&child);
                                case_outputs.push(self.nodes[child as usize].outputs.clone());
                                Otherwise::Node(child)
                            }
                            None => Otherwise::Nothing,
                        }
                    }
                    Some(if_else_block::Default::Error(e)) => Otherwise::Fail(e.message.clone()),
                    None => Otherwise::Nothing,
                };
                // A branch's outputs are those every case produces with one type.
                let mut outputs = case_outputs.first().cloned().unwrap_or_default();
                outputs.retain(|k, t| case_outputs.iter().all(|o| o.get(k) == Some(t)));
                self.nodes[idx as usize].outputs = outputs;
                if any_unknown {
                    self.unknown_outputs.insert(idx);
                }
                NodeKind::Branch { cases, otherwise }
            }
            Some(Target::GateNode(g)) => match &g.condition {
                Some(gate_node::Condition::Sleep(s)) => {
                    let d = s.duration.unwrap_or_default();
                    if d.seconds < 0 || d.nanos < 0 {
                        self.problem(Some(idx), "gate_node.sleep.duration", "a sleep cannot be negative");
                    }
                    expected = Some(BTreeMap::new());
                    NodeKind::Gate(Gate::Sleep(std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)))
                }
                Some(gate_node::Condition::Approve(a)) => {
                    if a.signal_id.is_empty() {
                        self.problem(Some(idx), "gate_node.approve.signal_id", "an approval needs a signal id");
                    }
                    NodeKind::Gate(Gate::Approve { signal_id: a.signal_id.clone() })
                }
                Some(gate_node::Condition::Signal(s)) => {
                    if s.signal_id.is_empty() {
                        self.problem(Some(idx), "gate_node.signal.signal_id", "a signal needs an id");
                    }
                    let Some(t) = s.r#type.clone().filter(|t| t.r#type.is_some()) else {
                        self.problem(Some(idx), "gate_node.signal.type", "a signal needs a type");
                        return;
                    };
                    let output = if s.output_variable_name.is_empty() { "o0".to_string() } else { s.output_variable_name.clone() };
                    self.nodes[idx as usize].outputs.insert(output.clone(), t.clone());
                    expected = Some(BTreeMap::new());
                    NodeKind::Gate(Gate::Signal { signal_id: s.signal_id.clone(), r#type: t, output })
                }
                None => {
                    self.problem(Some(idx), "gate_node.condition", "the gate has no condition");
                    return;
                }
            },
            Some(Target::ArrayNode(a)) => match self.array(a, idx, scope, prefix, refs, depth) {
                Some((k, exp)) => {
                    expected = exp;
                    k
                }
                None => return,
            },
        };
        self.nodes[idx as usize].kind = kind;
        let is_approve = matches!(self.nodes[idx as usize].kind, NodeKind::Gate(Gate::Approve { .. }));
        // Bindings, resolved in the enclosing scope.
        let mut seen = BTreeSet::new();
        for b in &node.inputs {
            let field = format!("inputs.{}", b.var);
            if !seen.insert(b.var.clone()) {
                self.problem(Some(idx), field, "bound twice");
                continue;
            }
            let Some(data) = &b.binding else {
                self.problem(Some(idx), field, "the binding has no value");
                continue;
            };
            let Some(value) = self.convert(data, scope, refs, idx, &field, 0) else { continue };
            match expected.as_ref() {
                Some(exp) => match exp.get(&b.var) {
                    Some(t) => {
                        self.nodes[idx as usize].input_types.insert(b.var.clone(), t.clone());
                        pending.push(PendingCheck { node: Some(idx), field, value: value.clone(), expected: t.clone() });
                    }
                    None => self.problem(Some(idx), field, "no such input"),
                },
                None => {}
            }
            self.nodes[idx as usize].inputs.push((b.var.clone(), value));
        }
        if let Some(exp) = &expected {
            for (var, t) in exp {
                let must = required.as_ref().map_or(!types::admits_none(t), |r| r.contains(var));
                if must && !seen.contains(var) {
                    self.problem(Some(idx), format!("inputs.{var}"), format!("input `{var}` ({}) is not bound", types::display(t)));
                }
            }
        }
        if is_approve {
            // The approved value passes through: its outputs are its inputs, typed at check time.
            let vars: Vec<String> = node.inputs.iter().map(|b| b.var.clone()).collect();
            self.pending_passthrough(idx, vars);
        }
        if let Some((name, template, iface)) = late {
            self.inline(idx, &name, &template, &iface, depth);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn child(
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

    fn inline(&mut self, idx: NodeIdx, name: &str, template: &WorkflowTemplate, iface: &Interface, depth: usize) {
        self.wf_stack.push(name.to_string());
        let prefix = format!("{}-", self.nodes[idx as usize].id);
        let (children, scope) = self.build_scope(template, &prefix, Some(idx), Source::Inputs(Some(idx)), iface.inputs.clone(), depth + 1);
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
    fn array(
        &mut self,
        a: &updraft_proto::core::ArrayNode,
        idx: NodeIdx,
        scope: &Scope,
        prefix: &str,
        refs: &mut BTreeSet<NodeIdx>,
        depth: usize,
    ) -> Option<(NodeKind, Option<BTreeMap<String, LiteralType>>)> {
        let Some(sub) = &a.node else {
            self.problem(Some(idx), "array_node.node", "the array node has no sub-node");
            return None;
        };
        if !matches!(sub.target, Some(Target::TaskNode(_))) {
            self.problem(Some(idx), "array_node.node", "the array sub-node must run a task");
            return None;
        }
        let id = self.nodes[idx as usize].id.clone();
        let mut sub_pending = Vec::new();
        let child = self.child(&id, sub, idx, scope, prefix, refs, &mut sub_pending, depth)?;
        let success = match a.success_criteria {
            Some(array_node::SuccessCriteria::MinSuccesses(n)) => SuccessCriteria::MinSuccesses(n),
            Some(array_node::SuccessCriteria::MinSuccessRatio(r)) => {
                if !(0.0..=1.0).contains(&r) {
                    self.problem(Some(idx), "array_node.min_success_ratio", format!("{r} is not between 0 and 1"));
                }
                if r >= 1.0 { SuccessCriteria::All } else { SuccessCriteria::MinSuccessRatio(r) }
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
                    .map(|(k, t)| (k.clone(), types::list_of(if partial { types::optional(t.clone()) } else { t.clone() })))
                    .collect();
                let mapped: Vec<String> = iface.inputs.keys().filter(|k| !bound.contains(k)).cloned().collect();
                let exp = iface
                    .inputs
                    .iter()
                    .map(|(k, t)| (k.clone(), if bound.contains(k) { t.clone() } else { types::list_of(t.clone()) }))
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
            self.problem(Some(idx), "array_node", "the array has no list input to map over");
        }
        // The sub-node repeats the array node's bindings; they are checked once, on the array node
        // (`sub_pending` is dropped on purpose).
        Some((
            NodeKind::Array { sub: child, parallelism, success, mapped, original_interface: original },
            expected,
        ))
    }

    fn bind_outputs(
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
                pending.push(PendingCheck { node: None, field, value: v.clone(), expected: t.clone() });
                out.push((b.var.clone(), v));
            }
        }
        for var in iface.outputs.keys() {
            if !template.outputs.iter().any(|b| &b.var == var) {
                self.problem(None, format!("outputs.{var}"), "the workflow output is not bound");
            }
        }
        out
    }
}

fn missing(kind: &str, name: &str) -> String {
    if name.is_empty() {
        format!("the node names no {kind}")
    } else {
        format!("{kind} `{name}` is not in the package (or the packages given with it)")
    }
}

impl From<Vec<Problem>> for Problems {
    fn from(v: Vec<Problem>) -> Self {
        Problems(v)
    }
}
