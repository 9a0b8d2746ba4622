//! Compiling tasks (plugin, target and config checks) and launch plans (defaults and fixed inputs).

use std::collections::{BTreeMap, BTreeSet};

use prost_types::{Struct, Value, value::Kind};
use updraft_proto::admin::LaunchPlan;
use updraft_proto::core::{TaskTemplate, parameter, task_template::Target};

use super::{CompiledLaunchPlan, CompiledTask, Interface, interface_of};
use crate::error::Problem;
use crate::package::{Origin, Package};
use crate::plugins::{PluginKind, TASK_TYPES, plugin_for};
use crate::types;

struct Report<'a> {
    origin: &'a Origin,
    entity: String,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn add(&mut self, field: &str, reason: impl Into<String>) {
        self.problems.push(Problem {
            file: self.origin.display(),
            entity: self.entity.clone(),
            node: None,
            field: field.to_string(),
            reason: reason.into(),
        });
    }
}

fn custom_str<'a>(custom: Option<&'a Struct>, path: &[&str]) -> Option<&'a str> {
    let mut fields = &custom?.fields;
    let (last, init) = path.split_last()?;
    for key in init {
        match fields.get(*key)?.kind.as_ref()? {
            Kind::StructValue(s) => fields = &s.fields,
            _ => return None,
        }
    }
    match fields.get(*last)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn custom_has(custom: Option<&Struct>, key: &str) -> bool {
    custom
        .and_then(|c| c.fields.get(key))
        .is_some_and(|v: &Value| !matches!(v.kind, None | Some(Kind::NullValue(_))))
}

/// Checks a task's type, target and plugin config.
pub(super) fn compile_task(
    name: &str,
    t: &TaskTemplate,
    origin: &Origin,
) -> Result<CompiledTask, Vec<Problem>> {
    let mut r = Report {
        origin,
        entity: format!("task {name}"),
        problems: Vec::new(),
    };
    let interface = interface_of(t.interface.as_ref(), origin, &r.entity, &mut r.problems);
    let pod = matches!(t.target, Some(Target::K8sPod(_)));
    let plugin = plugin_for(&t.r#type, pod);
    let custom = t.custom.as_ref();
    match plugin {
        None => {
            let known: Vec<&str> = TASK_TYPES.iter().map(|(t, _)| *t).collect();
            r.add(
                "type",
                format!(
                    "unknown task type `{}`: no plugin serves it (known: {})",
                    t.r#type,
                    known.join(", ")
                ),
            );
        }
        Some(kind) => check_target(&mut r, t, kind, custom),
    }
    let meta = t.metadata.clone().unwrap_or_default();
    if meta.discoverable && meta.discovery_version.is_empty() {
        r.add(
            "metadata.discovery_version",
            "a cached task needs a cache version",
        );
    }
    for var in &meta.cache_ignore_input_vars {
        if !interface.inputs.contains_key(var) {
            r.add(
                "metadata.cache_ignore_input_vars",
                format!("`{var}` is not an input of the task"),
            );
        }
    }
    if let Some(timeout) = &meta.timeout
        && (timeout.seconds < 0 || timeout.nanos < 0)
    {
        r.add("metadata.timeout", "a timeout cannot be negative");
    }
    match plugin {
        Some(plugin) if r.problems.is_empty() => Ok(CompiledTask {
            name: name.to_string(),
            template: t.clone(),
            plugin,
            interface,
        }),
        _ => Err(r.problems),
    }
}

fn check_target(r: &mut Report<'_>, t: &TaskTemplate, kind: PluginKind, custom: Option<&Struct>) {
    let container_image = match &t.target {
        Some(Target::Container(c)) => Some(c.image.as_str()),
        _ => None,
    };
    match kind {
        PluginKind::Container
        | PluginKind::TensorFlow
        | PluginKind::Mpi
        | PluginKind::Spark
        | PluginKind::Batch => match &t.target {
            Some(Target::Container(c)) => {
                if c.image.is_empty() {
                    r.add("container.image", "the container has no image");
                }
                if c.command.is_empty() && c.args.is_empty() {
                    r.add(
                        "container.args",
                        "the container has neither command nor args",
                    );
                }
            }
            Some(Target::K8sPod(_)) if kind != PluginKind::Batch => {}
            _ => r.add("target", format!("a {kind} task needs a container target")),
        },
        PluginKind::Pod | PluginKind::PyTorch => match &t.target {
            Some(Target::K8sPod(p)) => {
                if p.pod_spec.is_none() {
                    r.add("k8s_pod.pod_spec", "the pod target has no pod spec");
                }
            }
            Some(Target::Container(_)) if kind == PluginKind::PyTorch => {
                if container_image.is_some_and(str::is_empty) {
                    r.add("container.image", "the container has no image");
                }
            }
            _ => r.add("target", format!("a {kind} task needs a k8s_pod target")),
        },
        PluginKind::Hive => {
            let has_sql = matches!(&t.target, Some(Target::Sql(s)) if !s.statement.is_empty());
            if custom_str(custom, &["query", "query"]).is_none()
                && !custom_has(custom, "queryCollection")
                && !has_sql
            {
                r.add("custom.query.query", "a hive task needs a query");
            }
        }
        PluginKind::Athena => {
            if custom_str(custom, &["statement"]).is_none() {
                r.add(
                    "custom.statement",
                    "an athena (presto) task needs a statement",
                );
            }
        }
        PluginKind::EmrServerless => {
            if custom_str(custom, &["execution_role_arn"]).is_none() {
                r.add(
                    "custom.execution_role_arn",
                    "an emr_serverless task needs an execution role ARN",
                );
            }
            if !custom_has(custom, "spark_job_driver")
                && !custom_has(custom, "hive_job_driver")
                && container_image.is_none()
            {
                r.add(
                    "custom",
                    "an emr_serverless task needs spark_job_driver, hive_job_driver, or a container (Pythonic mode)",
                );
            }
        }
        PluginKind::SageMaker => match t.r#type.as_str() {
            "boto" => {
                for key in ["service", "method"] {
                    if custom_str(custom, &[key]).is_none() {
                        r.add(
                            &format!("custom.{key}"),
                            format!("a boto task needs `{key}`"),
                        );
                    }
                }
            }
            "sagemaker-training-task" | "sagemaker-processing-task" => {
                if custom_str(custom, &["execution_role_arn"]).is_none() {
                    r.add(
                        "custom.execution_role_arn",
                        "a Pythonic SageMaker task needs an execution role ARN",
                    );
                }
                if container_image.is_none() {
                    r.add(
                        "target",
                        "a Pythonic SageMaker task needs a container target",
                    );
                }
            }
            ty if ty.starts_with("sagemaker-") => {
                if !custom_has(custom, "config") {
                    r.add(
                        "custom.config",
                        format!("a {ty} task needs `config` (the boto3 request)"),
                    );
                }
            }
            _ => {
                if custom.is_none() {
                    r.add("custom", "a SageMaker task needs its job configuration");
                }
            }
        },
        PluginKind::Echo => {}
    }
}

/// Checks a launch plan against its workflow's interface and resolves defaults and fixed inputs.
pub(super) fn compile_launch_plan(
    pkg: &Package,
    name: &str,
    lp: &LaunchPlan,
    origin: &Origin,
) -> Result<CompiledLaunchPlan, Vec<Problem>> {
    let mut r = Report {
        origin,
        entity: format!("launch plan {name}"),
        problems: Vec::new(),
    };
    let spec = lp.spec.clone().unwrap_or_default();
    let wf_name = spec
        .workflow_id
        .as_ref()
        .map(|i| i.name.clone())
        .unwrap_or_default();
    let Some(wf) = pkg.workflows.get(&wf_name) else {
        r.add(
            "spec.workflow_id",
            if wf_name.is_empty() {
                "the launch plan names no workflow".to_string()
            } else {
                format!("workflow `{wf_name}` is not in the package")
            },
        );
        return Err(r.problems);
    };
    let mut scratch = Vec::new();
    let wf_iface = interface_of(wf.template.interface.as_ref(), &wf.origin, "", &mut scratch);
    let mut defaults = BTreeMap::new();
    let mut fixed = BTreeMap::new();
    let mut required = BTreeSet::new();
    let mut mentioned = BTreeSet::new();
    for (var, param) in spec.default_inputs.iter().flat_map(|d| &d.parameters) {
        mentioned.insert(var.clone());
        let field = format!("spec.default_inputs.{var}");
        let Some(expected) = wf_iface.inputs.get(var) else {
            r.add(&field, format!("workflow `{wf_name}` has no input `{var}`"));
            continue;
        };
        match &param.behavior {
            Some(parameter::Behavior::Default(lit)) => {
                check_literal(&mut r, &field, lit, expected);
                defaults.insert(var.clone(), lit.clone());
            }
            Some(parameter::Behavior::Required(true)) | None => {
                required.insert(var.clone());
            }
            Some(parameter::Behavior::Required(false)) => {
                if !types::admits_none(expected) {
                    required.insert(var.clone());
                }
            }
            Some(_) => r.add(&field, "artifact inputs are not supported"),
        }
    }
    for (var, lit) in spec.fixed_inputs.iter().flat_map(|f| &f.literals) {
        let field = format!("spec.fixed_inputs.{var}");
        let Some(expected) = wf_iface.inputs.get(var) else {
            r.add(&field, format!("workflow `{wf_name}` has no input `{var}`"));
            continue;
        };
        check_literal(&mut r, &field, lit, expected);
        required.remove(var);
        defaults.remove(var);
        fixed.insert(var.clone(), lit.clone());
    }
    for (var, t) in &wf_iface.inputs {
        if !mentioned.contains(var) && !fixed.contains_key(var) && !types::admits_none(t) {
            required.insert(var.clone());
        }
    }
    let interface = Interface {
        inputs: wf_iface
            .inputs
            .iter()
            .filter(|(k, _)| !fixed.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        outputs: wf_iface.outputs,
    };
    if !r.problems.is_empty() {
        return Err(r.problems);
    }
    Ok(CompiledLaunchPlan {
        name: name.to_string(),
        workflow: wf_name,
        interface,
        defaults,
        fixed,
        required,
    })
}

fn check_literal(
    r: &mut Report<'_>,
    field: &str,
    lit: &updraft_proto::core::Literal,
    expected: &updraft_proto::core::LiteralType,
) {
    if !types::literal_fits(lit, expected) {
        r.add(field, types::mismatch(expected, lit));
    }
}
