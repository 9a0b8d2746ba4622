//! Updraft YAML: workflows without Python. A file holds tasks, workflows and launch plans; it compiles
//! to the same flyteidl protos (and so the same compiled form) as a `pyflyte package` archive.
//! The format is documented in `docs/yaml.md` with a JSON Schema in `docs/updraft-workflow.schema.json`.

mod convert;
mod infer;
mod node;
pub mod plugins;
mod refs;
mod task;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Problem, Problems};
use crate::package::Package;

pub use refs::{Reference, parse_reference};

/// The format version this crate reads.
pub const VERSION: u32 = 1;

/// A whole Updraft YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Format version; must be 1.
    pub version: u32,
    /// Default container image of tasks that need one.
    #[serde(default)]
    pub image: Option<String>,
    /// Tasks by name.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskDef>,
    /// Workflows by name.
    #[serde(default)]
    pub workflows: BTreeMap<String, WorkflowDef>,
    /// Extra launch plans by name (every workflow also gets one of its own name).
    #[serde(default)]
    pub launch_plans: BTreeMap<String, LaunchPlanDef>,
}

/// A type: `int`, `list[str]`, `optional[file]`, … (see [`crate::types::parse`]).
pub type TypeText = String;

/// A task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    /// Kind: python, container, pod, echo, aws-batch, pytorch, tensorflow, mpi, spark, hive, athena,
    /// emr-serverless, sagemaker-training-job, sagemaker-processing-job, sagemaker-hyperparameter-tuning-job,
    /// sagemaker-transform-job, sagemaker-training-task, sagemaker-endpoint, boto.
    pub r#type: String,
    /// One-line description.
    #[serde(default)]
    pub description: Option<String>,
    /// Input name → type.
    #[serde(default)]
    pub inputs: BTreeMap<String, TypeText>,
    /// Output name → type.
    #[serde(default)]
    pub outputs: BTreeMap<String, TypeText>,
    /// Container image (defaults to the file's `image`).
    #[serde(default)]
    pub image: Option<String>,
    /// Python module of the task function (python-based kinds).
    #[serde(default)]
    pub module: Option<String>,
    /// Name of the task function in `module`.
    #[serde(default)]
    pub function: Option<String>,
    /// Container command (container kind; or overrides the python entrypoint).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Container arguments.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Resource requests (and limits).
    #[serde(default)]
    pub resources: Option<ResourcesDef>,
    /// User-error retries.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Timeout per attempt (`10m`, `1h30m`, seconds).
    #[serde(default)]
    pub timeout: Option<Value>,
    /// May run on interruptible (spot) capacity.
    #[serde(default)]
    pub interruptible: Option<bool>,
    /// Cache outputs by inputs.
    #[serde(default)]
    pub cache: Option<CacheDef>,
    /// Pod settings (pod kind, or any container-based kind).
    #[serde(default)]
    pub pod: Option<PodDef>,
    /// A named pod template on the cluster.
    #[serde(default)]
    pub pod_template_name: Option<String>,
    /// Where a container task reads inputs and writes outputs (container kind).
    #[serde(default)]
    pub data: Option<DataDef>,
    /// AWS Batch settings.
    #[serde(default)]
    pub batch: Option<plugins::BatchDef>,
    /// PyTorchJob settings.
    #[serde(default)]
    pub pytorch: Option<plugins::PyTorchDef>,
    /// TFJob settings.
    #[serde(default)]
    pub tensorflow: Option<plugins::TensorFlowDef>,
    /// MPIJob settings.
    #[serde(default)]
    pub mpi: Option<plugins::MpiDef>,
    /// Spark settings.
    #[serde(default)]
    pub spark: Option<plugins::SparkDef>,
    /// Hive (Qubole) settings.
    #[serde(default)]
    pub hive: Option<plugins::HiveDef>,
    /// Athena settings.
    #[serde(default)]
    pub athena: Option<plugins::AthenaDef>,
    /// EMR Serverless settings.
    #[serde(default)]
    pub emr_serverless: Option<plugins::EmrServerlessDef>,
    /// SageMaker job / endpoint settings (the boto3 request).
    #[serde(default)]
    pub sagemaker: Option<plugins::SageMakerDef>,
    /// Pythonic SageMaker job settings (sagemaker-training-task, sagemaker-processing-task).
    #[serde(default)]
    pub sagemaker_job: Option<plugins::SageMakerJobDef>,
    /// boto call settings.
    #[serde(default)]
    pub boto: Option<plugins::BotoDef>,
}

/// CPU, memory, GPU and storage.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDef {
    /// CPU request (`500m`, `2`).
    #[serde(default)]
    pub cpu: Option<Value>,
    /// Memory request (`1Gi`).
    #[serde(default)]
    pub memory: Option<String>,
    /// GPUs.
    #[serde(default)]
    pub gpu: Option<Value>,
    /// Ephemeral storage.
    #[serde(default)]
    pub ephemeral_storage: Option<String>,
    /// Limits, same keys (default: equal to the requests).
    #[serde(default)]
    pub limits: Option<Box<ResourcesDef>>,
}

/// Caching.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDef {
    /// Bump to invalidate.
    pub version: String,
    /// Only one execution computes a given key at a time.
    #[serde(default)]
    pub serializable: bool,
    /// Inputs left out of the key.
    #[serde(default)]
    pub ignore_inputs: Vec<String>,
}

/// Pod settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodDef {
    /// Name of the container that runs the task (default `primary`).
    #[serde(default)]
    pub primary_container: Option<String>,
    /// A Kubernetes V1PodSpec (containers, volumes, tolerations, node selectors, …).
    #[serde(default)]
    pub spec: Option<Value>,
    /// Pod labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Pod annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Raw-container data paths.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDef {
    /// Inputs are written here as files (default `/var/inputs`).
    #[serde(default)]
    pub input_path: Option<String>,
    /// Outputs are read from here (default `/var/outputs`).
    #[serde(default)]
    pub output_path: Option<String>,
    /// Format of the inputs file: json, yaml or proto (default proto).
    #[serde(default)]
    pub format: Option<String>,
}

/// A workflow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// One-line description.
    #[serde(default)]
    pub description: Option<String>,
    /// Inputs: `name: type` or `name: {type, default, description}`.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputDef>,
    /// Outputs: `name: ${node.output}` or `name: {value, type}`.
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputDef>,
    /// The nodes.
    pub nodes: Vec<NodeDef>,
    /// A task node run when the workflow fails (it receives the workflow's inputs).
    #[serde(default)]
    pub on_failure: Option<Box<NodeDef>>,
    /// `fail_immediately` (default) or `fail_after_executable_nodes_complete`.
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// Nodes are interruptible unless they say otherwise.
    #[serde(default)]
    pub interruptible: Option<bool>,
}

/// A workflow input.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InputDef {
    /// Just the type: required.
    Type(TypeText),
    /// Type with a default and description.
    Full(InputFull),
}

/// A workflow input with details.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFull {
    /// The type.
    pub r#type: TypeText,
    /// Default value (makes the input optional).
    #[serde(default)]
    pub default: Option<Value>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A workflow output.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OutputDef {
    /// A reference (`${node.output}`); the type is the referenced output's.
    Value(String),
    /// A value with an explicit type.
    Full(OutputFull),
}

/// A workflow output with an explicit type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFull {
    /// The value or reference.
    pub value: Value,
    /// The type.
    pub r#type: TypeText,
}

/// One node; exactly one of `task`, `map`, `workflow`, `launch_plan`, `branch`, `gate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// Node id, unique in its workflow.
    pub id: String,
    /// Run this task.
    #[serde(default)]
    pub task: Option<String>,
    /// Run a task once per element of list inputs.
    #[serde(default)]
    pub map: Option<MapDef>,
    /// Run this workflow as a subworkflow.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Launch this launch plan as a child execution.
    #[serde(default)]
    pub launch_plan: Option<String>,
    /// Choose a node by conditions.
    #[serde(default)]
    pub branch: Option<BranchDef>,
    /// Wait: sleep, approval or signal.
    #[serde(default)]
    pub gate: Option<GateDef>,
    /// Input bindings: values, `${inputs.x}` or `${node.output}` references, lists and maps of them.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    /// Extra ordering: nodes that must finish first though no input says so.
    #[serde(default)]
    pub after: Vec<String>,
    /// Override the task's retries.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Timeout of the node (`30m`).
    #[serde(default)]
    pub timeout: Option<Value>,
    /// Override interruptible.
    #[serde(default)]
    pub interruptible: Option<bool>,
    /// Override caching: `false`, or `{version, serializable}`.
    #[serde(default)]
    pub cache: Option<Value>,
}

/// A map over list inputs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapDef {
    /// The task run per element.
    pub task: String,
    /// Inputs split per element (default: every input not named in `bound`).
    #[serde(default)]
    pub over: Option<Vec<String>>,
    /// Most elements running at once.
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Succeed when at least this many elements succeed.
    #[serde(default)]
    pub min_successes: Option<u32>,
    /// Succeed when at least this fraction succeeds (outputs become lists of optionals).
    #[serde(default)]
    pub min_success_ratio: Option<f32>,
}

/// A conditional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchDef {
    /// Cases, tried in order.
    pub cases: Vec<CaseDef>,
    /// The node when no case holds.
    #[serde(default, rename = "else")]
    pub otherwise: Option<Box<NodeDef>>,
    /// Fail with this message when no case holds.
    #[serde(default)]
    pub else_fail: Option<String>,
}

/// One case of a branch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseDef {
    /// A condition: comparisons (`==`, `!=`, `<`, `<=`, `>`, `>=`) of references and constants, joined by
    /// `and` / `or`, with parentheses.
    pub when: String,
    /// The node run when it holds.
    pub then: Box<NodeDef>,
}

/// A gate: exactly one of `sleep`, `approve`, `signal`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateDef {
    /// Sleep this long.
    #[serde(default)]
    pub sleep: Option<Value>,
    /// Wait for approval of the node's input `value` under this signal id.
    #[serde(default)]
    pub approve: Option<String>,
    /// Wait for a value under this signal id.
    #[serde(default)]
    pub signal: Option<String>,
    /// The signal's type (default str).
    #[serde(default)]
    pub r#type: Option<TypeText>,
}

/// A launch plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchPlanDef {
    /// The workflow it launches.
    pub workflow: String,
    /// Defaults for the workflow's inputs.
    #[serde(default)]
    pub defaults: BTreeMap<String, Value>,
    /// Inputs fixed to a value.
    #[serde(default)]
    pub fixed: BTreeMap<String, Value>,
}

/// Deepest `[`/`{` nesting accepted; the YAML parser slows down quadratically on absurd nesting.
const MAX_FLOW_DEPTH: usize = 128;

/// Finds flow nesting deeper than [`MAX_FLOW_DEPTH`] (outside quotes and comments): (line, column).
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    for c in text.chars() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
            comment = false;
            prev = c;
            continue;
        }
        if comment {
            continue;
        }
        match (quote, c) {
            (Some(q), c) if c == q && !(q == '"' && prev == '\\') => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if prev.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some((line, col));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    None
}

/// Parses and converts an Updraft YAML file into a package.
pub fn load(file: &str, text: &str) -> Result<Package, Problems> {
    if let Some((line, col)) = too_deep(text) {
        return Err(Problem::file(
            file,
            format!("YAML: nested deeper than {MAX_FLOW_DEPTH} levels at line {line} column {col}"),
        )
        .into());
    }
    let parsed: File = serde_norway::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let hint = if msg.contains("flow") && text.contains("${") {
            " (a reference like ${node.output} inside {…} or […] must be quoted: \"${node.output}\")"
        } else {
            ""
        };
        Problem::file(file, format!("YAML: {msg}{hint}"))
    })?;
    if parsed.version != VERSION {
        return Err(Problem::file(
            file,
            format!(
                "version {} is not supported (this build reads version {VERSION})",
                parsed.version
            ),
        )
        .into());
    }
    convert::to_package(file, &parsed)
}
