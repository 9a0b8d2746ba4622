//! YAML tasks → TaskTemplates: kinds, containers, pods and plugin settings.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use updraft_proto::core::{
    self as core, Container, DataLoadingConfig, K8sObjectMetadata, K8sPod, KeyValuePair,
    ResourceType, Resources, RetryStrategy, RuntimeMetadata, TaskMetadata, TaskTemplate,
    TypedInterface, resources::ResourceName, task_template,
};

use super::convert::{Ctx, duration, id, variable_map};
use super::plugins::to_struct;
use super::{ResourcesDef, TaskDef};

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
    (
        "sagemaker-hyperparameter-tuning-job",
        "sagemaker-hyperparameter-tuning-job",
    ),
    ("sagemaker-transform-job", "sagemaker-transform-job"),
    ("sagemaker-training-task", "sagemaker-training-task"),
    ("sagemaker-processing-task", "sagemaker-processing-task"),
    ("sagemaker-endpoint", "sagemaker-endpoint"),
    ("boto", "boto"),
];

pub(super) fn python_args(module: &str, function: &str, output_suffix: &str) -> Vec<String> {
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

pub(super) fn resources_proto(r: &ResourcesDef) -> Resources {
    let entries = super::plugins::resource_entries;
    let requests = entries(r);
    let limits = r
        .limits
        .as_deref()
        .map_or_else(|| requests.clone(), entries);
    Resources { requests, limits }
}

pub(super) fn task(ctx: &mut Ctx<'_>, name: &str, def: &TaskDef) -> Option<TaskTemplate> {
    let Some(&(_, task_type)) = KINDS.iter().find(|(k, _)| *k == def.r#type) else {
        let kinds: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        ctx.problem(
            None,
            "type",
            format!(
                "unknown task type `{}` (one of: {})",
                def.r#type,
                kinds.join(", ")
            ),
        );
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
        (
            "emr_serverless",
            def.emr_serverless.is_some(),
            &["emr-serverless"],
        ),
        (
            "sagemaker",
            def.sagemaker.is_some(),
            &[
                "sagemaker-training-job",
                "sagemaker-processing-job",
                "sagemaker-hyperparameter-tuning-job",
                "sagemaker-transform-job",
                "sagemaker-endpoint",
            ],
        ),
        (
            "sagemaker_job",
            def.sagemaker_job.is_some(),
            &["sagemaker-training-task", "sagemaker-processing-task"],
        ),
        ("boto", def.boto.is_some(), &["boto"]),
    ];
    for (block, present, kinds) in blocks {
        if present && !kinds.contains(&kind) {
            ctx.problem(
                None,
                block,
                format!(
                    "`{block}` settings apply only to {} tasks",
                    kinds.join(" / ")
                ),
            );
        }
        if !present
            && kinds.contains(&kind)
            && !matches!(block, "pytorch" | "tensorflow" | "mpi" | "spark" | "batch")
        {
            ctx.problem(
                None,
                block,
                format!("a {kind} task needs `{block}` settings"),
            );
        }
    }
    let image = def.image.clone().or_else(|| ctx.doc.image.clone());
    let python_based = matches!(
        kind,
        "python"
            | "pod"
            | "aws-batch"
            | "pytorch"
            | "tensorflow"
            | "mpi"
            | "spark"
            | "sagemaker-training-task"
            | "sagemaker-processing-task"
    ) || (kind == "emr-serverless"
        && (def.module.is_some() || def.command.is_some()));
    let mut custom: Option<Value> = None;
    let mut config = BTreeMap::new();
    let mut version = 0;
    let plugin_result: Result<(), String> = (|| {
        match kind {
            "aws-batch" => {
                let (c, platform) = def.batch.as_ref().map_or_else(
                    || (json!({"platformCapabilities": "EC2"}), "EC2".to_string()),
                    |b| b.custom(),
                );
                custom = Some(c);
                config.insert("platformCapabilities".to_string(), platform);
            }
            "pytorch" => {
                custom = Some(def.pytorch.as_ref().map_or_else(
                    || {
                        super::plugins::PyTorchDef {
                            master: None,
                            workers: None,
                            run_policy: None,
                            elastic: None,
                        }
                        .custom()
                    },
                    |p| p.custom(),
                )?);
                version = 1;
            }
            "tensorflow" => {
                custom = Some(def.tensorflow.as_ref().map_or_else(
                    || Ok(json!({"workerReplicas": {"replicas": 1, "resources": {}}})),
                    |p| p.custom(),
                )?);
                version = 1;
            }
            "mpi" => {
                custom = Some(def.mpi.as_ref().map_or_else(|| Ok(json!({"workerReplicas": {"replicas": 1, "resources": {}}, "launcherReplicas": {"replicas": 1, "resources": {}}, "slots": 1})), |p| p.custom())?);
                version = 1;
            }
            "spark" => {
                let d = super::plugins::SparkDef {
                    spark_conf: BTreeMap::new(),
                    hadoop_conf: BTreeMap::new(),
                    main_application_file: None,
                    main_class: None,
                    application_type: None,
                    executor_path: None,
                };
                custom = Some(def.spark.as_ref().unwrap_or(&d).custom()?);
            }
            "hive" => custom = def.hive.as_ref().map(|h| h.custom()),
            "athena" => custom = def.athena.as_ref().map(|a| a.custom()),
            "emr-serverless" => {
                custom = def
                    .emr_serverless
                    .as_ref()
                    .map(|e| e.custom())
                    .transpose()?
            }
            "boto" => custom = def.boto.as_ref().map(|b| b.custom()),
            "sagemaker-training-task" | "sagemaker-processing-task" => {
                custom = def.sagemaker_job.as_ref().map(|s| s.custom())
            }
            k if k.starts_with("sagemaker-") => {
                custom = def.sagemaker.as_ref().map(|s| s.custom()).transpose()?
            }
            _ => {}
        }
        Ok(())
    })();
    if let Err(e) = plugin_result {
        ctx.problem(None, def.r#type.replace('-', "_"), e);
    }
    let env: Vec<KeyValuePair> = def
        .env
        .iter()
        .map(|(k, v)| KeyValuePair {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    let resources = def.resources.as_ref().map(resources_proto);
    let container = |ctx: &mut Ctx<'_>,
                     args: Vec<String>,
                     command: Vec<String>,
                     data: Option<DataLoadingConfig>|
     -> Option<Container> {
        let Some(image) = image.clone() else {
            ctx.problem(
                None,
                "image",
                format!("a {kind} task needs an image (set `image` on the task or the file)"),
            );
            return None;
        };
        Some(Container {
            image,
            command,
            args,
            resources: resources.clone(),
            env: env.clone(),
            data_config: data,
            ..Default::default()
        })
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
                ctx.problem(
                    None,
                    "data.format",
                    format!("`{o}` is not json, yaml or proto"),
                );
                core::data_loading_config::LiteralMapFormat::Proto
            }
        };
        let dc = DataLoadingConfig {
            enabled: true,
            input_path: data
                .and_then(|d| d.input_path.clone())
                .unwrap_or_else(|| "/var/inputs".into()),
            output_path: data
                .and_then(|d| d.output_path.clone())
                .unwrap_or_else(|| "/var/outputs".into()),
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
            (Some(m), Some(f), None, None) => {
                python_args(m, f, if kind == "aws-batch" { "/0" } else { "" })
            }
            _ => {
                ctx.problem(
                    None,
                    "module",
                    format!("a {kind} task needs `module` and `function` (or `command`/`args`)"),
                );
                Vec::new()
            }
        };
        let command = def.command.clone().unwrap_or_default();
        let c = container(ctx, args, command, None);
        if kind == "pod" || def.pod.is_some() {
            let primary = def
                .pod
                .as_ref()
                .and_then(|p| p.primary_container.clone())
                .unwrap_or_else(|| "primary".into());
            let mut spec = def
                .pod
                .as_ref()
                .and_then(|p| p.spec.clone())
                .unwrap_or_else(|| json!({}));
            if !spec.is_object() {
                ctx.problem(
                    None,
                    "pod.spec",
                    "the pod spec must be a mapping (a V1PodSpec)",
                );
                spec = json!({});
            }
            if let Some(c) = &c {
                merge_primary(&mut spec, &primary, c);
            }
            config.insert("primary_container_name".into(), primary.clone());
            let meta = def.pod.as_ref().map(|p| K8sObjectMetadata {
                labels: p.labels.clone(),
                annotations: p.annotations.clone(),
            });
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
        ctx.problem(
            None,
            "outputs",
            "an echo task's outputs are its inputs: declare the same names and types",
        );
    }
    if (matches!(kind, "hive" | "athena" | "echo" | "boto")
        || kind.ends_with("-job")
        || kind == "sagemaker-endpoint")
        && (def.module.is_some() || def.command.is_some() || def.args.is_some())
    {
        ctx.problem(
            None,
            "module",
            format!("a {kind} task runs no container: drop module/function/command/args"),
        );
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
                ctx.problem(
                    None,
                    "cache.ignore_inputs",
                    format!("`{i}` is not an input"),
                );
            }
        }
        if cache.version.is_empty() {
            ctx.problem(None, "cache.version", "the cache version cannot be empty");
        }
    }
    let metadata = TaskMetadata {
        discoverable: def.cache.is_some(),
        runtime: Some(RuntimeMetadata {
            r#type: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            flavor: "updraft-yaml".into(),
        }),
        timeout,
        retries: Some(RetryStrategy {
            retries: def.retries.unwrap_or(0),
        }),
        discovery_version: def
            .cache
            .as_ref()
            .map(|c| c.version.clone())
            .unwrap_or_default(),
        interruptible_value: def
            .interruptible
            .map(core::task_metadata::InterruptibleValue::Interruptible),
        cache_serializable: def.cache.as_ref().is_some_and(|c| c.serializable),
        pod_template_name: def.pod_template_name.clone().unwrap_or_default(),
        cache_ignore_input_vars: def
            .cache
            .as_ref()
            .map(|c| c.ignore_inputs.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    Some(TaskTemplate {
        id: id(ResourceType::Task, name),
        r#type: task_type.to_string(),
        metadata: Some(metadata),
        interface: Some(TypedInterface {
            inputs: variable_map(&inputs),
            outputs: variable_map(&outputs),
        }),
        custom: custom.as_ref().map(to_struct),
        target,
        task_type_version: version,
        config: config.into_iter().collect(),
        ..Default::default()
    })
}

/// Puts the task's image, args, env and resources on the pod spec's primary container (added if absent),
/// keeping what the spec already sets.
pub(super) fn merge_primary(spec: &mut Value, primary: &str, c: &Container) {
    let Some(obj) = spec.as_object_mut() else {
        return;
    };
    let containers = obj.entry("containers").or_insert_with(|| json!([]));
    if !containers.is_array() {
        *containers = json!([]);
    }
    let list = containers.as_array_mut().expect("array checked above");
    let pos = list
        .iter()
        .position(|x| x.get("name").and_then(Value::as_str) == Some(primary));
    let entry = match pos {
        Some(i) => &mut list[i],
        None => {
            list.push(json!({"name": primary}));
            list.last_mut().expect("just pushed")
        }
    };
    let Some(e) = entry.as_object_mut() else {
        return;
    };
    e.entry("image").or_insert_with(|| json!(c.image));
    if !c.args.is_empty() {
        e.entry("args").or_insert_with(|| json!(c.args));
    }
    if !c.command.is_empty() {
        e.entry("command").or_insert_with(|| json!(c.command));
    }
    if !c.env.is_empty() {
        let env: Vec<Value> = c
            .env
            .iter()
            .map(|kv| json!({"name": kv.key, "value": kv.value}))
            .collect();
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
        e.entry("resources")
            .or_insert_with(|| json!({"requests": pick(&r.requests), "limits": pick(&r.limits)}));
    }
}
