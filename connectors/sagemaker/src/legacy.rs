//! The legacy SageMaker task types of `flyteidl.plugins.sagemaker`, as Flyte's SageMaker plugin
//! (`flyteplugins/go/tasks/plugins/k8s/sagemaker`) runs them:
//!
//! - `sagemaker_training_job_task`: a built-in algorithm (XGBoost) trains on the task's `train` and
//!   `validation` blobs with its `static_hyperparameters`, in the algorithm's image for the region (the
//!   settings' `sagemaker.prebuiltAlgorithms`); its one output is the model,
//!   `<raw output prefix>/training_outputs/<job>/output/model.tar.gz`.
//! - `sagemaker_custom_training_job_task`: the task's own container trains; its rendered arguments and
//!   environment travel as hyperparameters (`__FLYTE_CMD_<i>_<arg>__`, `__FLYTE_ENV_VAR_<name>__`) that
//!   flytekit's SageMaker runner in the image turns back into the command; outputs come from the
//!   `outputs.pb` it writes, failures from its `error.pb`.
//! - `sagemaker_hyperparameter_tuning_job_task`: a tuning job of a built-in algorithm, its ranges read
//!   from the task's inputs; the output is the best training job's model,
//!   `<raw output prefix>/hyperparameter_tuning_outputs/<best job>/output/model.tar.gz`.
//!
//! A job is named after its attempt, so a start repeated finds it; `Failed` is a permanent failure with
//! SageMaker's reason, `Stopped` a retryable one, as in Flyte.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use updraft_connector::{
    Attempt, Connector, DataStore, Handle, JobKey, Problem, Transient, failed, read_output_files,
};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::outcome::from_output_files;
use updraft_engine::exec::{ErrorKind, TaskStatus};
use updraft_engine::literal::{from_json, struct_json, to_json};
use updraft_engine::plugins::PluginKind;
use updraft_engine::template::render_args;
use updraft_proto::Message;
use updraft_proto::core::literal_type::Type;
use updraft_proto::core::task_template::Target;
use updraft_proto::core::{
    BlobType, Literal, LiteralMap, LiteralType, blob_type::BlobDimensionality,
};
use updraft_proto::plugins::sagemaker as pb;
use updraft_settings::PrebuiltAlgorithm;

use crate::api::Aws;
use crate::jobs::{self, JobKind};
use crate::{Made, create, describe, problem, setup_failure, stop_job, tag_attempt};

/// The name of [`LegacyConnector`] in handles.
pub const LEGACY: &str = "sagemaker-legacy";
/// A built-in algorithm's training job.
pub const TRAINING: &str = "sagemaker_training_job_task";
/// A custom (the task's own container) training job.
pub const CUSTOM_TRAINING: &str = "sagemaker_custom_training_job_task";
/// A built-in algorithm's hyperparameter tuning job.
pub const TUNING: &str = "sagemaker_hyperparameter_tuning_job_task";

const TRAIN: &str = "train";
const VALIDATION: &str = "validation";
const STATIC_HPS: &str = "static_hyperparameters";
const TUNING_CONFIG: &str = "hyperparameter_tuning_job_config";
/// The kind of a tuning job (`jobs::KINDS`).
const TUNING_JOB: &str = "sagemaker-hyperparameter-tuning-job";
const CMD_PREFIX: &str = "__FLYTE_CMD_";
const ENV_PREFIX: &str = "__FLYTE_ENV_VAR_";
const SUFFIX: &str = "__";
const CMD_DUMMY: &str = "__FLYTE_CMD_DUMMY_VALUE__";
const MPI_ENABLED: &str = "sagemaker_mpi_enabled";
/// Flyte's limit on a job's run: a day.
const MAX_RUNTIME_SECONDS: u64 = 86_400;

/// Flyte's default images: XGBoost 0.90 in us-east-1.
pub fn default_algorithms() -> Vec<PrebuiltAlgorithm> {
    vec![PrebuiltAlgorithm {
        name: "xgboost".into(),
        regional_configs: vec![updraft_settings::RegionalAlgorithm {
            region: "us-east-1".into(),
            version_configs: vec![updraft_settings::AlgorithmVersion {
                version: "0.90".into(),
                image:
                    "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:0.90-2-cpu-py3"
                        .into(),
            }],
        }],
    }]
}

/// The field `camel` (or `snake`, as `preserving_proto_field_name` writes it) of a proto-JSON object.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> &'a Value {
    v.get(camel)
        .or_else(|| v.get(snake))
        .unwrap_or(&Value::Null)
}

/// An enum field as its name: proto JSON writes names, a Struct may hold numbers; unset is value 0.
fn enum_name(v: &Value, names: &[&'static str]) -> Result<&'static str, String> {
    match v {
        Value::Null => Ok(names[0]),
        Value::String(s) => names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(s))
            .copied()
            .ok_or_else(|| format!("`{s}` is not one of {}", names.join(", "))),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && (*f as usize) < names.len())
            .map(|f| names[f as usize])
            .ok_or_else(|| format!("{n} is not one of {}", names.join(", "))),
        other => Err(format!("{other} is not one of {}", names.join(", "))),
    }
}

/// An int64 field: a number, or text (proto JSON writes int64 as text); unset is 0.
fn int_of(v: &Value) -> Result<i64, String> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .map(|f| f as i64)
            .ok_or_else(|| format!("{n} is not a whole number")),
        Value::String(s) => s
            .parse()
            .map_err(|_| format!("`{s}` is not a whole number")),
        other => Err(format!("{other} is not a whole number")),
    }
}

fn text_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// `TrainingJob.algorithm_specification` and `training_job_resource_config`, read.
struct TrainingSpec {
    input_mode: &'static str,
    algorithm: &'static str,
    version: String,
    metrics: Vec<Value>,
    instance_count: i64,
    instance_type: String,
    volume_gb: i64,
    mpi: bool,
}

/// Reads a `TrainingJob` message (proto JSON); `at` names where it sits in `custom`.
fn training_spec(job: &Value, at: &str) -> Result<TrainingSpec, Vec<Problem>> {
    let mut problems = Vec::new();
    let algo = field(job, "algorithmSpecification", "algorithm_specification");
    let res = field(
        job,
        "trainingJobResourceConfig",
        "training_job_resource_config",
    );
    if !algo.is_object() {
        problems.push(problem(
            &format!("{at}algorithmSpecification"),
            "is required",
        ));
    }
    if !res.is_object() {
        problems.push(problem(
            &format!("{at}trainingJobResourceConfig"),
            "is required",
        ));
    }
    let mut note = |f: &str, r: Result<&'static str, String>| match r {
        Ok(n) => n,
        Err(e) => {
            problems.push(problem(&format!("{at}{f}"), e));
            ""
        }
    };
    let input_mode = note(
        "algorithmSpecification.inputMode",
        enum_name(field(algo, "inputMode", "input_mode"), &["FILE", "PIPE"]),
    );
    let algorithm = note(
        "algorithmSpecification.algorithmName",
        enum_name(
            field(algo, "algorithmName", "algorithm_name"),
            &["CUSTOM", "XGBOOST"],
        ),
    );
    note(
        "algorithmSpecification.inputContentType",
        enum_name(
            field(algo, "inputContentType", "input_content_type"),
            &["TEXT_CSV"],
        ),
    );
    let mpi = note(
        "trainingJobResourceConfig.distributedProtocol",
        enum_name(
            field(res, "distributedProtocol", "distributed_protocol"),
            &["UNSPECIFIED", "MPI"],
        ),
    ) == "MPI";
    let mut int = |f: &str, v: &Value| {
        int_of(v).unwrap_or_else(|e| {
            problems.push(problem(&format!("{at}trainingJobResourceConfig.{f}"), e));
            0
        })
    };
    let instance_count = int(
        "instanceCount",
        field(res, "instanceCount", "instance_count"),
    );
    let volume_gb = int(
        "volumeSizeInGb",
        field(res, "volumeSizeInGb", "volume_size_in_gb"),
    );
    let metrics = field(algo, "metricDefinitions", "metric_definitions")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| json!({"Name": text_of(&m["name"]), "Regex": text_of(&m["regex"])}))
                .collect()
        })
        .unwrap_or_default();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(TrainingSpec {
        input_mode: if input_mode == "PIPE" { "Pipe" } else { "File" },
        algorithm,
        version: text_of(field(algo, "algorithmVersion", "algorithm_version")).to_string(),
        metrics,
        instance_count,
        instance_type: text_of(field(res, "instanceType", "instance_type")).to_string(),
        volume_gb,
        mpi,
    })
}

/// A version's numbers (`1.7-1` → 1, 7, 1), compared as numbers.
fn version_numbers(v: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = v
        .trim_start_matches(['v', 'V'])
        .split(['.', '-'])
        .map(|p| p.parse().ok())
        .collect();
    parts.filter(|p| !p.is_empty())
}

fn compare_versions(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

/// The image of a built-in algorithm in `region`, as Flyte's plugin picks it: the version asked for,
/// else the latest configured.
pub fn prebuilt_image(
    algorithms: &[PrebuiltAlgorithm],
    algorithm: &str,
    version: &str,
    region: &str,
) -> Result<String, String> {
    let algo = algorithms
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(algorithm))
        .ok_or_else(|| {
            format!(
                "no image for the algorithm {algorithm}: add it to the settings' \
                 sagemaker.prebuiltAlgorithms"
            )
        })?;
    let regional = algo
        .regional_configs
        .iter()
        .find(|r| r.region.eq_ignore_ascii_case(region))
        .ok_or_else(|| {
            format!(
                "no image for the algorithm {algorithm} in {region}: add the region to the \
                 settings' sagemaker.prebuiltAlgorithms"
            )
        })?;
    let mut versions = Vec::new();
    for v in &regional.version_configs {
        let n = version_numbers(&v.version).ok_or_else(|| {
            format!(
                "the settings' sagemaker.prebuiltAlgorithms version `{}` of {algorithm} is not a \
                 version",
                v.version
            )
        })?;
        versions.push((n, v));
    }
    if version.is_empty() {
        return versions
            .iter()
            .max_by(|a, b| compare_versions(&a.0, &b.0))
            .map(|(_, v)| v.image.clone())
            .ok_or_else(|| format!("no version of the algorithm {algorithm} in {region}"));
    }
    let want = version_numbers(version)
        .ok_or_else(|| format!("the algorithm version `{version}` is not a version"))?;
    versions
        .iter()
        .find(|(n, _)| compare_versions(n, &want) == Ordering::Equal)
        .map(|(_, v)| v.image.clone())
        .ok_or_else(|| format!("no image for {algorithm}:{region}:{version}"))
}

/// A job name for the attempt: its own name when SageMaker takes it, else a hashed form of it.
pub fn job_name(attempt: &str) -> String {
    let ok = attempt.len() <= jobs::MAX_JOB_NAME
        && attempt.starts_with(|c: char| c.is_ascii_alphanumeric())
        && attempt
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        attempt.to_string()
    } else {
        jobs::pythonic_job_name(attempt, &[attempt])
    }
}

/// The hyperparameters that carry a custom job's command and environment, as Flyte's plugin writes
/// them, in order: `__FLYTE_CMD_<i>_<arg>__` for each argument, `__FLYTE_ENV_VAR_<name>__` for each
/// variable, statsd off, and whether MPI runs it.
pub fn command_hyperparameters(args: &[String], env: &[(String, String)], mpi: bool) -> Value {
    let mut hps = Map::new();
    for (i, a) in args.iter().enumerate() {
        hps.insert(
            format!("{CMD_PREFIX}{i}_{a}{SUFFIX}"),
            Value::from(CMD_DUMMY),
        );
    }
    for (k, v) in env {
        hps.insert(format!("{ENV_PREFIX}{k}{SUFFIX}"), Value::from(v.clone()));
    }
    hps.insert(
        format!("{ENV_PREFIX}FLYTE_STATSD_DISABLED{SUFFIX}"),
        Value::from("true"),
    );
    hps.insert(
        MPI_ENABLED.into(),
        Value::from(if mpi { "true" } else { "false" }),
    );
    Value::Object(hps)
}

/// A value of a literal as JSON: a generic Struct, a msgpack dict, or a binary `flyteidl` message
/// decoded by `binary`.
fn struct_of(l: &Literal, binary: impl Fn(&[u8]) -> Option<Value>) -> Option<Value> {
    use updraft_proto::core::literal::Value as L;
    use updraft_proto::core::scalar::Value as S;
    let Some(L::Scalar(s)) = &l.value else {
        return None;
    };
    match &s.value {
        Some(S::Generic(g)) => Some(struct_json(g)),
        Some(S::Binary(b)) if b.tag == "msgpack" => Some(to_json(l)).filter(Value::is_object),
        Some(S::Binary(b)) => binary(&b.value),
        _ => None,
    }
}

fn blob_uri(l: &Literal) -> Option<&str> {
    use updraft_proto::core::literal::Value as L;
    use updraft_proto::core::scalar::Value as S;
    match &l.value {
        Some(L::Scalar(s)) => match &s.value {
            Some(S::Blob(b)) if !b.uri.is_empty() => Some(&b.uri),
            _ => None,
        },
        _ => None,
    }
}

/// A hyperparameter's value as text: text as it is, numbers as Python prints them (whole numbers
/// without a fraction), true/false.
fn hp_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The static hyperparameters input, sorted by name.
fn static_hyperparameters(l: &Literal) -> Result<Map<String, Value>, String> {
    match struct_of(l, |_| None) {
        Some(Value::Object(m)) => Ok(m
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(hp_text(v))))
            .collect()),
        _ => Err("should be a struct (a dict of hyperparameters)".into()),
    }
}

fn scaling(v: &Value) -> Result<&'static str, String> {
    Ok(
        match enum_name(v, &["AUTO", "LINEAR", "LOGARITHMIC", "REVERSELOGARITHMIC"])? {
            "LINEAR" => "Linear",
            "LOGARITHMIC" => "Logarithmic",
            "REVERSELOGARITHMIC" => "ReverseLogarithmic",
            _ => "Auto",
        },
    )
}

/// A `ParameterRangeOneOf` (proto JSON) as the request's range of `name`, with its list's key; None
/// when the value is not one.
fn parameter_range(name: &str, v: &Value) -> Option<(&'static str, Value)> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    if let Some(c) = o
        .get("continuousParameterRange")
        .or_else(|| o.get("continuous_parameter_range"))
    {
        let num = |k: &str, s: &str| field(c, k, s).as_f64().unwrap_or(0.0);
        return Some((
            "ContinuousParameterRanges",
            json!({
                "Name": name,
                "MinValue": format!("{:.6}", num("minValue", "min_value")),
                "MaxValue": format!("{:.6}", num("maxValue", "max_value")),
                "ScalingType": scaling(field(c, "scalingType", "scaling_type")).ok()?,
            }),
        ));
    }
    if let Some(i) = o
        .get("integerParameterRange")
        .or_else(|| o.get("integer_parameter_range"))
    {
        return Some((
            "IntegerParameterRanges",
            json!({
                "Name": name,
                "MinValue": int_of(field(i, "minValue", "min_value")).ok()?.to_string(),
                "MaxValue": int_of(field(i, "maxValue", "max_value")).ok()?.to_string(),
                "ScalingType": scaling(field(i, "scalingType", "scaling_type")).ok()?,
            }),
        ));
    }
    if let Some(c) = o
        .get("categoricalParameterRange")
        .or_else(|| o.get("categorical_parameter_range"))
    {
        let values: Vec<Value> = c["values"]
            .as_array()?
            .iter()
            .map(|v| Value::from(hp_text(v)))
            .collect();
        return Some((
            "CategoricalParameterRanges",
            json!({"Name": name, "Values": values}),
        ));
    }
    None
}

/// A binary `HyperparameterTuningJobConfig` as its proto JSON.
fn tuning_config_json(bytes: &[u8]) -> Option<Value> {
    let c = pb::HyperparameterTuningJobConfig::decode(bytes).ok()?;
    let scaling = ["AUTO", "LINEAR", "LOGARITHMIC", "REVERSELOGARITHMIC"];
    fn at(names: &[&'static str], i: i32) -> &'static str {
        usize::try_from(i)
            .ok()
            .and_then(|i| names.get(i).copied())
            .unwrap_or("")
    }
    let mut ranges = Map::new();
    for (name, r) in c
        .hyperparameter_ranges
        .iter()
        .flat_map(|r| &r.parameter_range_map)
    {
        use pb::parameter_range_one_of::ParameterRangeType as R;
        let v = match &r.parameter_range_type {
            Some(R::ContinuousParameterRange(c)) => json!({"continuousParameterRange": {
                "maxValue": c.max_value, "minValue": c.min_value,
                "scalingType": at(&scaling, c.scaling_type)}}),
            Some(R::IntegerParameterRange(i)) => json!({"integerParameterRange": {
                "maxValue": i.max_value, "minValue": i.min_value,
                "scalingType": at(&scaling, i.scaling_type)}}),
            Some(R::CategoricalParameterRange(c)) => {
                json!({"categoricalParameterRange": {"values": c.values}})
            }
            None => json!({}),
        };
        ranges.insert(name.clone(), v);
    }
    let objective = c.tuning_objective.as_ref().map(|o| {
        json!({"objectiveType": at(&["MINIMIZE", "MAXIMIZE"], o.objective_type),
               "metricName": o.metric_name})
    });
    Some(json!({
        "hyperparameterRanges": {"parameterRangeMap": ranges},
        "tuningStrategy": at(&["BAYESIAN", "RANDOM"], c.tuning_strategy),
        "tuningObjective": objective,
        "trainingJobEarlyStoppingType": at(&["OFF", "AUTO"], c.training_job_early_stopping_type),
    }))
}

/// The kind (`jobs::KINDS`) of a legacy task type's job.
fn job_kind(task_type: &str) -> &'static str {
    if task_type == TUNING {
        TUNING_JOB
    } else {
        "sagemaker-training-job"
    }
}

/// The kind of a legacy handle's job.
fn job_of(m: &Made) -> Result<&'static JobKind, Transient> {
    jobs::kind(&m.kind)
        .ok_or_else(|| Transient(format!("an unknown SageMaker job kind {}", m.kind)))
}

/// A legacy task's settings and request, before its inputs are known.
struct Plan {
    region: String,
    role: String,
    image: String,
    spec: TrainingSpec,
    /// The tuning job's limits (`maxNumberOfTrainingJobs`, `maxParallelTrainingJobs`).
    limits: Option<(i64, i64)>,
    /// The model output's name and blob format.
    model: Option<(String, String)>,
}

/// Runs the legacy `flyteidl.plugins.sagemaker` task types.
pub struct LegacyConnector {
    pub(crate) aws: Arc<Aws>,
    pub(crate) role: Option<String>,
    pub(crate) algorithms: Vec<PrebuiltAlgorithm>,
    pub(crate) no_s3: Option<String>,
}

impl LegacyConnector {
    /// Everything a task's configuration decides, or every problem with it.
    fn plan(&self, task: &CompiledTask) -> Result<Plan, Vec<Problem>> {
        let t = &task.template;
        let ty = t.r#type.as_str();
        let custom = t.custom.as_ref().map(struct_json).unwrap_or(Value::Null);
        let mut problems = Vec::new();
        let (job, at, limits) = if ty == TUNING {
            let mut int = |camel: &str, snake: &str| {
                int_of(field(&custom, camel, snake)).unwrap_or_else(|e| {
                    problems.push(problem(&format!("custom.{camel}"), e));
                    0
                })
            };
            let limits = (
                int("maxNumberOfTrainingJobs", "max_number_of_training_jobs"),
                int("maxParallelTrainingJobs", "max_parallel_training_jobs"),
            );
            (
                field(&custom, "trainingJob", "training_job").clone(),
                "custom.trainingJob.",
                Some(limits),
            )
        } else {
            (custom.clone(), "custom.", None)
        };
        if !job.is_object() {
            problems.push(problem(
                at.trim_end_matches('.'),
                "the TrainingJob is missing",
            ));
        }
        let spec = match training_spec(&job, at) {
            Ok(s) => Some(s),
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        let region = self.aws.default_region().map(str::to_string);
        if region.is_none() {
            problems.push(problem(
                "aws.region",
                "no region: set aws.region in the settings, or AWS_REGION",
            ));
        }
        let role = t
            .security_context
            .as_ref()
            .and_then(|s| s.run_as.as_ref())
            .map(|r| r.iam_role.clone())
            .filter(|r| !r.is_empty())
            .or_else(|| self.role.clone());
        if role.is_none() {
            problems.push(problem(
                "security_context.run_as.iam_role",
                "no execution role: set sagemaker.roleArn in the settings, or the task's IAM role",
            ));
        }
        if let Some(why) = &self.no_s3 {
            problems.push(problem("data.prefix", why.clone()));
        }
        let mut image = String::new();
        if let Some(spec) = &spec {
            if ty == CUSTOM_TRAINING {
                if spec.algorithm != "CUSTOM" {
                    problems.push(problem(
                        &format!("{at}algorithmSpecification.algorithmName"),
                        format!(
                            "a custom training job trains with the task's container, not {}",
                            spec.algorithm
                        ),
                    ));
                }
                match &t.target {
                    Some(Target::Container(c)) if !c.image.is_empty() => image = c.image.clone(),
                    _ => problems.push(problem(
                        "container.image",
                        "a custom training job runs the task's container; it has none",
                    )),
                }
            } else if spec.algorithm == "CUSTOM" {
                problems.push(problem(
                    &format!("{at}algorithmSpecification.algorithmName"),
                    "a built-in algorithm is required (custom algorithms run as \
                     sagemaker_custom_training_job_task)",
                ));
            } else if let Some(region) = &region {
                match prebuilt_image(&self.algorithms, spec.algorithm, &spec.version, region) {
                    Ok(i) => image = i,
                    Err(e) => problems.push(problem(
                        &format!("{at}algorithmSpecification.algorithmVersion"),
                        e,
                    )),
                }
            }
        }
        let mut model = None;
        if ty != CUSTOM_TRAINING {
            let mut inputs = vec![TRAIN, VALIDATION, STATIC_HPS];
            if ty == TUNING {
                inputs.push(TUNING_CONFIG);
            }
            for name in inputs {
                if !task.interface.inputs.contains_key(name) {
                    problems.push(problem(
                        &format!("interface.inputs.{name}"),
                        "is required by a built-in algorithm's job",
                    ));
                }
            }
            let outputs = &task.interface.outputs;
            if outputs.len() > 1 {
                problems.push(problem(
                    "interface.outputs",
                    format!(
                        "a built-in algorithm's job gives one output (its model), not {}",
                        outputs.len()
                    ),
                ));
            }
            model = outputs.iter().next().map(|(name, ty)| {
                let format = match &ty.r#type {
                    Some(Type::Blob(b)) => b.format.clone(),
                    _ => String::new(),
                };
                (name.clone(), format)
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Plan {
            region: region.unwrap_or_default(),
            role: role.unwrap_or_default(),
            image,
            spec: spec.ok_or_else(Vec::new)?,
            limits,
            model,
        })
    }

    fn resources(spec: &TrainingSpec) -> Value {
        let mut r = json!({"InstanceType": spec.instance_type});
        if spec.instance_count != 0 {
            r["InstanceCount"] = json!(spec.instance_count);
        }
        if spec.volume_gb != 0 {
            r["VolumeSizeInGB"] = json!(spec.volume_gb);
        }
        r
    }

    fn algorithm(p: &Plan) -> Value {
        let mut a = json!({"TrainingImage": p.image, "TrainingInputMode": p.spec.input_mode});
        if !p.spec.metrics.is_empty() {
            a["MetricDefinitions"] = Value::Array(p.spec.metrics.clone());
        }
        a
    }

    /// The `train` and `validation` channels.
    fn channels(p: &Plan, inputs: &LiteralMap) -> Result<Value, Vec<Problem>> {
        let mut channels = Vec::new();
        let mut problems = Vec::new();
        for name in [TRAIN, VALIDATION] {
            match inputs.literals.get(name).and_then(blob_uri) {
                Some(uri) => channels.push(json!({
                    "ChannelName": name,
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
                    "ContentType": "text/csv",
                    "InputMode": p.spec.input_mode,
                })),
                None => problems.push(problem(
                    &format!("inputs.{name}"),
                    "is required and should be a blob (a file or folder in S3)",
                )),
            }
        }
        if problems.is_empty() {
            Ok(Value::Array(channels))
        } else {
            Err(problems)
        }
    }

    /// The create request of an attempt, its job's name and what its handle keeps.
    fn request(&self, a: &Attempt<'_>) -> Result<(Value, Made), Vec<Problem>> {
        let p = self.plan(a.task)?;
        let ty = a.task.template.r#type.as_str();
        let name = job_name(&a.launch.name);
        let inputs = &a.launch.inputs;
        let stopping = json!({"MaxRuntimeInSeconds": MAX_RUNTIME_SECONDS});
        let mut made = Made {
            kind: job_kind(ty).into(),
            region: p.region.clone(),
            name: name.clone(),
            output_prefix: None,
            has_outputs: !a.task.interface.outputs.is_empty(),
            model: None,
        };
        if ty == CUSTOM_TRAINING {
            let Some(Target::Container(c)) = &a.task.template.target else {
                return Err(vec![problem("container", "is required")]);
            };
            let vars = a.paths.vars(a.launch, "");
            let args = render_args(&c.args, &vars)
                .map_err(|e| vec![problem("container.args", e.to_string())])?;
            let env: Vec<(String, String)> = c
                .env
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect();
            made.output_prefix = Some(a.paths.output_prefix.clone());
            let request = json!({
                "TrainingJobName": name,
                "AlgorithmSpecification": Self::algorithm(&p),
                "HyperParameters": command_hyperparameters(&args, &env, p.spec.mpi),
                "OutputDataConfig": {"S3OutputPath": a.paths.output_prefix},
                "ResourceConfig": Self::resources(&p.spec),
                "RoleArn": p.role,
                "StoppingCondition": stopping,
            });
            return Ok((request, made));
        }
        let mut problems = Vec::new();
        let channels = Self::channels(&p, inputs).unwrap_or_else(|e| {
            problems.extend(e);
            Value::Null
        });
        let mut statics = match inputs.literals.get(STATIC_HPS).map(static_hyperparameters) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                problems.push(problem(&format!("inputs.{STATIC_HPS}"), e));
                Map::new()
            }
            None => {
                problems.push(problem(&format!("inputs.{STATIC_HPS}"), "is required"));
                Map::new()
            }
        };
        let sub = if ty == TUNING {
            "hyperparameter_tuning_outputs"
        } else {
            "training_outputs"
        };
        let base = format!("{}/{sub}", a.paths.raw_output_prefix);
        made.model = p
            .model
            .clone()
            .map(|(var, format)| (var, base.clone(), format));
        if ty == TRAINING {
            if !problems.is_empty() {
                return Err(problems);
            }
            let request = json!({
                "TrainingJobName": name,
                "AlgorithmSpecification": Self::algorithm(&p),
                "HyperParameters": statics,
                "InputDataConfig": channels,
                "OutputDataConfig": {"S3OutputPath": base},
                "ResourceConfig": Self::resources(&p.spec),
                "RoleArn": p.role,
                "StoppingCondition": stopping,
            });
            return Ok((request, made));
        }
        let config = match inputs
            .literals
            .get(TUNING_CONFIG)
            .and_then(|l| struct_of(l, tuning_config_json))
        {
            Some(c) if c.is_object() => c,
            _ => {
                problems.push(problem(
                    &format!("inputs.{TUNING_CONFIG}"),
                    "is required: a HyperparameterTuningJobConfig (a struct or its binary form)",
                ));
                Value::Null
            }
        };
        let objective = field(&config, "tuningObjective", "tuning_objective");
        if !config.is_null() && !objective.is_object() {
            problems.push(problem(
                &format!("inputs.{TUNING_CONFIG}.tuningObjective"),
                "is required",
            ));
        }
        let mut enum_at = |f: &str, v: &Value, names: &[&'static str]| {
            enum_name(v, names).unwrap_or_else(|e| {
                problems.push(problem(&format!("inputs.{TUNING_CONFIG}.{f}"), e));
                names[0]
            })
        };
        let strategy = enum_at(
            "tuningStrategy",
            field(&config, "tuningStrategy", "tuning_strategy"),
            &["BAYESIAN", "RANDOM"],
        );
        let objective_type = enum_at(
            "tuningObjective.objectiveType",
            field(objective, "objectiveType", "objective_type"),
            &["MINIMIZE", "MAXIMIZE"],
        );
        let early = enum_at(
            "trainingJobEarlyStoppingType",
            field(
                &config,
                "trainingJobEarlyStoppingType",
                "training_job_early_stopping_type",
            ),
            &["OFF", "AUTO"],
        );
        let mut ranges = json!({
            "CategoricalParameterRanges": [],
            "ContinuousParameterRanges": [],
            "IntegerParameterRanges": [],
        });
        for (name, l) in &inputs.literals {
            if [TRAIN, VALIDATION, STATIC_HPS, TUNING_CONFIG].contains(&name.as_str()) {
                continue;
            }
            if let Some((list, r)) = struct_of(l, |_| None).and_then(|v| parameter_range(name, &v))
                && let Some(a) = ranges[list].as_array_mut()
            {
                a.push(r);
            }
        }
        // A hyperparameter that is tuned is not also static.
        let tuned: Vec<String> = field(&config, "hyperparameterRanges", "hyperparameter_ranges")
            .get("parameterRangeMap")
            .or_else(|| {
                field(&config, "hyperparameterRanges", "hyperparameter_ranges")
                    .get("parameter_range_map")
            })
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        statics.retain(|k, _| {
            !tuned.contains(k)
                && !ranges.as_object().is_some_and(|r| {
                    r.values()
                        .filter_map(Value::as_array)
                        .flatten()
                        .any(|x| x["Name"] == k.as_str())
                })
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        let (max_jobs, max_parallel) = p.limits.unwrap_or((0, 0));
        let title = |s: &str| {
            let mut c = s.chars();
            c.next().map_or(String::new(), |f| {
                f.to_string() + &c.as_str().to_ascii_lowercase()
            })
        };
        let request = json!({
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobConfig": {
                "Strategy": title(strategy),
                "HyperParameterTuningJobObjective": {
                    "Type": title(objective_type),
                    "MetricName": text_of(field(objective, "metricName", "metric_name")),
                },
                "ResourceLimits": {
                    "MaxNumberOfTrainingJobs": max_jobs,
                    "MaxParallelTrainingJobs": max_parallel,
                },
                "ParameterRanges": ranges,
                "TrainingJobEarlyStoppingType": title(early),
            },
            "TrainingJobDefinition": {
                "StaticHyperParameters": statics,
                "AlgorithmSpecification": Self::algorithm(&p),
                "InputDataConfig": channels,
                "OutputDataConfig": {"S3OutputPath": base},
                "ResourceConfig": Self::resources(&p.spec),
                "RoleArn": p.role,
                "StoppingCondition": stopping,
            },
        });
        Ok((request, made))
    }
}

/// The model output of a completed built-in job: a blob at `<base>/<job>/output/model.tar.gz`.
fn model_outputs(model: &Option<(String, String, String)>, job: &str) -> LiteralMap {
    let mut out = LiteralMap::default();
    if let Some((var, base, format)) = model {
        let t = LiteralType {
            r#type: Some(Type::Blob(BlobType {
                format: format.clone(),
                dimensionality: BlobDimensionality::Single as i32,
            })),
            ..Default::default()
        };
        let uri = format!("{base}/{job}/output/model.tar.gz");
        if let Ok(l) = from_json(&Value::from(uri), &t) {
            out.literals.insert(var.clone(), l);
        }
    }
    out
}

#[async_trait::async_trait]
impl Connector for LegacyConnector {
    fn name(&self) -> &'static str {
        LEGACY
    }

    fn serves(&self, task: &CompiledTask) -> bool {
        task.plugin == PluginKind::SageMaker
            && [TRAINING, CUSTOM_TRAINING, TUNING].contains(&task.template.r#type.as_str())
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        let mut problems = self.plan(task).err().unwrap_or_default();
        problems.extend(crate::no_secrets(task));
        problems
    }

    fn check_interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn remote_data(&self) -> bool {
        true
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let (mut request, made) = self.request(a).map_err(setup_failure)?;
        tag_attempt(&mut request, a.launch);
        let kind = job_of(&made).map_err(|e| setup_failure(vec![problem("type", e.0)]))?;
        create(
            &self.aws,
            &made.region,
            kind,
            &request,
            &made.name,
            "",
            a.launch,
        )
        .await?;
        Ok(made.handle(LEGACY, ""))
    }

    async fn check(&self, h: &Handle, data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let m = Made::of(h)?;
        let kind = job_of(&m)?;
        let d = match describe(&self.aws, kind, &m.name, &m.region).await? {
            Ok(d) => d,
            Err(gone) => return Ok(gone),
        };
        let status = d[kind.status_key].as_str().unwrap_or_default();
        let reason = d["FailureReason"].as_str().unwrap_or_default();
        match status {
            "Completed" => {}
            "Failed" => {
                return Ok(failed(
                    "Failed",
                    format!("the SageMaker {} {} failed: {reason}", kind.title, m.name),
                    ErrorKind::User,
                    false,
                ));
            }
            "Stopped" => {
                return Ok(failed(
                    "Stopped",
                    format!("the SageMaker {} {} was stopped", kind.title, m.name),
                    ErrorKind::System,
                    true,
                ));
            }
            _ => return Ok(TaskStatus::Running),
        }
        if let Some(prefix) = &m.output_prefix {
            let files = read_output_files(data, prefix).await?;
            if m.has_outputs && files.outputs.is_none() && files.error.is_none() {
                return Ok(failed(
                    "NoOutputs",
                    format!(
                        "the SageMaker training job {} completed without writing outputs.pb under \
                         {prefix}",
                        m.name
                    ),
                    ErrorKind::User,
                    false,
                ));
            }
            return Ok(from_output_files(&files).unwrap_or(TaskStatus::Succeeded {
                outputs: LiteralMap::default(),
                cached: false,
            }));
        }
        let job = if m.kind == TUNING_JOB {
            match d["BestTrainingJob"]["TrainingJobName"].as_str() {
                Some(best) => best.to_string(),
                None => {
                    return Ok(failed(
                        "NoBestJob",
                        format!(
                            "the SageMaker tuning job {} completed without a best training job",
                            m.name
                        ),
                        ErrorKind::User,
                        false,
                    ));
                }
            }
        } else {
            m.name.clone()
        };
        Ok(TaskStatus::Succeeded {
            outputs: model_outputs(&m.model, &job),
            cached: false,
        })
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        let m = Made::of(h)?;
        stop_job(&self.aws, &m.region, job_of(&m)?, &m.name).await
    }

    fn watch(&self, h: &Handle) -> Option<JobKey> {
        Made::of(h).ok()?.key()
    }

    fn describe(&self, h: &Handle) -> updraft_connector::Described {
        crate::described(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_or_the_asked_version_is_picked() {
        let mut algos = default_algorithms();
        algos[0].regional_configs[0]
            .version_configs
            .push(updraft_settings::AlgorithmVersion {
                version: "1.7-1".into(),
                image: "xgb:1.7".into(),
            });
        assert_eq!(
            prebuilt_image(&algos, "XGBOOST", "", "us-east-1").unwrap(),
            "xgb:1.7"
        );
        assert!(
            prebuilt_image(&algos, "xgboost", "0.90.0", "US-EAST-1")
                .unwrap()
                .contains("0.90-2")
        );
        let e = prebuilt_image(&algos, "xgboost", "", "eu-west-1").unwrap_err();
        assert!(e.contains("eu-west-1"), "{e}");
        let e = prebuilt_image(&algos, "xgboost", "2.0", "us-east-1").unwrap_err();
        assert!(e.contains("xgboost:us-east-1:2.0"), "{e}");
    }

    #[test]
    fn a_command_travels_as_flytes_hyperparameters() {
        let hps = command_hyperparameters(
            &[
                "pyflyte-execute".into(),
                "--inputs".into(),
                "s3://b/i".into(),
            ],
            &[("A".into(), "1".into())],
            false,
        );
        assert_eq!(
            hps,
            json!({
                "__FLYTE_CMD_0_pyflyte-execute__": "__FLYTE_CMD_DUMMY_VALUE__",
                "__FLYTE_CMD_1_--inputs__": "__FLYTE_CMD_DUMMY_VALUE__",
                "__FLYTE_CMD_2_s3://b/i__": "__FLYTE_CMD_DUMMY_VALUE__",
                "__FLYTE_ENV_VAR_A__": "1",
                "__FLYTE_ENV_VAR_FLYTE_STATSD_DISABLED__": "true",
                "sagemaker_mpi_enabled": "false",
            })
        );
    }

    #[test]
    fn ranges_read_as_sagemaker_writes_them() {
        let (list, r) = parameter_range(
            "eta",
            &json!({"continuousParameterRange": {"maxValue": 0.5, "minValue": 0.1,
                    "scalingType": "REVERSELOGARITHMIC"}}),
        )
        .unwrap();
        assert_eq!(list, "ContinuousParameterRanges");
        assert_eq!(
            r,
            json!({"Name": "eta", "MinValue": "0.100000", "MaxValue": "0.500000",
                   "ScalingType": "ReverseLogarithmic"})
        );
        let (list, r) = parameter_range(
            "depth",
            &json!({"integerParameterRange": {"maxValue": "8", "minValue": 2.0}}),
        )
        .unwrap();
        assert_eq!(list, "IntegerParameterRanges");
        assert_eq!(r["MinValue"], "2");
        assert_eq!(r["ScalingType"], "Auto");
        assert!(parameter_range("x", &json!({"num_round": "10"})).is_none());
        assert!(parameter_range("x", &json!({})).is_none());
    }

    #[test]
    fn a_binary_tuning_config_reads_as_its_json() {
        let c = pb::HyperparameterTuningJobConfig {
            tuning_strategy: 1,
            tuning_objective: Some(pb::HyperparameterTuningObjective {
                objective_type: 1,
                metric_name: "validation:auc".into(),
            }),
            ..Default::default()
        };
        let j = tuning_config_json(&c.encode_to_vec()).unwrap();
        assert_eq!(j["tuningStrategy"], "RANDOM");
        assert_eq!(j["tuningObjective"]["objectiveType"], "MAXIMIZE");
        assert_eq!(j["trainingJobEarlyStoppingType"], "OFF");
    }

    #[test]
    fn names_keep_within_sagemakers_rules() {
        assert_eq!(job_name("exec-n0-0"), "exec-n0-0");
        let long = job_name(&format!("{}-n0-0", "e".repeat(80)));
        assert!(long.len() <= 63, "{long}");
        assert_eq!(long, job_name(&format!("{}-n0-0", "e".repeat(80))));
        assert!(job_name("a.b-n0-0").chars().all(|c| c != '.'));
    }

    #[test]
    fn hyperparameters_are_text() {
        assert_eq!(hp_text(&json!(100.0)), "100");
        assert_eq!(hp_text(&json!(0.3)), "0.3");
        assert_eq!(hp_text(&json!("binary:logistic")), "binary:logistic");
    }
}
