//! The execution engine: a deterministic state machine, `step(state, event) -> effects`.
//!
//! The engine never does I/O and never reads a clock. A runtime (local or Lambda) feeds it events — start,
//! a task's status, a timer, a signal, a child execution's end, abort — and carries out the effects it
//! returns: start or abort a task attempt, schedule a timer, start or abort a child execution (a launch
//! plan's, or the sub-workflow a dynamic task returned), report phase changes, finish. Work per event is
//! proportional to the nodes it affects: a finished node decrements its
//! dependents' remaining-input counters and its scope's pending-children counter; nothing rescans the graph.
//!
//! Delivery may be duplicated, late or reordered: an event about an attempt that is not the node's current
//! one, or about a node that has already finished, changes nothing. Effects carry deterministic names
//! (execution, node, array index, attempt) so a runtime that replays them after a crash finds what it
//! already made instead of making it twice.

mod cache;
pub mod history;
mod machine;
pub mod outcome;
mod resolve;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use updraft_proto::core::{DynamicJobSpec, Literal, LiteralMap};

use crate::compile::{CompiledPackage, NodeIdx};

pub use cache::cache_key;
pub use machine::{
    Execution, dns_name, error_from_record, error_record, exec_phase, exec_phase_code,
    node_phase_of,
};

/// How many system-error retries a task attempt gets unless configured otherwise.
pub const DEFAULT_SYSTEM_RETRIES: u32 = 3;

/// Phase of a node (Flyte's node phases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodePhase {
    /// Waiting for upstream nodes.
    NotYetStarted,
    /// Ready; its work has been requested.
    Queued,
    /// Running.
    Running,
    /// Finished with outputs.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Will never run (a branch not taken, or an upstream node did not succeed).
    Skipped,
    /// Stopped by an abort.
    Aborted,
    /// Ran out of time.
    TimedOut,
}

impl NodePhase {
    /// True once the node will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Aborted | Self::TimedOut
        )
    }
}

/// Phase of a whole execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecPhase {
    /// Not started yet.
    Queued,
    /// Running.
    Running,
    /// Running its failure node after a failure.
    Failing,
    /// Finished with outputs.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Stopped by an abort.
    Aborted,
}

impl ExecPhase {
    /// True once the execution will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted)
    }
}

/// Who caused a failure, which decides the retry budget it draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The task's own code (user retries).
    User,
    /// The platform: lost nodes, evictions, infrastructure (system retries).
    System,
}

/// An error that failed a node or an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    /// The node that failed (empty for execution-level errors).
    pub node: String,
    /// A short machine-readable code.
    pub code: String,
    /// What happened.
    pub message: String,
    /// User or system.
    pub kind: ErrorKind,
}

/// What a runtime observed about a task attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskStatus {
    /// Accepted, not running yet.
    Queued,
    /// Running.
    Running,
    /// Finished with outputs (`cached`: served from the cache without running).
    Succeeded {
        /// The outputs (outputs.pb).
        outputs: LiteralMap,
        /// True when served from the cache.
        cached: bool,
    },
    /// Failed.
    Failed {
        /// Machine-readable code.
        code: String,
        /// What happened.
        message: String,
        /// User or system.
        kind: ErrorKind,
        /// False when a retry cannot help (error.pb NON_RECOVERABLE).
        recoverable: bool,
    },
    /// A dynamic task returned the sub-workflow to run in its place (futures.pb); its outputs become the
    /// node's.
    Dynamic {
        /// The sub-workflow.
        spec: Box<DynamicJobSpec>,
    },
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// A sleep gate's duration.
    Sleep,
    /// A task attempt's timeout.
    AttemptTimeout,
    /// A node's overall timeout.
    NodeTimeout,
    /// An attempt of a serializable cached task found another attempt computing the same key: look
    /// again (re-emits its [`Effect::StartTask`], which the runtime answers from the cache once the
    /// other has stored its result, or starts once the key is free).
    CacheWait,
    /// The steps since the start budget was set ([`Execution::limit_starts`]) started as many
    /// attempts as it allows: go on with the rest (its node, index and attempt mean nothing).
    Continue,
}

/// An input to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start the execution with these inputs (launch-plan defaults and fixed inputs already applied).
    Start {
        /// Workflow inputs.
        inputs: LiteralMap,
    },
    /// A task attempt's status.
    Task {
        /// The node.
        node: NodeIdx,
        /// The array element, for array nodes.
        index: Option<u32>,
        /// The attempt the status is about.
        attempt: u32,
        /// The status.
        status: TaskStatus,
    },
    /// A timer fired.
    Timer {
        /// The node.
        node: NodeIdx,
        /// The array element, for element timeouts.
        index: Option<u32>,
        /// The attempt (or gate generation) that scheduled it.
        attempt: u32,
        /// What it was for.
        kind: TimerKind,
    },
    /// A gate's signal arrived.
    Signal {
        /// Signal id.
        id: String,
        /// The value (a boolean for approvals).
        value: Box<Literal>,
    },
    /// A launch-plan node's child execution, or a dynamic task's sub-workflow, finished.
    Child {
        /// The node.
        node: NodeIdx,
        /// Outputs, or the error it failed with.
        result: Result<LiteralMap, ExecError>,
    },
    /// Abort the execution.
    Abort {
        /// Why.
        reason: String,
    },
    /// Fail the execution for a reason outside the workflow (a message the runtime cannot process):
    /// running work is stopped as on abort, and the execution ends Failed with a system error.
    Fail {
        /// Machine-readable code.
        code: String,
        /// What happened.
        message: String,
    },
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start (idempotently, by `name`) a task attempt.
    StartTask(TaskLaunch),
    /// Stop a task attempt (tolerating "already gone").
    AbortTask {
        /// The node.
        node: NodeIdx,
        /// The array element.
        index: Option<u32>,
        /// The attempt.
        attempt: u32,
        /// Its deterministic name.
        name: String,
    },
    /// Deliver [`Event::Timer`] after `after`.
    Timer {
        /// The node.
        node: NodeIdx,
        /// The array element, for element timeouts.
        index: Option<u32>,
        /// Attempt or generation, echoed back.
        attempt: u32,
        /// What for.
        kind: TimerKind,
        /// Delay.
        after: Duration,
    },
    /// Start (idempotently, by `name`) a child execution of a launch plan.
    StartChild {
        /// The node.
        node: NodeIdx,
        /// Launch plan name.
        launch_plan: String,
        /// Its inputs.
        inputs: LiteralMap,
        /// Deterministic child execution name.
        name: String,
    },
    /// Start (idempotently, by `name`) the sub-workflow a dynamic task returned, as a child execution with
    /// no inputs; its end comes back as [`Event::Child`].
    StartDynamic {
        /// The dynamic task's node.
        node: NodeIdx,
        /// The compiled sub-workflow.
        program: Program,
        /// The sub-workflow as the task returned it (what a runtime that keeps no program in memory
        /// compiles it again from: [`crate::compile::compile_dynamic`] over the parent's package).
        spec: Box<DynamicJobSpec>,
        /// Deterministic child execution name.
        name: String,
    },
    /// Abort a child execution.
    AbortChild {
        /// The node.
        node: NodeIdx,
        /// Child execution name.
        name: String,
    },
    /// A node changed phase (for progress output, events and persistence).
    NodePhase {
        /// The node.
        node: NodeIdx,
        /// Its new phase.
        phase: NodePhase,
    },
    /// The execution finished.
    Finished {
        /// Final phase.
        phase: ExecPhase,
        /// Outputs on success.
        outputs: Option<LiteralMap>,
        /// The error on failure or abort.
        error: Option<ExecError>,
    },
}

/// Everything needed to start one task attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLaunch {
    /// The execution's name.
    pub execution: String,
    /// The node.
    pub node: NodeIdx,
    /// Node id (renamed form).
    pub node_id: String,
    /// Array element, for array nodes.
    pub index: Option<u32>,
    /// Attempt, from 0.
    pub attempt: u32,
    /// Task name (key of [`CompiledPackage::tasks`]).
    pub task: String,
    /// Inputs (for array elements of flytekit map tasks: the whole lists, shared; see `index`).
    pub inputs: Arc<LiteralMap>,
    /// Deterministic name: `<execution>-<node>[-<index>]-<attempt>`, DNS-safe.
    pub name: String,
    /// May run on interruptible capacity.
    pub interruptible: bool,
    /// Cache key when the task is cached (the runtime looks it up before running and stores after).
    pub cache_key: Option<String>,
    /// Hold the cache key while computing (serializable cache).
    pub cache_serializable: bool,
    /// For an element of an array whose elements all read the same inputs (flytekit's map tasks, which
    /// pick their element by index): the array's size, so a connector may run the whole array as one
    /// job (an AWS Batch array job).
    pub array_size: Option<u32>,
}

impl TaskLaunch {
    /// The variables flytekit reads in a task's process: execution, project, domain, task, node,
    /// attempt, and for array elements the index (`FLYTE_K8S_ARRAY_INDEX`, named by
    /// `BATCH_JOB_ARRAY_INDEX_VAR_NAME`).
    pub fn flyte_env(&self, project: &str, domain: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("FLYTE_INTERNAL_EXECUTION_ID", self.execution.clone()),
            ("FLYTE_INTERNAL_EXECUTION_PROJECT", project.to_string()),
            ("FLYTE_INTERNAL_EXECUTION_DOMAIN", domain.to_string()),
            ("FLYTE_INTERNAL_TASK_NAME", self.task.clone()),
            ("FLYTE_INTERNAL_NODE_ID", self.node_id.clone()),
            ("FLYTE_ATTEMPT_NUMBER", self.attempt.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        if let Some(i) = self.index {
            env.push((
                "BATCH_JOB_ARRAY_INDEX_VAR_NAME".into(),
                "FLYTE_K8S_ARRAY_INDEX".into(),
            ));
            env.push(("FLYTE_K8S_ARRAY_INDEX".into(), i.to_string()));
        }
        env
    }
}

/// Settings of one execution.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Execution name (used in effect names).
    pub name: String,
    /// System-error retries per node.
    pub system_retries: u32,
    /// Most task attempts running at once across the execution (`None` = unlimited).
    pub max_parallelism: Option<u32>,
    /// Ignore cached outputs (and overwrite them).
    pub overwrite_cache: bool,
}

impl ExecConfig {
    /// Defaults for an execution named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            system_retries: DEFAULT_SYSTEM_RETRIES,
            max_parallelism: None,
            overwrite_cache: false,
        }
    }
}

/// The compiled definitions an execution runs, shared between executions.
#[derive(Debug, Clone)]
pub struct Program {
    /// Tasks, workflows and launch plans.
    pub package: Arc<CompiledPackage>,
    /// The workflow this execution runs.
    pub workflow: String,
}

impl PartialEq for Program {
    /// The same workflow of the same (shared) package.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.package, &other.package) && self.workflow == other.workflow
    }
}

/// A summary of node states for `status` listings.
pub type PhaseCounts = BTreeMap<&'static str, usize>;
