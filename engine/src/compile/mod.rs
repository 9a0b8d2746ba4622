//! The compiler: a [`Package`] in, a validated, immutable [`CompiledPackage`] out — or every problem found.
//!
//! - references (tasks, subworkflows, launch plans) resolved by name;
//! - subworkflows inlined (children renamed `<node>-<child>`), launch-plan nodes linked;
//! - branch children renamed `<branch>-<child>`;
//! - dependencies derived from *all* bindings, including those inside branches and array sub-nodes, plus
//!   the declared `upstream_node_ids` (which alone are not authoritative);
//! - cycles rejected; binding types checked; launch-plan defaults and fixed inputs checked and applied;
//! - every task type mapped to a plugin, or rejected.

mod bindings;
mod dynamic;
mod structure;
mod tasks;
mod workflow;

use std::collections::{BTreeMap, BTreeSet};

use updraft_proto::core::{
    BooleanExpression, Literal, LiteralType, NodeMetadata, PromiseAttribute, TaskTemplate,
    TypedInterface, VariableMap,
};

use crate::error::{Problem, Problems};
use crate::package::{Origin, Package};
use crate::plugins::PluginKind;

pub use dynamic::compile_dynamic;
pub use workflow::MAX_NODES;

/// Index of a node in [`CompiledWorkflow::nodes`].
pub type NodeIdx = u32;

/// Inputs and outputs by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interface {
    /// Input types.
    pub inputs: BTreeMap<String, LiteralType>,
    /// Output types.
    pub outputs: BTreeMap<String, LiteralType>,
}

/// A task ready to run: its template, plugin and interface.
#[derive(Debug, Clone)]
pub struct CompiledTask {
    /// Task name.
    pub name: String,
    /// The template as packaged.
    pub template: TaskTemplate,
    /// The plugin that runs it.
    pub plugin: PluginKind,
    /// Typed inputs and outputs.
    pub interface: Interface,
}

impl CompiledTask {
    /// True for tasks the engine completes itself (echo), which no connector runs.
    pub fn runs_in_engine(&self) -> bool {
        self.plugin == PluginKind::Echo
    }
}

/// A launch plan with its inputs resolved.
#[derive(Debug, Clone)]
pub struct CompiledLaunchPlan {
    /// Launch plan name.
    pub name: String,
    /// The workflow it launches.
    pub workflow: String,
    /// Inputs a launcher may give (the workflow's, minus fixed ones) and the workflow's outputs.
    pub interface: Interface,
    /// Defaults for inputs not given.
    pub defaults: BTreeMap<String, Literal>,
    /// Inputs that cannot be overridden.
    pub fixed: BTreeMap<String, Literal>,
    /// Inputs that must be given.
    pub required: BTreeSet<String>,
}

/// What a workflow does when a node fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Abort everything running and fail at once.
    FailImmediately,
    /// Let every node that can still run finish, then fail.
    FailAfterExecutableNodesComplete,
}

/// Where a promised value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The inputs of the workflow (`None`) or of the subworkflow node that encloses the reader.
    Inputs(Option<NodeIdx>),
    /// The outputs of a node.
    Node(NodeIdx),
}

/// A node input's value: a literal, a promise, or a collection or map of them.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingValue {
    /// A constant (collections and maps of constants are folded into one).
    Literal(Box<Literal>),
    /// An output of another node, or an input of the enclosing scope.
    Promise {
        /// Where the value comes from.
        source: Source,
        /// The variable.
        var: String,
        /// Keys and indexes into the value.
        attr_path: Vec<PromiseAttribute>,
    },
    /// A list of bindings.
    Collection(Vec<BindingValue>),
    /// A map of bindings.
    Map(BTreeMap<String, BindingValue>),
}

/// What a branch does when no case holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Otherwise {
    /// Run this node.
    Node(NodeIdx),
    /// Fail with this message.
    Fail(String),
    /// No default: failing when no case holds.
    Nothing,
}

/// When an array node succeeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SuccessCriteria {
    /// Every index must succeed.
    All,
    /// At least this many indexes.
    MinSuccesses(u32),
    /// At least this fraction of indexes.
    MinSuccessRatio(f32),
}

/// A gate.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Sleep this long.
    Sleep(std::time::Duration),
    /// Wait for approval; the node's input passes through as its output.
    Approve {
        /// Signal id.
        signal_id: String,
    },
    /// Wait for a typed value.
    Signal {
        /// Signal id.
        signal_id: String,
        /// Expected type.
        r#type: Box<LiteralType>,
        /// The output variable the value lands in.
        output: String,
    },
}

/// What a node runs.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A task.
    Task {
        /// Task name (key of [`CompiledPackage::tasks`]).
        task: String,
    },
    /// A sub-node run once per element of the mapped inputs.
    Array {
        /// The sub-node (its kind is a task).
        sub: NodeIdx,
        /// Most sub-nodes running at once; `None` = unlimited.
        parallelism: Option<u32>,
        /// When the array succeeds.
        success: SuccessCriteria,
        /// Inputs that are lists split per index (the rest are passed whole).
        mapped: Vec<String>,
        /// True when the task's interface is per element (Updraft YAML); false when flytekit already
        /// turned it into lists.
        original_interface: bool,
    },
    /// The first case whose condition holds runs; the others are skipped.
    Branch {
        /// Conditions (over the branch node's own inputs) and the nodes they select.
        cases: Vec<(BooleanExpression, NodeIdx)>,
        /// The default.
        otherwise: Otherwise,
    },
    /// An inlined subworkflow.
    Subworkflow {
        /// The workflow's name.
        workflow: String,
        /// Its nodes (top level of the inlined scope).
        children: Vec<NodeIdx>,
        /// Its output bindings, resolved in the inlined scope.
        outputs: Vec<(String, BindingValue)>,
        /// Its failure policy.
        failure_policy: FailurePolicy,
    },
    /// A child execution of a launch plan.
    LaunchPlan {
        /// Launch plan name (key of [`CompiledPackage::launch_plans`]).
        launch_plan: String,
    },
    /// A gate.
    Gate(Gate),
}

/// One node of a compiled workflow.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique id within the execution (branch and subworkflow children renamed).
    pub id: String,
    /// The branch, array or subworkflow node this node belongs to.
    pub parent: Option<NodeIdx>,
    /// What it runs.
    pub kind: NodeKind,
    /// Input bindings.
    pub inputs: Vec<(String, BindingValue)>,
    /// Input types, for type-directed conversion at run time.
    pub input_types: BTreeMap<String, LiteralType>,
    /// Output types.
    pub outputs: BTreeMap<String, LiteralType>,
    /// Sibling nodes that must finish first.
    pub upstream: Vec<NodeIdx>,
    /// Sibling nodes that wait for this one.
    pub downstream: Vec<NodeIdx>,
    /// Node metadata (timeout, retries, interruptible, cache overrides).
    pub metadata: NodeMetadata,
}

/// A validated workflow: a flat arena of nodes with their dependencies.
#[derive(Debug, Clone)]
pub struct CompiledWorkflow {
    /// Workflow name.
    pub name: String,
    /// Typed inputs and outputs.
    pub interface: Interface,
    /// Every node, including branch, array and subworkflow children.
    pub nodes: Vec<Node>,
    /// The top-level nodes.
    pub roots: Vec<NodeIdx>,
    /// Output bindings.
    pub outputs: Vec<(String, BindingValue)>,
    /// The node run when the workflow fails.
    pub failure_node: Option<NodeIdx>,
    /// What happens when a node fails.
    pub failure_policy: FailurePolicy,
    /// Nodes are interruptible unless they say otherwise.
    pub interruptible: bool,
}

impl CompiledWorkflow {
    /// The node at `idx`.
    pub fn node(&self, idx: NodeIdx) -> &Node {
        &self.nodes[idx as usize]
    }

    /// The index of the node with this id.
    pub fn find(&self, id: &str) -> Option<NodeIdx> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .map(|i| i as NodeIdx)
    }
}

/// Everything a package holds, validated.
#[derive(Debug, Clone, Default)]
pub struct CompiledPackage {
    /// Tasks by name.
    pub tasks: BTreeMap<String, CompiledTask>,
    /// Top-level workflows by name.
    pub workflows: BTreeMap<String, CompiledWorkflow>,
    /// Launch plans by name.
    pub launch_plans: BTreeMap<String, CompiledLaunchPlan>,
}

/// Compiles every task, top-level workflow and launch plan of `pkg`.
pub fn compile(pkg: &Package) -> Result<CompiledPackage, Problems> {
    let (compiled, problems) = compile_lenient(pkg);
    problems.into_result(compiled)
}

/// Compiles what `roots` reach (see [`Package::closure`]) strictly — any problem there is returned —
/// and, beside it, every other entity of `pkg` that compiles (a dynamic task may launch one). A
/// problem in an entity the roots do not reach does not stop them, as in Flyte, where each entity is
/// registered on its own.
pub fn compile_for(
    pkg: &Package,
    roots: &[crate::references::EntityRef],
) -> Result<CompiledPackage, Problems> {
    compile(&pkg.closure(roots))?;
    Ok(compile_lenient(pkg).0)
}

/// Compiles what can be compiled and returns it with every problem found (for `inspect`).
pub fn compile_lenient(pkg: &Package) -> (CompiledPackage, Problems) {
    let mut problems = Vec::new();
    let mut out = CompiledPackage::default();
    for (name, entity) in &pkg.tasks {
        match tasks::compile_task(name, &entity.template, &entity.origin) {
            Ok(t) => {
                out.tasks.insert(name.clone(), t);
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    for (name, lp) in &pkg.launch_plans {
        match tasks::compile_launch_plan(pkg, name, &lp.launch_plan, &lp.origin) {
            Ok(c) => {
                out.launch_plans.insert(name.clone(), c);
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    for name in &pkg.top_level {
        match workflow::compile_workflow(pkg, &out, name) {
            Ok(w) => {
                out.workflows.insert(name.clone(), w);
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    problems.sort();
    problems.dedup();
    (out, Problems(problems))
}

/// Converts a proto interface to typed maps, reporting variables without a type.
pub(crate) fn interface_of(
    iface: Option<&TypedInterface>,
    origin: &Origin,
    entity: &str,
    problems: &mut Vec<Problem>,
) -> Interface {
    let mut conv = |vars: Option<&VariableMap>, side: &str| {
        let mut out = BTreeMap::new();
        for (name, var) in vars.map(|v| &v.variables).into_iter().flatten() {
            match var.r#type.as_ref().filter(|t| t.r#type.is_some()) {
                Some(t) => {
                    out.insert(name.clone(), t.clone());
                }
                None => problems.push(Problem {
                    file: origin.display(),
                    entity: entity.to_string(),
                    node: None,
                    field: format!("interface.{side}.{name}.type"),
                    reason: "the variable has no type".into(),
                }),
            }
        }
        out
    };
    Interface {
        inputs: conv(iface.and_then(|i| i.inputs.as_ref()), "inputs"),
        outputs: conv(iface.and_then(|i| i.outputs.as_ref()), "outputs"),
    }
}
