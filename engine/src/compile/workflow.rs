//! Builds a workflow's flat node arena: scopes, renaming, inlining, dependencies and cycle checks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use updraft_proto::core::{
    LiteralType, Node as ProtoNode, WorkflowTemplate, gate_node, if_else_block, node::Target,
    workflow_metadata::OnFailurePolicy,
};

use super::{
    BindingValue, CompiledPackage, CompiledWorkflow, FailurePolicy, Gate, Node, NodeIdx, NodeKind,
    Otherwise, Source, interface_of,
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
    pub value: PendingValue,
    pub expected: LiteralType,
}

/// The binding a [`PendingCheck`] checks.
pub(super) enum PendingValue {
    /// Input number `n` of the check's node (checked in place, not copied).
    Input(usize),
    /// A binding that belongs to no node (a workflow output).
    Owned(BindingValue),
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
    pub wf_stack: Vec<String>,
    /// Set while the next node filled is an array's sub-node (its bindings are the array's).
    pub array_sub: bool,
    too_big: bool,
}

impl Builder<'_> {
    pub fn problem(
        &mut self,
        node: Option<NodeIdx>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        let node = node.map(|i| self.nodes[i as usize].id.clone());
        self.problems.push(Problem {
            file: self.file.clone(),
            entity: self.entity.clone(),
            node,
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn alloc(&mut self, id: String, parent: Option<NodeIdx>) -> Option<NodeIdx> {
        if self.nodes.len() >= MAX_NODES {
            if !self.too_big {
                self.too_big = true;
                self.problem(
                    None,
                    "nodes",
                    format!("the workflow compiles to more than {MAX_NODES} nodes"),
                );
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
        array_sub: false,
        too_big: false,
    };
    let interface = interface_of(
        template.interface.as_ref(),
        &entity.origin,
        &b.entity,
        &mut b.problems,
    );
    let (roots, scope) = b.build_scope(
        template,
        "",
        None,
        Source::Inputs(None),
        interface.inputs.clone(),
        0,
    );
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
    let interruptible = template
        .metadata_defaults
        .as_ref()
        .is_some_and(|d| d.interruptible);
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

pub(super) fn failure_policy(t: &WorkflowTemplate) -> FailurePolicy {
    match t.metadata.as_ref().map(|m| m.on_failure()) {
        Some(OnFailurePolicy::FailAfterExecutableNodesComplete) => {
            FailurePolicy::FailAfterExecutableNodesComplete
        }
        _ => FailurePolicy::FailImmediately,
    }
}

impl Builder<'_> {
    /// Builds the nodes of `template` as one scope; returns its top-level nodes and the scope.
    pub(super) fn build_scope(
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
                    None => self.problem(
                        Some(idx),
                        "upstream_node_ids",
                        format!("node `{up}` does not exist"),
                    ),
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
            self.problem(
                Some(idx),
                "",
                format!("nested deeper than {MAX_DEPTH} levels"),
            );
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
                self.problem(
                    Some(idx),
                    "target",
                    "the node has no target (task, workflow, branch, gate or array)",
                );
                self.unknown_outputs.insert(idx);
                return;
            }
            Some(Target::TaskNode(t)) => {
                let name = match &t.reference {
                    Some(updraft_proto::core::task_node::Reference::ReferenceId(r)) => {
                        r.name.clone()
                    }
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
                            self.problem(
                                Some(idx),
                                "task_node.reference_id",
                                missing("task", &name),
                            );
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
                                self.problem(
                                    Some(idx),
                                    "workflow_node.launchplan_ref",
                                    missing("launch plan", &r.name),
                                );
                            }
                        }
                    }
                    NodeKind::LaunchPlan {
                        launch_plan: r.name.clone(),
                    }
                }
                Some(updraft_proto::core::workflow_node::Reference::SubWorkflowRef(r)) => {
                    let Some(sub) = self.pkg.workflows.get(&r.name) else {
                        self.unknown_outputs.insert(idx);
                        self.problem(
                            Some(idx),
                            "workflow_node.sub_workflow_ref",
                            missing("workflow", &r.name),
                        );
                        return;
                    };
                    if self.wf_stack.contains(&r.name) {
                        self.unknown_outputs.insert(idx);
                        self.problem(
                            Some(idx),
                            "workflow_node.sub_workflow_ref",
                            format!(
                                "workflow `{}` calls itself (through {})",
                                r.name,
                                self.wf_stack.join(" → ")
                            ),
                        );
                        return;
                    }
                    let mut scratch = Vec::new();
                    let iface = interface_of(
                        sub.template.interface.as_ref(),
                        &sub.origin,
                        "",
                        &mut scratch,
                    );
                    expected = Some(iface.inputs.clone());
                    self.nodes[idx as usize].outputs = iface.outputs.clone();
                    late = Some((r.name.clone(), sub.template.clone(), iface));
                    NodeKind::Task {
                        task: String::new(),
                    }
                }
                None => {
                    self.problem(
                        Some(idx),
                        "workflow_node.reference",
                        "the workflow node references nothing",
                    );
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
                let blocks = ie
                    .case
                    .iter()
                    .map(|b| &**b)
                    .chain(ie.other.iter())
                    .enumerate();
                let mut case_outputs: Vec<BTreeMap<String, LiteralType>> = Vec::new();
                let mut any_unknown = false;
                for (i, block) in blocks {
                    let field = if i == 0 {
                        "branch_node.if_else.case".to_string()
                    } else {
                        format!("branch_node.if_else.other[{}]", i - 1)
                    };
                    let Some(cond) = &block.condition else {
                        self.problem(
                            Some(idx),
                            format!("{field}.condition"),
                            "the case has no condition",
                        );
                        continue;
                    };
                    let Some(then) = &block.then_node else {
                        self.problem(
                            Some(idx),
                            format!("{field}.then_node"),
                            "the case has no node",
                        );
                        continue;
                    };
                    let vars: BTreeSet<String> =
                        node.inputs.iter().map(|b| b.var.clone()).collect();
                    self.check_condition(idx, &format!("{field}.condition"), cond, &vars, 0);
                    if let Some(child) =
                        self.child(&id, then, idx, scope, prefix, refs, pending, depth)
                    {
                        any_unknown |= self.unknown_outputs.contains(&child);
                        case_outputs.push(self.nodes[child as usize].outputs.clone());
                        cases.push((cond.clone(), child));
                    }
                }
                if cases.is_empty() && ie.case.is_none() {
                    self.problem(
                        Some(idx),
                        "branch_node.if_else.case",
                        "the branch has no first case",
                    );
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
                        self.problem(
                            Some(idx),
                            "gate_node.sleep.duration",
                            "a sleep cannot be negative",
                        );
                    }
                    expected = Some(BTreeMap::new());
                    NodeKind::Gate(Gate::Sleep(crate::literal::std_duration(&d)))
                }
                Some(gate_node::Condition::Approve(a)) => {
                    if a.signal_id.is_empty() {
                        self.problem(
                            Some(idx),
                            "gate_node.approve.signal_id",
                            "an approval needs a signal id",
                        );
                    }
                    NodeKind::Gate(Gate::Approve {
                        signal_id: a.signal_id.clone(),
                    })
                }
                Some(gate_node::Condition::Signal(s)) => {
                    if s.signal_id.is_empty() {
                        self.problem(
                            Some(idx),
                            "gate_node.signal.signal_id",
                            "a signal needs an id",
                        );
                    }
                    let Some(t) = s.r#type.clone().filter(|t| t.r#type.is_some()) else {
                        self.problem(Some(idx), "gate_node.signal.type", "a signal needs a type");
                        return;
                    };
                    let output = if s.output_variable_name.is_empty() {
                        "o0".to_string()
                    } else {
                        s.output_variable_name.clone()
                    };
                    self.nodes[idx as usize]
                        .outputs
                        .insert(output.clone(), t.clone());
                    expected = Some(BTreeMap::new());
                    NodeKind::Gate(Gate::Signal {
                        signal_id: s.signal_id.clone(),
                        r#type: Box::new(t),
                        output,
                    })
                }
                None => {
                    self.problem(
                        Some(idx),
                        "gate_node.condition",
                        "the gate has no condition",
                    );
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
        let is_approve = matches!(
            self.nodes[idx as usize].kind,
            NodeKind::Gate(Gate::Approve { .. })
        );
        if std::mem::take(&mut self.array_sub) {
            // An array's sub-node repeats the array node's bindings; the array node holds them.
            self.nodes[idx as usize].input_types = expected.unwrap_or_default();
            return;
        }
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
            let Some(value) = self.convert(data, scope, refs, idx, &field, 0) else {
                continue;
            };
            if let Some(exp) = expected.as_ref() {
                match exp.get(&b.var) {
                    Some(t) => {
                        self.nodes[idx as usize]
                            .input_types
                            .insert(b.var.clone(), t.clone());
                        pending.push(PendingCheck {
                            node: Some(idx),
                            field,
                            value: PendingValue::Input(self.nodes[idx as usize].inputs.len()),
                            expected: t.clone(),
                        });
                    }
                    None => self.problem(Some(idx), field, "no such input"),
                }
            }
            self.nodes[idx as usize].inputs.push((b.var.clone(), value));
        }
        if let Some(exp) = &expected {
            for (var, t) in exp {
                let must = required
                    .as_ref()
                    .map_or(!types::admits_none(t), |r| r.contains(var));
                if must && !seen.contains(var) {
                    self.problem(
                        Some(idx),
                        format!("inputs.{var}"),
                        format!("input `{var}` ({}) is not bound", types::display(t)),
                    );
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
