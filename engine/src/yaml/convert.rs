//! Updraft YAML → flyteidl protos (TaskTemplate, WorkflowTemplate, LaunchPlan), as flytekit would write them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use updraft_proto::admin::{LaunchPlan, LaunchPlanSpec, WorkflowSpec};
use updraft_proto::core::{
    self as core, ArrayNode, Binding, BindingData, BindingDataCollection, BindingDataMap, BranchNode,
    Container, DataLoadingConfig, GateNode, Identifier, IfBlock, IfElseBlock, K8sObjectMetadata, K8sPod,
    KeyValuePair, Literal, LiteralType, Node, NodeMetadata, OutputReference, Parameter, ParameterMap,
    ResourceType, Resources, RetryStrategy, RuntimeMetadata, TaskMetadata, TaskNode, TaskTemplate,
    TypedInterface, Variable, VariableMap, WorkflowMetadata, WorkflowMetadataDefaults, WorkflowNode,
    WorkflowTemplate, array_node, binding_data, gate_node, if_else_block, literal, literal_type::Type,
    node::Target, parameter, resources::ResourceName, task_template, workflow_metadata::OnFailurePolicy,
};

use super::plugins::to_struct;
use super::refs::{parse_condition, parse_reference};
use super::{File, InputDef, NodeDef, OutputDef, ResourcesDef, TaskDef, WorkflowDef};
use crate::error::{Problem, Problems};
use crate::literal::{from_json, parse_duration};
use crate::package::{Origin, Package};
use crate::types;

/// The task kinds of Updraft YAML, and the flytekit task type each becomes.
pub const KINDS: &[(&str, &str)] = &[
    ("python", "python-task"),
    ("container", "raw-container"),
    ("pod", "python-task"),
    ("echo", "echo"),
    ("aws-batch", "aws-batch"),
    ("pytorch", "pytorch"),
    ("tensorflow", "tensorflow"),
    ("mpi", "mpi"),
    ("spark", "spark"),
    ("hive", "hive"),
    ("athena", "presto"),
    ("emr-serverless", "emr_serverless"),
    ("sagemaker-training-job", "sagemaker-training-job"),
    ("sagemaker-processing-job", "sagemaker-processing-job"),
    ("sagemaker-hyperparameter-tuning-job", "sagemaker-hyperparameter-tuning-job"),
    ("sagemaker-transform-job", "sagemaker-transform-job"),
    ("sagemaker-training-task", "sagemaker-training-task"),
    ("sagemaker-processing-task", "sagemaker-processing-task"),
    ("sagemaker-endpoint", "sagemaker-endpoint"),
    ("boto", "boto"),
];

struct Ctx<'a> {
    file: &'a str,
    doc: &'a File,
    problems: Vec<Problem>,
    entity: String,
    /// Inferred workflow output types (memo) and the workflows being inferred (cycle guard).
    wf_outputs: BTreeMap<String, Option<BTreeMap<String, LiteralType>>>,
    inferring: Vec<String>,
}

impl Ctx<'_> {
    fn problem(&mut self, node: Option<&str>, field: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            entity: self.entity.clone(),
            node: node.map(str::to_string),
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn parse_type(&mut self, node: Option<&str>, field: &str, text: &str) -> Option<LiteralType> {
        match types::parse(text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(node, field, e.to_string());
                None
            }
        }
    }

    fn vars(&mut self, m: &BTreeMap<String, String>, side: &str) -> BTreeMap<String, LiteralType> {
        let mut out = BTreeMap::new();
        for (k, t) in m {
            if let Some(t) = self.parse_type(None, &format!("{side}.{k}"), t) {
                out.insert(k.clone(), t);
            }
        }
        out
    }
}

fn id(kind: ResourceType, name: &str) -> Option<Identifier> {
    Some(Identifier { resource_type: kind as i32, name: name.to_string(), ..Default::default() })
}

fn variable_map(m: &BTreeMap<String, LiteralType>) -> Option<VariableMap> {
    Some(VariableMap {
        variables: m
            .iter()
            .map(|(k, t)| (k.clone(), Variable { r#type: Some(t.clone()), description: k.clone(), ..Default::default() }))
            .collect(),
    })
}

fn duration(v: &Value) -> Result<prost_types::Duration, String> {
    match v {
        Value::String(s) => parse_duration(s),
        Value::Number(n) => parse_duration(&n.to_string()),
        _ => Err(format!("{v} is not a duration (like 90s, 1h30m)")),
    }
}

/// Converts a parsed file to a package of protos.
pub fn to_package(file: &str, doc: &File) -> Result<Package, Problems> {
    let mut ctx = Ctx { file, doc, problems: Vec::new(), entity: String::new(), wf_outputs: BTreeMap::new(), inferring: Vec::new() };
    let mut pkg = Package::default();
    let origin = Origin { file: file.to_string(), entry: None };
    if doc.tasks.is_empty() && doc.workflows.is_empty() {
        ctx.problem(None, "", "the file defines no tasks and no workflows");
    }
    for (name, def) in &doc.tasks {
        ctx.entity = format!("task {name}");
        if let Some(t) = task(&mut ctx, name, def) {
            if let Err(p) = pkg.add_task(t, origin.clone()) {
                ctx.problems.push(p);
            }
        }
    }
    for (name, def) in &doc.workflows {
        ctx.entity = format!("workflow {name}");
        if doc.tasks.contains_key(name) {
            ctx.problem(None, "", "a task has the same name");
        }
        let Some((template, lp)) = workflow(&mut ctx, name, def) else { continue };
        let spec = WorkflowSpec { template: Some(template), ..Default::default() };
        if let Err(p) = pkg.add_workflow_spec(spec, origin.clone()) {
            ctx.problems.push(p);
        }
        if let Err(p) = pkg.add_launch_plan(lp, origin.clone()) {
            ctx.problems.push(p);
        }
    }
    for (name, def) in &doc.launch_plans {
        ctx.entity = format!("launch plan {name}");
        if doc.workflows.contains_key(name) {
            ctx.problem(None, "", "every workflow has a launch plan of its own name; choose another name");
            continue;
        }
        let Some(wf) = doc.workflows.get(&def.workflow) else {
            ctx.problem(None, "workflow", format!("workflow `{}` is not in the file", def.workflow));
            continue;
        };
        let input_types = workflow_inputs(&mut ctx, wf);
        let mut defaults = BTreeMap::new();
        for (k, v) in &def.defaults {
            match input_types.get(k) {
                Some(t) => match from_json(v, t) {
                    Ok(l) => {
                        defaults.insert(k.clone(), l);
                    }
                    Err(e) => ctx.problem(None, format!("defaults.{k}"), e),
                },
                None => ctx.problem(None, format!("defaults.{k}"), format!("workflow `{}` has no input `{k}`", def.workflow)),
            }
        }
        let mut fixed = BTreeMap::new();
        for (k, v) in &def.fixed {
            match input_types.get(k) {
                Some(t) => match from_json(v, t) {
                    Ok(l) => {
                        fixed.insert(k.clone(), l);
                    }
                    Err(e) => ctx.problem(None, format!("fixed.{k}"), e),
                },
                None => ctx.problem(None, format!("fixed.{k}"), format!("workflow `{}` has no input `{k}`", def.workflow)),
            }
        }
        // Workflow defaults still apply unless overridden.
        for (k, d) in workflow_defaults(&mut ctx, wf, &input_types) {
            defaults.entry(k).or_insert(d);
        }
        let lp = launch_plan(name, &def.workflow, &input_types, &defaults, &fixed);
        if let Err(p) = pkg.add_launch_plan(lp, origin.clone()) {
            ctx.problems.push(p);
        }
    }
    Problems(ctx.problems).into_result(pkg)
}

fn launch_plan(
    name: &str,
    workflow: &str,
    inputs: &BTreeMap<String, LiteralType>,
    defaults: &BTreeMap<String, Literal>,
    fixed: &BTreeMap<String, Literal>,
) -> LaunchPlan {
    let parameters = inputs
        .iter()
        .filter(|(k, _)| !fixed.contains_key(*k))
        .map(|(k, t)| {
            let behavior = match defaults.get(k) {
                Some(d) => parameter::Behavior::Default(d.clone()),
                None => parameter::Behavior::Required(true),
            };
            (
                k.clone(),
                Parameter {
                    var: Some(Variable { r#type: Some(t.clone()), description: k.clone(), ..Default::default() }),
                    behavior: Some(behavior),
                },
            )
        })
        .collect();
    LaunchPlan {
        id: id(ResourceType::LaunchPlan, name),
        spec: Some(LaunchPlanSpec {
            workflow_id: id(ResourceType::Workflow, workflow),
            default_inputs: Some(ParameterMap { parameters }),
            fixed_inputs: Some(core::LiteralMap { literals: fixed.clone() }),
            ..Default::default()
        }),
        closure: None,
    }
}

fn python_args(module: &str, function: &str, output_suffix: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "pyflyte-execute",
        "--inputs",
        "{{.input}}",
        "--output-prefix",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(format!("{{{{.outputPrefix}}}}{output_suffix}"));
    for s in [
        "--raw-output-data-prefix",
        "{{.rawOutputDataPrefix}}",
        "--checkpoint-path",
        "{{.checkpointOutputPrefix}}",
        "--prev-checkpoint",
        "{{.prevCheckpointPrefix}}",
        "--resolver",
        "flytekit.core.python_auto_container.default_task_resolver",
        "--",
        "task-module",
        module,
        "task-name",
        function,
    ] {
        a.push(s.to_string());
    }
    a
}

fn resources_proto(r: &ResourcesDef) -> Resources {
    let entries = |r: &ResourcesDef| {
        let mut out = Vec::new();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            o => o.to_string(),
        };
        let mut push = |name: ResourceName, v: Option<String>| {
            if let Some(value) = v {
                out.push(core::resources::ResourceEntry { name: name as i32, value });
            }
        };
        push(ResourceName::Cpu, r.cpu.as_ref().map(text));
        push(ResourceName::Gpu, r.gpu.as_ref().map(text));
        push(ResourceName::Memory, r.memory.clone());
        push(ResourceName::EphemeralStorage, r.ephemeral_storage.clone());
        out
    };
    let requests = entries(r);
    let limits = r.limits.as_deref().map_or_else(|| requests.clone(), entries);
    Resources { requests, limits }
}

fn task(ctx: &mut Ctx<'_>, name: &str, def: &TaskDef) -> Option<TaskTemplate> {
    let Some(&(_, task_type)) = KINDS.iter().find(|(k, _)| *k == def.r#type) else {
        let kinds: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        ctx.problem(None, "type", format!("unknown task type `{}` (one of: {})", def.r#type, kinds.join(", ")));
        return None;
    };
    let kind = def.r#type.as_str();
    let inputs = ctx.vars(&def.inputs, "inputs");
    let outputs = ctx.vars(&def.outputs, "outputs");
    // Plugin blocks must match the kind.
    let blocks: [(&str, bool, &[&str]); 11] = [
        ("batch", def.batch.is_some(), &["aws-batch"]),
        ("pytorch", def.pytorch.is_some(), &["pytorch"]),
        ("tensorflow", def.tensorflow.is_some(), &["tensorflow"]),
        ("mpi", def.mpi.is_some(), &["mpi"]),
        ("spark", def.spark.is_some(), &["spark"]),
        ("hive", def.hive.is_some(), &["hive"]),
        ("athena", def.athena.is_some(), &["athena"]),
        ("emr_serverless", def.emr_serverless.is_some(), &["emr-serverless"]),
        ("sagemaker", def.sagemaker.is_some(), &["sagemaker-training-job", "sagemaker-processing-job", "sagemaker-hyperparameter-tuning-job", "sagemaker-transform-job", "sagemaker-endpoint"]),
        ("sagemaker_job", def.sagemaker_job.is_some(), &["sagemaker-training-task", "sagemaker-processing-task"]),
        ("boto", def.boto.is_some(), &["boto"]),
    ];
    for (block, present, kinds) in blocks {
        if present && !kinds.contains(&kind) {
            ctx.problem(None, block, format!("`{block}` settings apply only to {} tasks", kinds.join(" / ")));
        }
        if !present && kinds.contains(&kind) && !matches!(block, "pytorch" | "tensorflow" | "mpi" | "spark" | "batch") {
            ctx.problem(None, block, format!("a {kind} task needs `{block}` settings"));
        }
    }
    let image = def.image.clone().or_else(|| ctx.doc.image.clone());
    let python_based = matches!(kind, "python" | "pod" | "aws-batch" | "pytorch" | "tensorflow" | "mpi" | "spark" | "sagemaker-training-task" | "sagemaker-processing-task")
        || (kind == "emr-serverless" && (def.module.is_some() || def.command.is_some()));
    let mut custom: Option<Value> = None;
    let mut config = BTreeMap::new();
    let mut version = 0;
    let plugin_result: Result<(), String> = (|| {
        match kind {
            "aws-batch" => {
                let (c, platform) = def.batch.as_ref().map_or_else(|| (json!({"platformCapabilities": "EC2"}), "EC2".to_string()), |b| b.custom());
                custom = Some(c);
                config.insert("platformCapabilities".to_string(), platform);
            }
            "pytorch" => {
                custom = Some(def.pytorch.as_ref().map_or_else(|| super::plugins::PyTorchDef { master: None, workers: None, run_policy: None, elastic: None }.custom(), |p| p.custom())?);
                version = 1;
            }
            "tensorflow" => {
                custom = Some(def.tensorflow.as_ref().map_or_else(|| Ok(json!({"workerReplicas": {"replicas": 1, "resources": {}}})), |p| p.custom())?);
                version = 1;
            }
            "mpi" => {
                custom = Some(def.mpi.as_ref().map_or_else(|| Ok(json!({"workerReplicas": {"replicas": 1, "resources": {}}, "launcherReplicas": {"replicas": 1, "resources": {}}, "slots": 1})), |p| p.custom())?);
                version = 1;
            }
            "spark" => {
                let d = super::plugins::SparkDef { spark_conf: BTreeMap::new(), hadoop_conf: BTreeMap::new(), main_application_file: None, main_class: None, application_type: None, executor_path: None };
                custom = Some(def.spark.as_ref().unwrap_or(&d).custom()?);
            }
            "hive" => custom = def.hive.as_ref().map(|h| h.custom()),
            "athena" => custom = def.athena.as_ref().map(|a| a.custom()),
            "emr-serverless" => custom = def.emr_serverless.as_ref().map(|e| e.custom()).transpose()?,
            "boto" => custom = def.boto.as_ref().map(|b| b.custom()),
            "sagemaker-training-task" | "sagemaker-processing-task" => custom = def.sagemaker_job.as_ref().map(|s| s.custom()),
            k if k.starts_with("sagemaker-") => custom = def.sagemaker.as_ref().map(|s| s.custom()).transpose()?,
            _ => {}
        }
        Ok(())
    })();
    if let Err(e) = plugin_result {
        ctx.problem(None, def.r#type.replace('-', "_"), e);
    }
    let env: Vec<KeyValuePair> = def.env.iter().map(|(k, v)| KeyValuePair { key: k.clone(), value: v.clone() }).collect();
    let resources = def.resources.as_ref().map(resources_proto);
    let container = |ctx: &mut Ctx<'_>, args: Vec<String>, command: Vec<String>, data: Option<DataLoadingConfig>| -> Option<Container> {
        let Some(image) = image.clone() else {
            ctx.problem(None, "image", format!("a {kind} task needs an image (set `image` on the task or the file)"));
            return None;
        };
        Some(Container { image, command, args, resources: resources.clone(), env: env.clone(), data_config: data, ..Default::default() })
    };
    let mut target = None;
    if kind == "container" {
        let command = def.command.clone().unwrap_or_default();
        let args = def.args.clone().unwrap_or_default();
        if command.is_empty() && args.is_empty() {
            ctx.problem(None, "command", "a container task needs a command");
        }
        let data = def.data.as_ref();
        let format = match data.and_then(|d| d.format.as_deref()) {
            None | Some("proto") => core::data_loading_config::LiteralMapFormat::Proto,
            Some("json") => core::data_loading_config::LiteralMapFormat::Json,
            Some("yaml") => core::data_loading_config::LiteralMapFormat::Yaml,
            Some(o) => {
                ctx.problem(None, "data.format", format!("`{o}` is not json, yaml or proto"));
                core::data_loading_config::LiteralMapFormat::Proto
            }
        };
        let dc = DataLoadingConfig {
            enabled: true,
            input_path: data.and_then(|d| d.input_path.clone()).unwrap_or_else(|| "/var/inputs".into()),
            output_path: data.and_then(|d| d.output_path.clone()).unwrap_or_else(|| "/var/outputs".into()),
            format: format as i32,
            io_strategy: None,
        };
        target = container(ctx, args, command, Some(dc)).map(task_template::Target::Container);
    } else if def.data.is_some() {
        ctx.problem(None, "data", "`data` applies only to container tasks");
    }
    if python_based {
        let args = match (&def.module, &def.function, &def.command, &def.args) {
            (_, _, Some(_), _) | (_, _, _, Some(_)) => def.args.clone().unwrap_or_default(),
            (Some(m), Some(f), None, None) => python_args(m, f, if kind == "aws-batch" { "/0" } else { "" }),
            _ => {
                ctx.problem(None, "module", format!("a {kind} task needs `module` and `function` (or `command`/`args`)"));
                Vec::new()
            }
        };
        let command = def.command.clone().unwrap_or_default();
        let c = container(ctx, args, command, None);
        if kind == "pod" || def.pod.is_some() {
            let primary = def.pod.as_ref().and_then(|p| p.primary_container.clone()).unwrap_or_else(|| "primary".into());
            let mut spec = def.pod.as_ref().and_then(|p| p.spec.clone()).unwrap_or_else(|| json!({}));
            if !spec.is_object() {
                ctx.problem(None, "pod.spec", "the pod spec must be a mapping (a V1PodSpec)");
                spec = json!({});
            }
            if let Some(c) = &c {
                merge_primary(&mut spec, &primary, c);
            }
            config.insert("primary_container_name".into(), primary.clone());
            let meta = def.pod.as_ref().map(|p| K8sObjectMetadata { labels: p.labels.clone(), annotations: p.annotations.clone() });
            target = Some(task_template::Target::K8sPod(K8sPod {
                metadata: meta,
                pod_spec: Some(to_struct(&spec)),
                data_config: None,
                primary_container_name: primary,
            }));
        } else {
            target = c.map(task_template::Target::Container);
        }
    } else if def.pod.is_some() && kind != "container" {
        ctx.problem(None, "pod", format!("`pod` does not apply to {kind} tasks"));
    }
    if kind == "echo" && inputs != outputs {
        ctx.problem(None, "outputs", "an echo task's outputs are its inputs: declare the same names and types");
    }
    if matches!(kind, "hive" | "athena" | "echo" | "boto") || kind.ends_with("-job") || kind == "sagemaker-endpoint" {
        if def.module.is_some() || def.command.is_some() || def.args.is_some() {
            ctx.problem(None, "module", format!("a {kind} task runs no container: drop module/function/command/args"));
        }
    }
    let timeout = match &def.timeout {
        Some(v) => match duration(v) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.problem(None, "timeout", e);
                None
            }
        },
        None => None,
    };
    if let Some(cache) = &def.cache {
        for i in &cache.ignore_inputs {
            if !inputs.contains_key(i) {
                ctx.problem(None, "cache.ignore_inputs", format!("`{i}` is not an input"));
            }
        }
        if cache.version.is_empty() {
            ctx.problem(None, "cache.version", "the cache version cannot be empty");
        }
    }
    let metadata = TaskMetadata {
        discoverable: def.cache.is_some(),
        runtime: Some(RuntimeMetadata { r#type: 0, version: env!("CARGO_PKG_VERSION").into(), flavor: "updraft-yaml".into() }),
        timeout,
        retries: Some(RetryStrategy { retries: def.retries.unwrap_or(0) }),
        discovery_version: def.cache.as_ref().map(|c| c.version.clone()).unwrap_or_default(),
        interruptible_value: def.interruptible.map(core::task_metadata::InterruptibleValue::Interruptible),
        cache_serializable: def.cache.as_ref().is_some_and(|c| c.serializable),
        pod_template_name: def.pod_template_name.clone().unwrap_or_default(),
        cache_ignore_input_vars: def.cache.as_ref().map(|c| c.ignore_inputs.clone()).unwrap_or_default(),
        ..Default::default()
    };
    Some(TaskTemplate {
        id: id(ResourceType::Task, name),
        r#type: task_type.to_string(),
        metadata: Some(metadata),
        interface: Some(TypedInterface { inputs: variable_map(&inputs), outputs: variable_map(&outputs) }),
        custom: custom.as_ref().map(to_struct),
        target,
        task_type_version: version,
        config: config.into_iter().collect(),
        ..Default::default()
    })
}

/// Puts the task's image, args, env and resources on the pod spec's primary container (added if absent),
/// keeping what the spec already sets.
fn merge_primary(spec: &mut Value, primary: &str, c: &Container) {
    let Some(obj) = spec.as_object_mut() else { return };
    let containers = obj.entry("containers").or_insert_with(|| json!([]));
    if !containers.is_array() {
        *containers = json!([]);
    }
    let list = containers.as_array_mut().expect("array checked above");
    let pos = list.iter().position(|x| x.get("name").and_then(Value::as_str) == Some(primary));
    let entry = match pos {
        Some(i) => &mut list[i],
        None => {
            list.push(json!({"name": primary}));
            list.last_mut().expect("just pushed")
        }
    };
    let Some(e) = entry.as_object_mut() else { return };
    e.entry("image").or_insert_with(|| json!(c.image));
    if !c.args.is_empty() {
        e.entry("args").or_insert_with(|| json!(c.args));
    }
    if !c.command.is_empty() {
        e.entry("command").or_insert_with(|| json!(c.command));
    }
    if !c.env.is_empty() {
        let env: Vec<Value> = c.env.iter().map(|kv| json!({"name": kv.key, "value": kv.value})).collect();
        e.entry("env").or_insert_with(|| json!(env));
    }
    if let Some(r) = &c.resources {
        let pick = |entries: &[core::resources::ResourceEntry]| {
            let mut m = serde_json::Map::new();
            for en in entries {
                let k = match ResourceName::try_from(en.name) {
                    Ok(ResourceName::Cpu) => "cpu",
                    Ok(ResourceName::Memory) => "memory",
                    Ok(ResourceName::Gpu) => "nvidia.com/gpu",
                    Ok(ResourceName::EphemeralStorage) => "ephemeral-storage",
                    _ => continue,
                };
                m.insert(k.into(), json!(en.value));
            }
            Value::Object(m)
        };
        e.entry("resources").or_insert_with(|| json!({"requests": pick(&r.requests), "limits": pick(&r.limits)}));
    }
}

fn workflow_inputs(ctx: &mut Ctx<'_>, def: &WorkflowDef) -> BTreeMap<String, LiteralType> {
    let mut out = BTreeMap::new();
    for (k, d) in &def.inputs {
        let text = match d {
            InputDef::Type(t) => t,
            InputDef::Full(f) => &f.r#type,
        };
        if let Some(t) = ctx.parse_type(None, &format!("inputs.{k}"), text) {
            out.insert(k.clone(), t);
        }
    }
    out
}

fn workflow_defaults(ctx: &mut Ctx<'_>, def: &WorkflowDef, types: &BTreeMap<String, LiteralType>) -> BTreeMap<String, Literal> {
    let mut out = BTreeMap::new();
    for (k, d) in &def.inputs {
        if let (InputDef::Full(f), Some(t)) = (d, types.get(k)) {
            if let Some(v) = &f.default {
                match from_json(v, t) {
                    Ok(l) => {
                        out.insert(k.clone(), l);
                    }
                    Err(e) => ctx.problem(None, format!("inputs.{k}.default"), e),
                }
            }
        }
    }
    out
}

fn workflow(ctx: &mut Ctx<'_>, name: &str, def: &WorkflowDef) -> Option<(WorkflowTemplate, LaunchPlan)> {
    let inputs = workflow_inputs(ctx, def);
    let defaults = workflow_defaults(ctx, def, &inputs);
    if def.nodes.is_empty() {
        ctx.problem(None, "nodes", "the workflow has no nodes");
    }
    let mut ids = BTreeSet::new();
    let mut nodes = Vec::new();
    for (i, n) in def.nodes.iter().enumerate() {
        if !ids.insert(n.id.clone()) {
            ctx.problem(Some(&n.id), "id", "duplicate node id");
            continue;
        }
        if let Some(node) = node(ctx, def, n, &format!("nodes[{i}]")) {
            nodes.push(node);
        }
    }
    let mut outputs = Vec::new();
    let mut output_types = BTreeMap::new();
    for (k, o) in &def.outputs {
        let field = format!("outputs.{k}");
        let (value, t) = match o {
            OutputDef::Value(s) => (Value::String(s.clone()), None),
            OutputDef::Full(f) => (f.value.clone(), ctx.parse_type(None, &field, &f.r#type)),
        };
        let t = t.or_else(|| match &value {
            Value::String(s) => match parse_reference(s) {
                Ok(Some(r)) => infer_ref(ctx, def, &r, &field),
                _ => None,
            },
            _ => None,
        });
        let Some(t) = t else {
            if !matches!(&value, Value::String(s) if parse_reference(s).is_err()) {
                let why = match &value {
                    Value::String(s) => match parse_reference(s) {
                        Ok(Some(r)) => match &r.node {
                            Some(n) if !def.nodes.iter().any(|x| &x.id == n) => format!("there is no node `{n}`"),
                            Some(n) => format!("the outputs of node `{n}` are not known in this file (does its task, workflow or launch plan exist here?)"),
                            None if !def.inputs.contains_key(&r.var) => format!("there is no input `{}`", r.var),
                            None => "its type is not known".to_string(),
                        },
                        _ => "it is a constant".to_string(),
                    },
                    _ => "it is a constant".to_string(),
                };
                if ctx.problems.iter().all(|p| p.field != field || p.entity != ctx.entity) {
                    ctx.problem(None, &field, format!("cannot tell this output's type: {why}; or write it as {{value: …, type: …}}"));
                }
            } else if let Value::String(s) = &value {
                let e = parse_reference(s).err().unwrap_or_default();
                ctx.problem(None, &field, e);
            }
            continue;
        };
        match binding(&value, Some(&t)) {
            Ok(b) => outputs.push(Binding { var: k.clone(), binding: Some(b) }),
            Err(e) => ctx.problem(None, &field, e),
        }
        output_types.insert(k.clone(), t);
    }
    let failure_node = def.on_failure.as_ref().and_then(|f| {
        if f.task.is_none() {
            ctx.problem(Some(&f.id), "on_failure", "the failure node must run a task");
        }
        node(ctx, def, f, "on_failure")
    });
    let policy = match def.failure_policy.as_deref() {
        None | Some("fail_immediately") => OnFailurePolicy::FailImmediately,
        Some("fail_after_executable_nodes_complete") => OnFailurePolicy::FailAfterExecutableNodesComplete,
        Some(o) => {
            ctx.problem(None, "failure_policy", format!("`{o}` is not fail_immediately or fail_after_executable_nodes_complete"));
            OnFailurePolicy::FailImmediately
        }
    };
    let template = WorkflowTemplate {
        id: id(ResourceType::Workflow, name),
        metadata: Some(WorkflowMetadata { on_failure: policy as i32, ..Default::default() }),
        interface: Some(TypedInterface { inputs: variable_map(&inputs), outputs: variable_map(&output_types) }),
        nodes,
        outputs,
        failure_node,
        metadata_defaults: Some(WorkflowMetadataDefaults { interruptible: def.interruptible.unwrap_or(false) }),
    };
    let lp = launch_plan(name, name, &inputs, &defaults, &BTreeMap::new());
    Some((template, lp))
}

/// The declared or inferable output types of a node (None = unknown).
fn node_outputs(ctx: &mut Ctx<'_>, wf: &WorkflowDef, n: &NodeDef) -> Option<BTreeMap<String, LiteralType>> {
    let doc = ctx.doc;
    let task_outputs = |ctx: &mut Ctx<'_>, t: &str| doc.tasks.get(t).map(|d| ctx.vars(&d.outputs, "outputs"));
    if let Some(t) = &n.task {
        return task_outputs(ctx, t);
    }
    if let Some(m) = &n.map {
        let partial = m.min_success_ratio.is_some_and(|r| r < 1.0) || m.min_successes.is_some();
        return task_outputs(ctx, &m.task).map(|o| {
            o.into_iter().map(|(k, t)| (k, types::list_of(if partial { types::optional(t) } else { t }))).collect()
        });
    }
    if let Some(w) = &n.workflow {
        return workflow_outputs(ctx, w);
    }
    if let Some(lp) = &n.launch_plan {
        let wf_name = doc.launch_plans.get(lp).map(|d| d.workflow.clone()).unwrap_or_else(|| lp.clone());
        return workflow_outputs(ctx, &wf_name);
    }
    if let Some(g) = &n.gate {
        if g.signal.is_some() {
            let t = types::parse(g.r#type.as_deref().unwrap_or("str")).ok()?;
            return Some([("value".to_string(), t)].into());
        }
        if g.approve.is_some() {
            let (var, v) = n.inputs.iter().next()?;
            let t = match v {
                Value::String(s) => match parse_reference(s) {
                    Ok(Some(r)) => infer_ref(ctx, wf, &r, "")?,
                    _ => types::simple(core::SimpleType::String),
                },
                other => literal_guess(other)?,
            };
            return Some([(var.clone(), t)].into());
        }
        return Some(BTreeMap::new());
    }
    if let Some(b) = &n.branch {
        return node_outputs(ctx, wf, &b.cases.first()?.then);
    }
    None
}

fn workflow_outputs(ctx: &mut Ctx<'_>, name: &str) -> Option<BTreeMap<String, LiteralType>> {
    if let Some(memo) = ctx.wf_outputs.get(name) {
        return memo.clone();
    }
    if ctx.inferring.iter().any(|w| w == name) {
        return None;
    }
    let doc = ctx.doc;
    let def = doc.workflows.get(name)?;
    ctx.inferring.push(name.to_string());
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, o) in &def.outputs {
        let t = match o {
            OutputDef::Full(f) => types::parse(&f.r#type).ok(),
            OutputDef::Value(s) => match parse_reference(s) {
                Ok(Some(r)) => infer_ref(ctx, def, &r, ""),
                _ => None,
            },
        };
        match t {
            Some(t) => {
                out.insert(k.clone(), t);
            }
            None => ok = false,
        }
    }
    ctx.inferring.pop();
    let result = ok.then_some(out);
    ctx.wf_outputs.insert(name.to_string(), result.clone());
    result
}

fn infer_ref(ctx: &mut Ctx<'_>, wf: &WorkflowDef, r: &super::Reference, field: &str) -> Option<LiteralType> {
    let base = match &r.node {
        None => {
            let inputs = wf.inputs.get(&r.var)?;
            types::parse(match inputs {
                InputDef::Type(t) => t,
                InputDef::Full(f) => &f.r#type,
            })
            .ok()?
        }
        Some(n) => {
            let node = wf.nodes.iter().find(|x| &x.id == n)?;
            let outs = node_outputs(ctx, wf, node)?;
            match outs.get(&r.var) {
                Some(t) => t.clone(),
                None => {
                    if !field.is_empty() {
                        let have: Vec<&String> = outs.keys().collect();
                        ctx.problem(None, field, format!("node `{n}` has no output `{}` (it has: {have:?})", r.var));
                    }
                    return None;
                }
            }
        }
    };
    let mut t = base;
    for p in &r.path {
        t = match (&t.r#type, &p.value) {
            (Some(Type::CollectionType(el)), Some(core::promise_attribute::Value::IntValue(_))) => (**el).clone(),
            (Some(Type::MapValueType(el)), Some(core::promise_attribute::Value::StringValue(_))) => (**el).clone(),
            _ => return None,
        };
    }
    Some(t)
}

/// The type a constant written without a declared type most likely has.
fn literal_guess(v: &Value) -> Option<LiteralType> {
    use core::SimpleType as S;
    Some(match v {
        Value::Null => types::simple(S::None),
        Value::Bool(_) => types::simple(S::Boolean),
        Value::Number(n) if n.is_i64() => types::simple(S::Integer),
        Value::Number(_) => types::simple(S::Float),
        Value::String(_) => types::simple(S::String),
        Value::Array(a) => types::list_of(a.first().map_or(Some(types::simple(S::None)), literal_guess)?),
        Value::Object(m) => types::map_of(m.values().next().map_or(Some(types::simple(S::None)), literal_guess)?),
    })
}

/// The input types a node's target expects, when the target is defined in this file.
fn target_inputs(ctx: &mut Ctx<'_>, n: &NodeDef) -> Option<BTreeMap<String, LiteralType>> {
    let doc = ctx.doc;
    if let Some(t) = &n.task {
        return doc.tasks.get(t).map(|d| ctx.vars(&d.inputs, "inputs"));
    }
    if let Some(m) = &n.map {
        let inputs = doc.tasks.get(&m.task).map(|d| ctx.vars(&d.inputs, "inputs"))?;
        return Some(
            inputs
                .into_iter()
                .map(|(k, t)| {
                    let mapped = m.over.as_ref().is_none_or(|o| o.contains(&k));
                    (k, if mapped { types::list_of(t) } else { t })
                })
                .collect(),
        );
    }
    let wf_name = n.workflow.clone().or_else(|| n.launch_plan.as_ref().map(|lp| doc.launch_plans.get(lp).map_or_else(|| lp.clone(), |d| d.workflow.clone())))?;
    let wf = doc.workflows.get(&wf_name)?;
    Some(workflow_inputs(ctx, wf))
}

fn node(ctx: &mut Ctx<'_>, wf: &WorkflowDef, n: &NodeDef, path: &str) -> Option<Node> {
    let nid = n.id.as_str();
    if nid.is_empty() || !nid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        ctx.problem(Some(nid), format!("{path}.id"), "node ids are letters, digits, `_` and `-`");
    }
    let kinds = [n.task.is_some(), n.map.is_some(), n.workflow.is_some(), n.launch_plan.is_some(), n.branch.is_some(), n.gate.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        ctx.problem(Some(nid), path, "a node needs exactly one of task, map, workflow, launch_plan, branch, gate");
        return None;
    }
    let expected = target_inputs(ctx, n);
    let mut upstream: BTreeSet<String> = n.after.iter().cloned().collect();
    let mut inputs = Vec::new();
    for (var, v) in &n.inputs {
        let field = format!("inputs.{var}");
        collect_refs(v, &mut upstream);
        let t = expected.as_ref().and_then(|e| e.get(var));
        if expected.is_some() && t.is_none() {
            ctx.problem(Some(nid), &field, "no such input");
            continue;
        }
        match binding(v, t) {
            Ok(b) => inputs.push(Binding { var: var.clone(), binding: Some(b) }),
            Err(e) => ctx.problem(Some(nid), &field, e),
        }
    }
    let target = if let Some(t) = &n.task {
        Target::TaskNode(TaskNode { reference: Some(core::task_node::Reference::ReferenceId(id(ResourceType::Task, t)?)), overrides: None })
    } else if let Some(m) = &n.map {
        let over: BTreeSet<String> = m.over.clone().map_or_else(|| n.inputs.keys().cloned().collect(), |o| o.into_iter().collect());
        for o in &over {
            if !n.inputs.contains_key(o) {
                ctx.problem(Some(nid), "map.over", format!("`{o}` is not bound in inputs"));
            }
        }
        let success = match (m.min_successes, m.min_success_ratio) {
            (Some(_), Some(_)) => {
                ctx.problem(Some(nid), "map", "give min_successes or min_success_ratio, not both");
                None
            }
            (Some(k), None) => Some(array_node::SuccessCriteria::MinSuccesses(k)),
            (None, Some(r)) => Some(array_node::SuccessCriteria::MinSuccessRatio(r)),
            (None, None) => None,
        };
        let sub = Node {
            id: format!("{nid}-item"),
            metadata: Some(NodeMetadata { name: m.task.clone(), ..Default::default() }),
            inputs: inputs.clone(),
            target: Some(Target::TaskNode(TaskNode { reference: Some(core::task_node::Reference::ReferenceId(id(ResourceType::Task, &m.task)?)), overrides: None })),
            ..Default::default()
        };
        Target::ArrayNode(Box::new(ArrayNode {
            node: Some(Box::new(sub)),
            parallelism_option: m.parallelism.map(array_node::ParallelismOption::Parallelism),
            success_criteria: success,
            is_original_sub_node_interface: Some(true),
            bound_inputs: n.inputs.keys().filter(|k| !over.contains(*k)).cloned().collect(),
            ..Default::default()
        }))
    } else if let Some(w) = &n.workflow {
        Target::WorkflowNode(WorkflowNode { reference: Some(core::workflow_node::Reference::SubWorkflowRef(id(ResourceType::Workflow, w)?)) })
    } else if let Some(lp) = &n.launch_plan {
        Target::WorkflowNode(WorkflowNode { reference: Some(core::workflow_node::Reference::LaunchplanRef(id(ResourceType::LaunchPlan, lp)?)) })
    } else if let Some(b) = &n.branch {
        if b.cases.is_empty() {
            ctx.problem(Some(nid), "branch.cases", "a branch needs at least one case");
            return None;
        }
        let mut blocks = Vec::new();
        let mut seen_vars = BTreeSet::new();
        for (i, c) in b.cases.iter().enumerate() {
            let field = format!("branch.cases[{i}]");
            let (cond, refs) = match parse_condition(&c.when) {
                Ok(x) => x,
                Err(e) => {
                    ctx.problem(Some(nid), format!("{field}.when"), e);
                    continue;
                }
            };
            for r in refs {
                if let Some(node) = &r.node {
                    upstream.insert(node.clone());
                }
                if seen_vars.insert(r.text()) {
                    inputs.push(Binding { var: r.text(), binding: Some(promise(&r)) });
                }
            }
            let then = node(ctx, wf, &c.then, &format!("{field}.then"));
            collect_node_refs(&c.then, &mut upstream);
            if let Some(then) = then {
                blocks.push(IfBlock { condition: Some(cond), then_node: Some(Box::new(then)) });
            }
        }
        let default = match (&b.otherwise, &b.else_fail) {
            (Some(_), Some(_)) => {
                ctx.problem(Some(nid), "branch", "give else or else_fail, not both");
                None
            }
            (Some(e), None) => {
                collect_node_refs(e, &mut upstream);
                node(ctx, wf, e, "branch.else").map(|e| if_else_block::Default::ElseNode(Box::new(e)))
            }
            (None, Some(msg)) => Some(if_else_block::Default::Error(core::Error { failed_node_id: nid.to_string(), message: msg.clone() })),
            (None, None) => None,
        };
        if blocks.is_empty() {
            return None;
        }
        let first = blocks.remove(0);
        Target::BranchNode(Box::new(BranchNode { if_else: Some(Box::new(IfElseBlock { case: Some(Box::new(first)), other: blocks, default })) }))
    } else {
        let g = n.gate.as_ref()?;
        let set = [g.sleep.is_some(), g.approve.is_some(), g.signal.is_some()].iter().filter(|x| **x).count();
        if set != 1 {
            ctx.problem(Some(nid), "gate", "a gate needs exactly one of sleep, approve, signal");
            return None;
        }
        let condition = if let Some(s) = &g.sleep {
            match duration(s) {
                Ok(d) => gate_node::Condition::Sleep(core::SleepCondition { duration: Some(d) }),
                Err(e) => {
                    ctx.problem(Some(nid), "gate.sleep", e);
                    return None;
                }
            }
        } else if let Some(a) = &g.approve {
            if n.inputs.len() != 1 {
                ctx.problem(Some(nid), "inputs", "an approve gate takes exactly one input: the value to approve");
            }
            gate_node::Condition::Approve(core::ApproveCondition { signal_id: a.clone() })
        } else {
            let t = ctx.parse_type(Some(nid), "gate.type", g.r#type.as_deref().unwrap_or("str"))?;
            gate_node::Condition::Signal(core::SignalCondition {
                signal_id: g.signal.clone().unwrap_or_default(),
                r#type: Some(t),
                output_variable_name: "value".into(),
            })
        };
        if g.r#type.is_some() && g.signal.is_none() {
            ctx.problem(Some(nid), "gate.type", "`type` applies only to signal gates");
        }
        Target::GateNode(GateNode { condition: Some(condition) })
    };
    let timeout = match &n.timeout {
        Some(v) => match duration(v) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.problem(Some(nid), "timeout", e);
                None
            }
        },
        None => None,
    };
    let mut metadata = NodeMetadata {
        name: n.task.clone().or_else(|| n.map.as_ref().map(|m| m.task.clone())).unwrap_or_else(|| nid.to_string()),
        timeout,
        retries: n.retries.map(|r| RetryStrategy { retries: r }),
        interruptible_value: n.interruptible.map(core::node_metadata::InterruptibleValue::Interruptible),
        ..Default::default()
    };
    match &n.cache {
        None => {}
        Some(Value::Bool(b)) => metadata.cacheable_value = Some(core::node_metadata::CacheableValue::Cacheable(*b)),
        Some(Value::Object(m)) => {
            metadata.cacheable_value = Some(core::node_metadata::CacheableValue::Cacheable(true));
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("version", Value::String(s)) => metadata.cache_version_value = Some(core::node_metadata::CacheVersionValue::CacheVersion(s.clone())),
                    ("serializable", Value::Bool(b)) => metadata.cache_serializable_value = Some(core::node_metadata::CacheSerializableValue::CacheSerializable(*b)),
                    _ => ctx.problem(Some(nid), format!("cache.{k}"), "cache takes `version` (a string) and `serializable` (a boolean)"),
                }
            }
        }
        Some(_) => ctx.problem(Some(nid), "cache", "cache is false, true, or {version, serializable}"),
    }
    upstream.remove(nid);
    upstream.remove("inputs");
    Some(Node {
        id: nid.to_string(),
        metadata: Some(metadata),
        inputs,
        upstream_node_ids: upstream.into_iter().collect(),
        output_aliases: Vec::new(),
        target: Some(target),
    })
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            if let Ok(Some(r)) = parse_reference(s) {
                if let Some(n) = r.node {
                    out.insert(n);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn collect_node_refs(n: &NodeDef, out: &mut BTreeSet<String>) {
    for v in n.inputs.values() {
        collect_refs(v, out);
    }
    if let Some(b) = &n.branch {
        for c in &b.cases {
            collect_node_refs(&c.then, out);
        }
    }
}

fn promise(r: &super::Reference) -> BindingData {
    BindingData {
        value: Some(binding_data::Value::Promise(OutputReference {
            node_id: r.node.clone().unwrap_or_default(),
            var: r.var.clone(),
            attr_path: r.path.clone(),
        })),
        union: None,
    }
}

fn has_ref(v: &Value) -> bool {
    match v {
        Value::String(s) => matches!(parse_reference(s), Ok(Some(_)) | Err(_)),
        Value::Array(a) => a.iter().any(has_ref),
        Value::Object(m) => m.values().any(has_ref),
        _ => false,
    }
}

fn unescape(v: &Value) -> Value {
    match v {
        Value::String(s) if s.trim_start().starts_with("$${") => Value::String(s.replacen("$${", "${", 1)),
        Value::Array(a) => Value::Array(a.iter().map(unescape).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), unescape(x))).collect()),
        o => o.clone(),
    }
}

/// A binding from a YAML value: references become promises, constants literals of the expected type.
fn binding(v: &Value, t: Option<&LiteralType>) -> Result<BindingData, String> {
    if let Value::String(s) = v {
        if let Some(r) = parse_reference(s)? {
            return Ok(promise(&r));
        }
    }
    if has_ref(v) {
        // A list or map holding references: bind element-wise.
        return match v {
            Value::Array(items) => {
                let el = t.and_then(types::element);
                let bindings = items.iter().map(|x| binding(x, el)).collect::<Result<Vec<_>, _>>()?;
                Ok(BindingData { value: Some(binding_data::Value::Collection(BindingDataCollection { bindings })), union: None })
            }
            Value::Object(m) => {
                let el = t.and_then(|t| match &t.r#type {
                    Some(Type::MapValueType(e)) => Some(&**e),
                    _ => None,
                });
                let mut bindings = BTreeMap::new();
                for (k, x) in m {
                    bindings.insert(k.clone(), binding(x, el)?);
                }
                Ok(BindingData { value: Some(binding_data::Value::Map(BindingDataMap { bindings })), union: None })
            }
            _ => Err("bad reference".into()),
        };
    }
    let v = unescape(v);
    let lit = match t {
        Some(t) => from_json(&v, t)?,
        None => {
            let guess = literal_guess(&v).ok_or("cannot tell this value's type")?;
            from_json(&v, &guess)?
        }
    };
    Ok(literal_binding(lit))
}

/// A literal as binding data (collections and maps element-wise, since bindings hold only scalars).
fn literal_binding(lit: Literal) -> BindingData {
    let value = match lit.value {
        Some(literal::Value::Scalar(s)) => Some(binding_data::Value::Scalar(*s)),
        Some(literal::Value::Collection(c)) => Some(binding_data::Value::Collection(BindingDataCollection {
            bindings: c.literals.into_iter().map(literal_binding).collect(),
        })),
        Some(literal::Value::Map(m)) => Some(binding_data::Value::Map(BindingDataMap {
            bindings: m.literals.into_iter().map(|(k, l)| (k, literal_binding(l))).collect(),
        })),
        Some(literal::Value::OffloadedMetadata(o)) => Some(binding_data::Value::OffloadedMetadata(o)),
        None => None,
    };
    BindingData { value, union: None }
}
