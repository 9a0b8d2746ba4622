//! What an `aws-batch` task attempt becomes, without calling AWS: the job definition it runs under
//! (reused by a content hash of what a definition fixes) and the `SubmitJob` request, as Flyte's AWS
//! Batch plugin makes them.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use updraft_connector::{AttemptPaths, Problem};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::TaskLaunch;
use updraft_engine::literal::struct_json;
use updraft_engine::template::render_args;
use updraft_proto::core::resources::ResourceName;
use updraft_proto::core::task_template::Target;
use updraft_settings::BatchSettings;

/// The container config keys that name a job queue (Flyte's `dynamic_queue`, `child_queue` and
/// `primary_queue`, in that order of preference).
const QUEUE_KEYS: &[&str] = &["dynamic_queue", "child_queue", "primary_queue"];

/// The job definition an attempt runs under: what a definition fixes (image, role, platform), and a
/// name made from them, so every task with the same three shares one definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// `updraft-<image repository>-<hash>`, at most 128 characters.
    pub name: String,
    /// The container image.
    pub image: String,
    /// The IAM role the job runs as.
    pub job_role_arn: Option<String>,
    /// `EC2` or `FARGATE`.
    pub platform: String,
    /// The IAM role Batch starts the job with (`batch.executionRoleArn`: it reads the secrets).
    pub execution_role_arn: Option<String>,
    /// The task's Secrets Manager secrets as the container's variables, `(variable, valueFrom)`
    /// (`<secret ARN>[:<JSON key>::<version id>]`), sorted by variable; set at start, once the secrets'
    /// ARNs are known (see [`Definition::with_secrets`]).
    pub secrets: Vec<(String, String)>,
}

impl Definition {
    /// This definition with `secrets` (`(variable, valueFrom)`), named anew: a definition fixes its
    /// secrets, so tasks share one only when they ask for the same.
    pub fn with_secrets(self, mut secrets: Vec<(String, String)>) -> Self {
        secrets.sort();
        secrets.dedup();
        named(Definition { secrets, ..self })
    }
}

/// A `SubmitJob` request, before the job definition's ARN is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Submit {
    /// The job's name: the attempt's deterministic name (what a repeated start looks for).
    pub job_name: String,
    /// The job queue.
    pub job_queue: String,
    /// The container's command: the task's command and arguments, rendered.
    pub command: Vec<String>,
    /// The container's environment, sorted by name.
    pub environment: Vec<(String, String)>,
    /// `VCPU`, `MEMORY` (MiB) and `GPU` requirements, from the task's resources.
    pub resources: Vec<(&'static str, String)>,
    /// `AWSBatchConfig.parameters`.
    pub parameters: BTreeMap<String, String>,
    /// `AWSBatchConfig.tags`, with the attempt's own.
    pub tags: BTreeMap<String, String>,
    /// `AWSBatchConfig.propagateTags`.
    pub propagate_tags: Option<bool>,
    /// `AWSBatchConfig.schedulingPriority`.
    pub scheduling_priority: Option<i32>,
    /// `AWSBatchConfig.retryStrategy.attempts` (Batch's own retries of one attempt).
    pub retry_attempts: Option<i32>,
    /// `AWSBatchConfig.timeout.attemptDurationSeconds`.
    pub timeout_seconds: Option<i32>,
    /// An array job's size (its children run the same command, each its own element).
    pub array_size: Option<u32>,
}

/// Everything an attempt needs from AWS Batch.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The job definition.
    pub definition: Definition,
    /// The request.
    pub submit: Submit,
    /// Where the task writes its outcome (`outputs.pb`, `error.pb`): flytekit's AWS Batch tasks write
    /// under `{{.outputPrefix}}/0`, as the element of an array of one; a task whose arguments pass the
    /// output prefix itself, there. For an element of an array job, its child's.
    pub outcome_prefix: String,
    /// For an element of an array job: its index, the child `<array job id>:<index>` its attempt is.
    pub child: Option<u32>,
}

/// flytekit's legacy map-task resolver: with `pyflyte-map-execute`, it runs element
/// `$BATCH_JOB_ARRAY_INDEX_VAR_NAME` of the shared inputs and writes under `<output prefix>/<index>`.
pub const MAP_RESOLVER: &str = "flytekit.core.legacy_map_task.MapTaskResolver";

/// The arguments of a flytekit Batch task mapped over an array (its `pyflyte-execute … --output-prefix
/// {{.outputPrefix}}/0 … --resolver R -- <R's args>`), as the element runner: `pyflyte-map-execute …
/// --output-prefix {{.outputPrefix}} … --resolver` [`MAP_RESOLVER`] `-- vars '' resolver R <R's args>`,
/// so each element (a child of one array job, or a retry on its own) reads its element of the shared
/// inputs and writes under `{{.outputPrefix}}/<index>`, as Flyte's AWS Batch array plugin runs them.
/// None for arguments of another shape.
pub fn as_map_args(args: &[String]) -> Option<Vec<String>> {
    if args.first().map(String::as_str) != Some("pyflyte-execute") {
        return None;
    }
    let split = args.iter().position(|a| a == "--")?;
    let (head, tail) = (&args[..split], &args[split + 1..]);
    let mut out = vec!["pyflyte-map-execute".to_string()];
    let mut resolver = None;
    let mut i = 1;
    while i < head.len() {
        let a = &head[i];
        let value = head.get(i + 1);
        match (a.as_str(), value) {
            ("--output-prefix", Some(v)) => {
                out.push(a.clone());
                out.push(v.strip_suffix("/0").unwrap_or(v).to_string());
                i += 2;
            }
            ("--resolver", Some(v)) => {
                resolver = Some(v.clone());
                out.push(a.clone());
                out.push(MAP_RESOLVER.into());
                i += 2;
            }
            _ => {
                out.push(a.clone());
                i += 1;
            }
        }
    }
    out.push("--".into());
    out.extend(["vars".into(), String::new(), "resolver".into(), resolver?]);
    out.extend(tail.iter().cloned());
    Some(out)
}

fn problem(field: &str, reason: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The job of `launch`'s attempt of `task`, its data under `paths`.
pub fn spec(
    task: &CompiledTask,
    launch: &TaskLaunch,
    paths: &AttemptPaths,
    settings: &BatchSettings,
) -> Result<JobSpec, Vec<Problem>> {
    let t = &task.template;
    let Some(Target::Container(c)) = &t.target else {
        return Err(vec![problem(
            "target",
            "an aws-batch task needs a container target",
        )]);
    };
    let mut problems = Vec::new();
    if c.image.trim().is_empty() {
        problems.push(problem(
            "container.image",
            "empty: a Batch job needs an image",
        ));
    }
    let config = |k: &str| {
        c.config
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| kv.value.clone())
    };
    let queue = QUEUE_KEYS
        .iter()
        .find_map(|k| config(k))
        .or_else(|| settings.job_queue.clone());
    if queue.is_none() {
        problems.push(problem(
            "batch.jobQueue",
            "no job queue: set batch.jobQueue in the settings (or the task container's config \
             `dynamic_queue`)",
        ));
    }
    if settings.job_role_arn.is_none() {
        problems.push(problem(
            "batch.jobRoleArn",
            "no job role: set batch.jobRoleArn in the settings (the role the job's container \
             reads and writes the task's data in S3 with)",
        ));
    }
    // Secrets reach a Batch container as variables only (the job definition's `secrets`), read by Batch
    // with the execution role.
    let secrets = updraft_connector::secrets::requests(t);
    problems.extend(updraft_connector::secrets::file_paths_refused(
        t,
        "an AWS Batch job",
    ));
    if !secrets.is_empty() && settings.execution_role_arn.is_none() {
        problems.push(problem(
            "batch.executionRoleArn",
            "the task asks for secrets: set batch.executionRoleArn in the settings (the role Batch \
             reads them from Secrets Manager with)",
        ));
    }
    let custom = t.custom.as_ref().map(struct_json).unwrap_or(Value::Null);
    let platform = match custom["platformCapabilities"]
        .as_str()
        .or_else(|| t.config.get("platformCapabilities").map(String::as_str))
    {
        None | Some("") => "EC2".to_string(),
        Some(p @ ("EC2" | "FARGATE")) => p.to_string(),
        Some(p) => {
            problems.push(problem(
                "custom.platformCapabilities",
                format!("`{p}` is neither EC2 nor FARGATE"),
            ));
            "EC2".into()
        }
    };
    let strings = |field: &str, problems: &mut Vec<Problem>| -> BTreeMap<String, String> {
        match &custom[field] {
            Value::Null => BTreeMap::new(),
            Value::Object(m) => m
                .iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    other => {
                        problems.push(problem(
                            &format!("custom.{field}.{k}"),
                            format!("not a string: {other}"),
                        ));
                        None
                    }
                })
                .collect(),
            other => {
                problems.push(problem(
                    &format!("custom.{field}"),
                    format!("not a mapping: {other}"),
                ));
                BTreeMap::new()
            }
        }
    };
    let parameters = strings("parameters", &mut problems);
    let mut tags = strings("tags", &mut problems);
    let whole = |v: &Value, field: &str, problems: &mut Vec<Problem>| -> Option<i32> {
        match v {
            Value::Null => None,
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < i32::MAX as f64 => Some(f as i32),
                _ => {
                    problems.push(problem(field, format!("not a whole number: {n}")));
                    None
                }
            },
            other => {
                problems.push(problem(field, format!("not a number: {other}")));
                None
            }
        }
    };
    let scheduling_priority = whole(
        &custom["schedulingPriority"],
        "custom.schedulingPriority",
        &mut problems,
    );
    let retry_attempts = whole(
        &custom["retryStrategy"]["attempts"],
        "custom.retryStrategy.attempts",
        &mut problems,
    );
    let timeout_seconds = whole(
        &custom["timeout"]["attemptDurationSeconds"],
        "custom.timeout.attemptDurationSeconds",
        &mut problems,
    );
    let propagate_tags = match &custom["propagateTags"] {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        other => {
            problems.push(problem(
                "custom.propagateTags",
                format!("not true or false: {other}"),
            ));
            None
        }
    };
    // An element of a flytekit map task runs the task as a map element; the first attempt of an
    // array of more than one is a child of one array job, whose data live at the array's own paths.
    let map_args = match (launch.index, launch.array_size) {
        (Some(_), Some(_)) => as_map_args(&c.args),
        _ => None,
    };
    let array_size = match (launch.index, launch.array_size) {
        (Some(_), Some(n)) if n > 1 && launch.attempt == 0 && map_args.is_some() => Some(n),
        _ => None,
    };
    let array_paths = array_size.map(|_| {
        let mut whole = launch.clone();
        whole.index = None;
        AttemptPaths::under(&paths.base, &whole)
    });
    let job_paths = array_paths.as_ref().unwrap_or(paths);
    let mut vars = job_paths.vars(launch, "");
    // The array's children read the inputs the runtime wrote for this element (every element's are
    // the same: the whole lists).
    vars.input = &paths.input;
    let mut command = Vec::new();
    for (field, args) in [
        ("container.command", &c.command),
        ("container.args", map_args.as_ref().unwrap_or(&c.args)),
    ] {
        match render_args(args, &vars) {
            Ok(a) => command.extend(a),
            Err(e) => problems.push(problem(field, e.to_string())),
        }
    }
    let resources = resources(c.resources.as_ref(), &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut env: BTreeMap<String, String> = c
        .env
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    env.extend(launch.flyte_env("updraft", "development"));
    if array_size.is_some() {
        // Each child finds its element in the variable Batch sets (Flyte's array plugin's way).
        env.remove("FLYTE_K8S_ARRAY_INDEX");
        env.insert(
            "BATCH_JOB_ARRAY_INDEX_VAR_NAME".into(),
            "AWS_BATCH_JOB_ARRAY_INDEX".into(),
        );
    }
    if launch.index.is_none() {
        // A single task is an array of one to Flyte's plugin, whose jobs find their index here.
        env.insert(
            "BATCH_JOB_ARRAY_INDEX_VAR_NAME".into(),
            "FAKE_JOB_ARRAY_INDEX".into(),
        );
        env.insert("FAKE_JOB_ARRAY_INDEX".into(), "0".into());
    }
    // flytekit's Batch tasks write their outcome under `{{.outputPrefix}}/0` (an array of one to Flyte);
    // tasks that pass the output prefix itself write there.
    let base = job_paths.output_prefix.trim_end_matches('/');
    let element = format!("{base}/0");
    let outcome_prefix = match (map_args.is_some(), launch.index) {
        // A map element writes under `<output prefix>/<index>`.
        (true, Some(i)) => format!("{base}/{i}"),
        _ if command.iter().any(|a| a == &element) => element,
        _ => base.to_string(),
    };
    tags.insert("updraft:execution".into(), launch.execution.clone());
    tags.insert("updraft:node".into(), launch.node_id.clone());
    let definition = named(Definition {
        name: String::new(),
        image: c.image.clone(),
        job_role_arn: settings.job_role_arn.clone(),
        platform,
        execution_role_arn: if secrets.is_empty() {
            None
        } else {
            settings.execution_role_arn.clone()
        },
        secrets: Vec::new(),
    });
    // An array job is named for the whole array's attempt, so every element's start finds it.
    let name = match array_size {
        Some(_) => updraft_engine::exec::dns_name(&format!(
            "{}-{}-array-{}",
            launch.execution, launch.node_id, launch.attempt
        )),
        None => launch.name.clone(),
    };
    Ok(JobSpec {
        definition,
        submit: Submit {
            job_name: job_name(&name),
            job_queue: queue.unwrap_or_default(),
            command,
            environment: env.into_iter().collect(),
            resources,
            parameters,
            tags,
            propagate_tags,
            scheduling_priority,
            retry_attempts,
            timeout_seconds,
            array_size,
        },
        outcome_prefix,
        child: array_size.and(launch.index),
    })
}

/// A Batch job name (letters, digits, hyphens and underscores, at most 128) from an attempt's name.
pub fn job_name(attempt: &str) -> String {
    safe_name(attempt, 128)
}

fn safe_name(text: &str, max: usize) -> String {
    let safe: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if safe.len() <= max {
        return safe;
    }
    let hash = hex(&Sha256::digest(text.as_bytes()))[..12].to_string();
    format!("{}-{hash}", &safe[..max - 13])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The definition of `image` run as `role` on `platform`: named by the repository of the image and a
/// hash of the three (Flyte's definition cache key).
pub fn definition(image: &str, role: Option<String>, platform: String) -> Definition {
    named(Definition {
        name: String::new(),
        image: image.into(),
        job_role_arn: role,
        platform,
        execution_role_arn: None,
        secrets: Vec::new(),
    })
}

/// `d` named by the repository of its image and a hash of what it fixes (image, role and platform,
/// then the execution role and secrets when it has them, so a definition without stays as it was).
fn named(d: Definition) -> Definition {
    let mut h = Sha256::new();
    let mut parts = vec![
        d.image.as_str(),
        d.job_role_arn.as_deref().unwrap_or(""),
        &d.platform,
    ];
    if d.execution_role_arn.is_some() || !d.secrets.is_empty() {
        parts.push(d.execution_role_arn.as_deref().unwrap_or(""));
        for (k, v) in &d.secrets {
            parts.extend([k.as_str(), v.as_str()]);
        }
    }
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hash = hex(&h.finalize())[..16].to_string();
    let image = d.image.as_str();
    let repo = image
        .rsplit('/')
        .next()
        .unwrap_or(image)
        .split(['@', ':'])
        .next()
        .unwrap_or("");
    let repo = safe_name(repo, 100);
    Definition {
        name: format!("updraft-{repo}-{hash}"),
        ..d
    }
}

/// Batch's resource requirements from a task's resources (limits over requests): vCPUs as a decimal
/// (Kubernetes' `500m` is `0.5`), memory in MiB, GPUs as a count.
fn resources(
    r: Option<&updraft_proto::core::Resources>,
    problems: &mut Vec<Problem>,
) -> Vec<(&'static str, String)> {
    let Some(r) = r else {
        return Vec::new();
    };
    let mut chosen: BTreeMap<i32, String> = BTreeMap::new();
    for e in r.requests.iter().chain(r.limits.iter()) {
        chosen.insert(e.name, e.value.clone());
    }
    let mut out = Vec::new();
    for (name, value) in chosen {
        match ResourceName::try_from(name) {
            Ok(ResourceName::Cpu) => match quantity(&value) {
                Some(v) if v > 0.0 => out.push(("VCPU", trim_float(v))),
                _ => problems.push(problem(
                    "container.resources.cpu",
                    format!("`{value}` is not a CPU quantity"),
                )),
            },
            Ok(ResourceName::Memory) => match quantity(&value) {
                Some(v) if v > 0.0 => {
                    out.push(("MEMORY", ((v / 1_048_576.0).ceil() as u64).to_string()))
                }
                _ => problems.push(problem(
                    "container.resources.memory",
                    format!("`{value}` is not a memory quantity"),
                )),
            },
            Ok(ResourceName::Gpu) => match quantity(&value) {
                Some(v) if v >= 0.0 && v.fract() == 0.0 => {
                    if v > 0.0 {
                        out.push(("GPU", (v as u64).to_string()));
                    }
                }
                _ => problems.push(problem(
                    "container.resources.gpu",
                    format!("`{value}` is not a whole number of GPUs"),
                )),
            },
            _ => {}
        }
    }
    out.sort();
    out
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A Kubernetes quantity (`2`, `500m`, `1.5Gi`, `512M`, `1e3`) as a number.
pub fn quantity(text: &str) -> Option<f64> {
    let t = text.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (s, f) in suffixes {
        if let Some(n) = t.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|n| n * f);
        }
    }
    t.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("1Gi"), Some(1_073_741_824.0));
        assert_eq!(quantity("512M"), Some(512e6));
        assert_eq!(quantity("x"), None);
        assert_eq!(trim_float(0.5), "0.5");
        assert_eq!(trim_float(2.0), "2");
    }

    #[test]
    fn definitions_are_shared_by_image_role_and_platform() {
        let a = definition("ghcr.io/org/train:1", Some("r".into()), "EC2".into());
        let b = definition("ghcr.io/org/train:1", Some("r".into()), "EC2".into());
        let c = definition("ghcr.io/org/train:2", Some("r".into()), "EC2".into());
        assert_eq!(a, b);
        assert_ne!(a.name, c.name);
        assert!(a.name.starts_with("updraft-train-"), "{}", a.name);
        assert_eq!(a.name.len(), "updraft-train-".len() + 16);
    }

    fn task(args: &[&str]) -> CompiledTask {
        use updraft_proto::core::{Container, TaskTemplate};
        CompiledTask {
            name: "t".into(),
            template: TaskTemplate {
                r#type: "aws-batch".into(),
                target: Some(Target::Container(Container {
                    image: "img".into(),
                    args: args.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            plugin: updraft_engine::plugins::PluginKind::Batch,
            interface: Default::default(),
        }
    }

    #[test]
    fn the_outcome_is_where_the_arguments_send_it() {
        let settings = BatchSettings {
            job_queue: Some("q".into()),
            job_role_arn: Some("r".into()),
            execution_role_arn: None,
        };
        let t = task(&["run", "{{.outputPrefix}}/0"]);
        let launch = updraft_connector::plan_launch(&t, Default::default(), None);
        let paths = AttemptPaths::under("s3://b/e", &launch);
        let s = spec(&t, &launch, &paths, &settings).unwrap();
        assert_eq!(s.outcome_prefix, "s3://b/e/n0/0/out/0");
        assert_eq!(s.submit.command, ["run", "s3://b/e/n0/0/out/0"]);
        let t = task(&["run", "{{.outputPrefix}}"]);
        let s = spec(&t, &launch, &paths, &settings).unwrap();
        assert_eq!(s.outcome_prefix, "s3://b/e/n0/0/out");
    }

    const FLYTEKIT_ARGS: &[&str] = &[
        "pyflyte-execute",
        "--inputs",
        "{{.input}}",
        "--output-prefix",
        "{{.outputPrefix}}/0",
        "--raw-output-data-prefix",
        "{{.rawOutputDataPrefix}}",
        "--resolver",
        "flytekit.core.python_auto_container.default_task_resolver",
        "--",
        "task-module",
        "m",
        "task-name",
        "t",
    ];

    #[test]
    fn a_mapped_flytekit_task_runs_as_a_map_element() {
        let args: Vec<String> = FLYTEKIT_ARGS.iter().map(|s| s.to_string()).collect();
        let out = as_map_args(&args).unwrap();
        assert_eq!(
            out,
            [
                "pyflyte-map-execute",
                "--inputs",
                "{{.input}}",
                "--output-prefix",
                "{{.outputPrefix}}",
                "--raw-output-data-prefix",
                "{{.rawOutputDataPrefix}}",
                "--resolver",
                MAP_RESOLVER,
                "--",
                "vars",
                "",
                "resolver",
                "flytekit.core.python_auto_container.default_task_resolver",
                "task-module",
                "m",
                "task-name",
                "t",
            ]
        );
        assert_eq!(as_map_args(&["run".to_string()]), None);
    }

    #[test]
    fn an_arrays_first_attempt_is_one_array_job_and_a_retry_a_job_of_its_own() {
        let settings = BatchSettings {
            job_queue: Some("q".into()),
            job_role_arn: Some("r".into()),
            execution_role_arn: None,
        };
        let t = task(FLYTEKIT_ARGS);
        let mut launch = updraft_connector::plan_launch(&t, Default::default(), Some(2));
        launch.array_size = Some(4);
        let paths = AttemptPaths::under("s3://b/e", &launch);
        let s = spec(&t, &launch, &paths, &settings).unwrap();
        assert_eq!(s.submit.array_size, Some(4));
        assert_eq!(s.child, Some(2));
        assert_eq!(s.submit.job_name, "plan-n0-array-0");
        // The children read this element's inputs and write under the array's own output prefix.
        let at = |flag: &str| {
            let i = s.submit.command.iter().position(|a| a == flag).unwrap();
            s.submit.command[i + 1].clone()
        };
        assert_eq!(at("--inputs"), "s3://b/e/n0-2/0/inputs.pb");
        assert_eq!(at("--output-prefix"), "s3://b/e/n0/0/out");
        assert_eq!(s.outcome_prefix, "s3://b/e/n0/0/out/2");
        let env: BTreeMap<_, _> = s.submit.environment.iter().cloned().collect();
        assert_eq!(
            env["BATCH_JOB_ARRAY_INDEX_VAR_NAME"],
            "AWS_BATCH_JOB_ARRAY_INDEX"
        );
        assert!(!env.contains_key("FLYTE_K8S_ARRAY_INDEX"));
        // A retry is a job of its own, told its index.
        launch.attempt = 1;
        let paths = AttemptPaths::under("s3://b/e", &launch);
        let s = spec(&t, &launch, &paths, &settings).unwrap();
        assert_eq!((s.submit.array_size, s.child), (None, None));
        assert_eq!(s.outcome_prefix, "s3://b/e/n0-2/1/out/2");
        let env: BTreeMap<_, _> = s.submit.environment.iter().cloned().collect();
        assert_eq!(
            env["BATCH_JOB_ARRAY_INDEX_VAR_NAME"],
            "FLYTE_K8S_ARRAY_INDEX"
        );
        assert_eq!(env["FLYTE_K8S_ARRAY_INDEX"], "2");
        assert_eq!(s.submit.command[0], "pyflyte-map-execute");
    }

    #[test]
    fn long_names_keep_a_hash() {
        let long = "x".repeat(300);
        let n = job_name(&long);
        assert_eq!(n.len(), 128);
        assert_ne!(n, job_name(&"x".repeat(301)));
        assert_eq!(job_name("e-n0-0"), "e-n0-0");
        assert_eq!(job_name("a.b"), "a-b");
    }
}
