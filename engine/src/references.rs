//! What an entity needs: the closure of tasks, workflows and launch plans it reaches, the references a
//! package makes to entities it does not hold, and their resolution from a registry.
//!
//! A `@reference_task` or `@reference_launch_plan` in flytekit packages as a node naming an entity
//! (project, domain, name, version) that the package does not contain; Flyte resolves it against what is
//! registered. [`Package::resolve`] does the same against any lookup (the local registry, a stack's).

use std::collections::{BTreeMap, BTreeSet};

use updraft_proto::core::{Identifier, Node, WorkflowTemplate, if_else_block, node::Target};
use updraft_proto::core::{task_node, workflow_node};

use crate::error::Problem;
use crate::package::Package;

/// The kind of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    /// A task.
    Task,
    /// A workflow.
    Workflow,
    /// A launch plan.
    LaunchPlan,
}

impl EntityKind {
    /// `task`, `workflow`, `launch plan`.
    pub fn label(self) -> &'static str {
        match self {
            EntityKind::Task => "task",
            EntityKind::Workflow => "workflow",
            EntityKind::LaunchPlan => "launch plan",
        }
    }
}

/// An entity by kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityRef {
    /// Its kind.
    pub kind: EntityKind,
    /// Its name.
    pub name: String,
}

impl EntityRef {
    /// A task.
    pub fn task(name: impl Into<String>) -> Self {
        Self {
            kind: EntityKind::Task,
            name: name.into(),
        }
    }

    /// A workflow.
    pub fn workflow(name: impl Into<String>) -> Self {
        Self {
            kind: EntityKind::Workflow,
            name: name.into(),
        }
    }

    /// A launch plan.
    pub fn launch_plan(name: impl Into<String>) -> Self {
        Self {
            kind: EntityKind::LaunchPlan,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind.label(), self.name)
    }
}

/// A reference to an entity that a package does not hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// The entity referred to.
    pub entity: EntityRef,
    /// The version it names (empty: any; flytekit's references always name one).
    pub version: String,
    /// The project it names.
    pub project: String,
    /// The domain it names.
    pub domain: String,
    /// Where: the file, the entity and the node that refer to it.
    pub file: String,
    /// The referring entity, e.g. `workflow app.wf`.
    pub by: String,
    /// The referring node.
    pub node: Option<String>,
}

impl Reference {
    /// The problem of a reference that nothing resolves, with why.
    pub fn problem(&self, reason: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            entity: self.by.clone(),
            node: self.node.clone(),
            field: match self.entity.kind {
                EntityKind::Task => "task_node.reference_id",
                EntityKind::Workflow => "workflow_node.sub_workflow_ref",
                EntityKind::LaunchPlan if self.node.is_some() => "workflow_node.launchplan_ref",
                EntityKind::LaunchPlan => "",
            }
            .into(),
            reason: reason.into(),
        }
    }

    /// `task `x` (version v1)`.
    pub fn describe(&self) -> String {
        if self.version.is_empty() {
            self.entity.to_string()
        } else {
            format!("{} (version {})", self.entity, self.version)
        }
    }
}

/// One thing an entity uses directly.
struct Use<'a> {
    entity: EntityRef,
    id: Option<&'a Identifier>,
    node: Option<String>,
}

fn ref_of(kind: EntityKind, id: &Identifier) -> EntityRef {
    EntityRef {
        kind,
        name: id.name.clone(),
    }
}

fn node_uses<'a>(node: &'a Node, out: &mut Vec<Use<'a>>) {
    let here = |entity, id| Use {
        entity,
        id: Some(id),
        node: Some(node.id.clone()),
    };
    match &node.target {
        Some(Target::TaskNode(t)) => {
            if let Some(task_node::Reference::ReferenceId(id)) = &t.reference {
                out.push(here(ref_of(EntityKind::Task, id), id));
            }
        }
        Some(Target::WorkflowNode(w)) => match &w.reference {
            Some(workflow_node::Reference::LaunchplanRef(id)) => {
                out.push(here(ref_of(EntityKind::LaunchPlan, id), id));
            }
            Some(workflow_node::Reference::SubWorkflowRef(id)) => {
                out.push(here(ref_of(EntityKind::Workflow, id), id));
            }
            None => {}
        },
        Some(Target::BranchNode(b)) => {
            if let Some(ie) = &b.if_else {
                for block in ie.case.iter().map(|b| &**b).chain(ie.other.iter()) {
                    if let Some(n) = &block.then_node {
                        node_uses(n, out);
                    }
                }
                if let Some(if_else_block::Default::ElseNode(n)) = &ie.default {
                    node_uses(n, out);
                }
            }
        }
        Some(Target::ArrayNode(a)) => {
            if let Some(n) = &a.node {
                node_uses(n, out);
            }
        }
        Some(Target::GateNode(_)) | None => {}
    }
}

fn workflow_uses(wf: &WorkflowTemplate) -> Vec<Use<'_>> {
    let mut out = Vec::new();
    for n in wf.nodes.iter().chain(wf.failure_node.iter()) {
        node_uses(n, &mut out);
    }
    out
}

impl Package {
    /// Whether the package holds `e`.
    pub fn holds(&self, e: &EntityRef) -> bool {
        match e.kind {
            EntityKind::Task => self.tasks.contains_key(&e.name),
            EntityKind::Workflow => self.workflows.contains_key(&e.name),
            EntityKind::LaunchPlan => self.launch_plans.contains_key(&e.name),
        }
    }

    /// What `e` uses directly (with where it is used), if the package holds it.
    fn uses(&self, e: &EntityRef) -> Vec<Use<'_>> {
        match e.kind {
            EntityKind::Task => Vec::new(),
            EntityKind::Workflow => self
                .workflows
                .get(&e.name)
                .map(|w| workflow_uses(&w.template))
                .unwrap_or_default(),
            EntityKind::LaunchPlan => self
                .launch_plans
                .get(&e.name)
                .and_then(|lp| lp.launch_plan.spec.as_ref()?.workflow_id.as_ref())
                .map(|id| {
                    vec![Use {
                        entity: ref_of(EntityKind::Workflow, id),
                        id: Some(id),
                        node: None,
                    }]
                })
                .unwrap_or_default(),
        }
    }

    fn display_of(&self, e: &EntityRef) -> (String, String) {
        let origin = match e.kind {
            EntityKind::Task => self.tasks.get(&e.name).map(|t| &t.origin),
            EntityKind::Workflow => self.workflows.get(&e.name).map(|w| &w.origin),
            EntityKind::LaunchPlan => self.launch_plans.get(&e.name).map(|l| &l.origin),
        };
        (
            origin.map(|o| o.display()).unwrap_or_default(),
            format!("{} {}", e.kind.label(), e.name),
        )
    }

    /// Walks what `roots` reach: the entities held (in the order met) and the references to entities
    /// not held (each once, at its first use).
    fn walk(&self, roots: &[EntityRef]) -> (Vec<EntityRef>, Vec<Reference>) {
        let mut seen: BTreeSet<EntityRef> = BTreeSet::new();
        let mut held = Vec::new();
        let mut missing: BTreeMap<EntityRef, Reference> = BTreeMap::new();
        let mut todo: Vec<EntityRef> = roots.iter().rev().cloned().collect();
        while let Some(e) = todo.pop() {
            if !seen.insert(e.clone()) {
                continue;
            }
            held.push(e.clone());
            let (file, by) = self.display_of(&e);
            for u in self.uses(&e) {
                if u.entity.name.is_empty() {
                    continue; // the compiler names the node that names nothing
                }
                if self.holds(&u.entity) {
                    todo.push(u.entity);
                } else if !missing.contains_key(&u.entity) {
                    let id = u.id.cloned().unwrap_or_default();
                    missing.insert(
                        u.entity.clone(),
                        Reference {
                            entity: u.entity,
                            version: id.version,
                            project: id.project,
                            domain: id.domain,
                            file: file.clone(),
                            by: by.clone(),
                            node: u.node,
                        },
                    );
                }
            }
        }
        (held, missing.into_values().collect())
    }

    /// What a run of `launch_plan`, or of `workflow` by its launch plan, starts from: that launch
    /// plan, or the workflow and the launch plan a run of it takes (the one of its name, else the first
    /// that launches it, as [`crate::launch::choose_launch_plan`] picks). With neither, the last
    /// top-level workflow loaded (the default a run takes).
    pub fn launch_roots(
        &self,
        launch_plan: Option<&str>,
        workflow: Option<&str>,
    ) -> Vec<EntityRef> {
        if let Some(lp) = launch_plan {
            return vec![EntityRef::launch_plan(lp)];
        }
        let Some(wf) = workflow.or(self.top_level.last().map(String::as_str)) else {
            return Vec::new();
        };
        let launches = |lp: &crate::package::LaunchPlanEntity| {
            lp.launch_plan
                .spec
                .as_ref()
                .and_then(|s| s.workflow_id.as_ref())
                .is_some_and(|id| id.name == wf)
        };
        let lp = self
            .launch_plans
            .iter()
            .find(|(name, lp)| *name == wf && launches(lp))
            .or_else(|| self.launch_plans.iter().find(|(_, lp)| launches(lp)));
        let mut roots = vec![EntityRef::workflow(wf)];
        roots.extend(lp.map(|(name, _)| EntityRef::launch_plan(name)));
        roots
    }

    /// Every entity the package holds.
    pub fn entities(&self) -> Vec<EntityRef> {
        let tasks = self.tasks.keys().map(EntityRef::task);
        let workflows = self.workflows.keys().map(EntityRef::workflow);
        let lps = self.launch_plans.keys().map(EntityRef::launch_plan);
        tasks.chain(workflows).chain(lps).collect()
    }

    /// The references to entities this package does not hold: from `roots` and what they reach, or
    /// from every entity when `roots` is `None`.
    pub fn unresolved(&self, roots: Option<&[EntityRef]>) -> Vec<Reference> {
        match roots {
            Some(r) => self.walk(r).1,
            None => self.walk(&self.entities()).1,
        }
    }

    /// A package of the entities `roots` reach (those this package holds), with the code bundles; a
    /// workflow keeps its top-level standing.
    pub fn closure(&self, roots: &[EntityRef]) -> Package {
        let (held, _) = self.walk(roots);
        let mut out = Package {
            code_bundles: self.code_bundles.clone(),
            ..Package::default()
        };
        for e in held {
            match e.kind {
                EntityKind::Task => {
                    if let Some(t) = self.tasks.get(&e.name) {
                        out.tasks.insert(e.name, t.clone());
                    }
                }
                EntityKind::Workflow => {
                    if let Some(w) = self.workflows.get(&e.name) {
                        out.workflows.insert(e.name, w.clone());
                    }
                }
                EntityKind::LaunchPlan => {
                    if let Some(l) = self.launch_plans.get(&e.name) {
                        out.launch_plans.insert(e.name, l.clone());
                    }
                }
            }
        }
        out.top_level = self
            .top_level
            .iter()
            .filter(|w| out.workflows.contains_key(*w))
            .cloned()
            .collect();
        out
    }

    /// Resolves the references of `roots` (of every entity when `None`) and of what they reach with
    /// `lookup`, which gives a package holding the entity (e.g. from a registry), `None` when nothing
    /// has it, or why it cannot be had. Each found entity comes with its own closure, which may need
    /// more lookups. Returns every reference resolved, and the problems of those that are not.
    pub fn resolve(
        &mut self,
        roots: Option<&[EntityRef]>,
        mut lookup: impl FnMut(&Reference) -> Result<Option<Package>, String>,
    ) -> (Vec<Reference>, Vec<Problem>) {
        let mut resolved = Vec::new();
        let mut problems = Vec::new();
        let mut tried: BTreeSet<EntityRef> = BTreeSet::new();
        let roots: Vec<EntityRef> = roots.map_or_else(|| self.entities(), <[EntityRef]>::to_vec);
        loop {
            let missing: Vec<Reference> = self
                .unresolved(Some(&roots))
                .into_iter()
                .filter(|r| !tried.contains(&r.entity))
                .collect();
            if missing.is_empty() {
                break;
            }
            for r in missing {
                tried.insert(r.entity.clone());
                match lookup(&r) {
                    Ok(Some(found)) if found.holds(&r.entity) => {
                        // Its top-level workflows stay top-level (a launch plan's workflow runs
                        // as a child execution); its code bundles are its own registration's.
                        let part = Package {
                            code_bundles: Vec::new(),
                            ..found.closure(std::slice::from_ref(&r.entity))
                        };
                        match self.merge_missing(part) {
                            Ok(()) => resolved.push(r),
                            Err(mut p) => problems.append(&mut p),
                        }
                    }
                    Ok(_) => problems.push(r.problem(format!(
                        "{} is not in the package (or the packages given with it), and nothing \
                         registered has it",
                        r.describe()
                    ))),
                    Err(why) => problems.push(r.problem(why)),
                }
            }
        }
        (resolved, problems)
    }

    /// Adds the entities of `other` this package does not hold; one it holds must be the same.
    fn merge_missing(&mut self, other: Package) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        merge_kind(
            &mut self.tasks,
            other.tasks,
            |a, b| a.template == b.template,
            |t| &t.origin,
            EntityKind::Task,
            &mut problems,
        );
        merge_kind(
            &mut self.workflows,
            other.workflows,
            |a, b| a.template == b.template,
            |w| &w.origin,
            EntityKind::Workflow,
            &mut problems,
        );
        merge_kind(
            &mut self.launch_plans,
            other.launch_plans,
            |a, b| a.launch_plan.spec == b.launch_plan.spec,
            |l| &l.origin,
            EntityKind::LaunchPlan,
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        for w in other.top_level {
            if !self.top_level.contains(&w) {
                self.top_level.push(w);
            }
        }
        Ok(())
    }
}

/// Adds the entities of one kind from `theirs` that `mine` lacks; one of the same name must be `same`,
/// else a problem says the registered one differs.
fn merge_kind<T>(
    mine: &mut BTreeMap<String, T>,
    theirs: BTreeMap<String, T>,
    same: impl Fn(&T, &T) -> bool,
    origin: impl Fn(&T) -> &crate::package::Origin,
    kind: EntityKind,
    problems: &mut Vec<Problem>,
) {
    for (name, t) in theirs {
        match mine.get(&name) {
            Some(m) if !same(m, &t) => problems.push(Problem {
                file: origin(m).display(),
                entity: format!("{} {name}", kind.label()),
                node: None,
                field: String::new(),
                reason: format!(
                    "the registered {} differs from the one of the same name in the package",
                    kind.label()
                ),
            }),
            Some(_) => {}
            None => {
                mine.insert(name, t);
            }
        }
    }
}
