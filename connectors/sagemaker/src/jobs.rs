//! What each SageMaker task type calls and gives back, as flytekit 1.16's connectors
//! (`flytekitplugins-awssagemaker`) define them: the create, describe and stop methods of each job, how
//! its status reads, and the `result` dict projected from the describe answer; and the request of a
//! Pythonic job (`sagemaker-training-task`, `sagemaker-processing-task`), whose container runs the task's
//! own rendered command.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::render::iso_epoch;

/// A kind of SageMaker job.
#[derive(Debug)]
pub struct JobKind {
    /// The task type that runs it.
    pub task_type: &'static str,
    /// How its state-change events name it (`sagemaker:<what>:<name>`).
    pub what: &'static str,
    /// Its name in messages.
    pub title: &'static str,
    /// The operations that create, describe and stop it.
    pub create: &'static str,
    /// See `create`.
    pub describe: &'static str,
    /// See `create`.
    pub stop: &'static str,
    /// The request field holding its name.
    pub name_key: &'static str,
    /// The describe answer's status field.
    pub status_key: &'static str,
    /// Whether it runs the task's own command (outputs from `outputs.pb`) rather than a request.
    pub pythonic: bool,
}

/// Every SageMaker job kind.
pub const KINDS: &[JobKind] = &[
    JobKind {
        task_type: "sagemaker-training-job",
        what: "training",
        title: "training job",
        create: "CreateTrainingJob",
        describe: "DescribeTrainingJob",
        stop: "StopTrainingJob",
        name_key: "TrainingJobName",
        status_key: "TrainingJobStatus",
        pythonic: false,
    },
    JobKind {
        task_type: "sagemaker-processing-job",
        what: "processing",
        title: "processing job",
        create: "CreateProcessingJob",
        describe: "DescribeProcessingJob",
        stop: "StopProcessingJob",
        name_key: "ProcessingJobName",
        status_key: "ProcessingJobStatus",
        pythonic: false,
    },
    JobKind {
        task_type: "sagemaker-hyperparameter-tuning-job",
        what: "tuning",
        title: "hyperparameter tuning job",
        create: "CreateHyperParameterTuningJob",
        describe: "DescribeHyperParameterTuningJob",
        stop: "StopHyperParameterTuningJob",
        name_key: "HyperParameterTuningJobName",
        status_key: "HyperParameterTuningJobStatus",
        pythonic: false,
    },
    JobKind {
        task_type: "sagemaker-transform-job",
        what: "transform",
        title: "transform job",
        create: "CreateTransformJob",
        describe: "DescribeTransformJob",
        stop: "StopTransformJob",
        name_key: "TransformJobName",
        status_key: "TransformJobStatus",
        pythonic: false,
    },
    JobKind {
        task_type: "sagemaker-training-task",
        what: "training",
        title: "training job",
        create: "CreateTrainingJob",
        describe: "DescribeTrainingJob",
        stop: "StopTrainingJob",
        name_key: "TrainingJobName",
        status_key: "TrainingJobStatus",
        pythonic: true,
    },
    JobKind {
        task_type: "sagemaker-processing-task",
        what: "processing",
        title: "processing job",
        create: "CreateProcessingJob",
        describe: "DescribeProcessingJob",
        stop: "StopProcessingJob",
        name_key: "ProcessingJobName",
        status_key: "ProcessingJobStatus",
        pythonic: true,
    },
];

/// The kind of job a task type runs.
pub fn kind(task_type: &str) -> Option<&'static JobKind> {
    KINDS.iter().find(|k| k.task_type == task_type)
}

/// The kind of job a state-change event's `what` names (the first with it).
pub fn kind_of_event(what: &str) -> Option<&'static JobKind> {
    KINDS.iter().find(|k| k.what == what)
}

/// Where a job is, read from its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Queued or running (also while stopping).
    Running,
    /// Completed.
    Succeeded,
    /// Failed, stopped or deleted.
    Failed,
}

/// A job status as flytekit's state maps read it: `InProgress` and `Stopping` run, `Completed`
/// succeeds, `Failed`, `Stopped`, `Deleting` and `DeleteFailed` fail; anything else runs.
pub fn phase(status: &str) -> Phase {
    match status {
        "Completed" => Phase::Succeeded,
        "Failed" | "Stopped" | "Deleting" | "DeleteFailed" => Phase::Failed,
        _ => Phase::Running,
    }
}

/// A timestamp as flytekit's `_isoformat` leaves it: ISO 8601 text (the JSON protocol sends epoch
/// seconds; boto3 turns them into datetimes).
pub fn iso(v: &Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map_or(Value::Null, |f| Value::from(iso_epoch(f))),
        other => other.clone(),
    }
}

fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

/// The `result` of a completed job, from its describe answer, as flytekit's connector projects it
/// (`best_artifacts`: the best training job's model artefacts, for a tuning job).
pub fn result(kind: &JobKind, d: &Value, best_artifacts: Option<&Value>) -> Value {
    match kind.what {
        "training" => json!({
            "TrainingJobArn": get(d, "TrainingJobArn"),
            "TrainingJobName": get(d, "TrainingJobName"),
            "ModelArtifacts": {"S3ModelArtifacts": get(get(d, "ModelArtifacts"), "S3ModelArtifacts")},
            "OutputDataConfig": {"S3OutputPath": get(get(d, "OutputDataConfig"), "S3OutputPath")},
            "FinalMetricDataList": get(d, "FinalMetricDataList").as_array().map(|a| a.iter().map(|m| json!({
                "MetricName": get(m, "MetricName"),
                "Value": get(m, "Value"),
                "Timestamp": iso(get(m, "Timestamp")),
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "BillableTimeInSeconds": get(d, "BillableTimeInSeconds"),
            "TrainingTimeInSeconds": get(d, "TrainingTimeInSeconds"),
        }),
        "processing" => {
            let outputs: Vec<Value> = get(get(d, "ProcessingOutputConfig"), "Outputs")
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| {
                            let mut p = Map::new();
                            p.insert("OutputName".into(), get(o, "OutputName").clone());
                            let s3 = get(o, "S3Output");
                            if s3.as_object().is_some_and(|m| !m.is_empty()) {
                                p.insert("S3Uri".into(), get(s3, "S3Uri").clone());
                            }
                            let fs = get(o, "FeatureStoreOutput");
                            if fs.as_object().is_some_and(|m| !m.is_empty()) {
                                p.insert(
                                    "FeatureGroupName".into(),
                                    get(fs, "FeatureGroupName").clone(),
                                );
                            }
                            Value::Object(p)
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "ProcessingJobArn": get(d, "ProcessingJobArn"),
                "ProcessingJobName": get(d, "ProcessingJobName"),
                "Outputs": outputs,
                "ExitMessage": get(d, "ExitMessage"),
                "ProcessingStartTime": iso(get(d, "ProcessingStartTime")),
                "ProcessingEndTime": iso(get(d, "ProcessingEndTime")),
            })
        }
        "tuning" => {
            let best = get(d, "BestTrainingJob");
            let metric = get(best, "FinalHyperParameterTuningJobObjectiveMetric");
            let counters = get(d, "TrainingJobStatusCounters");
            let objectives = get(d, "ObjectiveStatusCounters");
            let artifacts = best_artifacts.cloned().unwrap_or(Value::Null);
            json!({
                "HyperParameterTuningJobArn": get(d, "HyperParameterTuningJobArn"),
                "HyperParameterTuningJobName": get(d, "HyperParameterTuningJobName"),
                "BestTrainingJob": {
                    "TrainingJobName": get(best, "TrainingJobName"),
                    "TrainingJobArn": get(best, "TrainingJobArn"),
                    "TrainingJobStatus": get(best, "TrainingJobStatus"),
                    "ObjectiveStatus": get(best, "ObjectiveStatus"),
                    "FinalHyperParameterTuningJobObjectiveMetric": {
                        "MetricName": get(metric, "MetricName"),
                        "Value": get(metric, "Value"),
                    },
                    "TunedHyperParameters": get(best, "TunedHyperParameters").as_object().cloned().unwrap_or_default(),
                    "ModelArtifacts": {"S3ModelArtifacts": artifacts},
                    "TrainingStartTime": iso(get(best, "TrainingStartTime")),
                    "TrainingEndTime": iso(get(best, "TrainingEndTime")),
                },
                "ModelArtifacts": {"S3ModelArtifacts": artifacts},
                "TrainingJobStatusCounters": {
                    "Completed": get(counters, "Completed"),
                    "InProgress": get(counters, "InProgress"),
                    "RetryableError": get(counters, "RetryableError"),
                    "NonRetryableError": get(counters, "NonRetryableError"),
                    "Stopped": get(counters, "Stopped"),
                },
                "ObjectiveStatusCounters": {
                    "Succeeded": get(objectives, "Succeeded"),
                    "Pending": get(objectives, "Pending"),
                    "Failed": get(objectives, "Failed"),
                },
            })
        }
        _ => json!({
            "TransformJobArn": get(d, "TransformJobArn"),
            "TransformJobName": get(d, "TransformJobName"),
            "ModelName": get(d, "ModelName"),
            "TransformOutput": {"S3OutputPath": get(get(d, "TransformOutput"), "S3OutputPath")},
            "TransformStartTime": iso(get(d, "TransformStartTime")),
            "TransformEndTime": iso(get(d, "TransformEndTime")),
        }),
    }
}

/// The message of a job's status: the secondary status while a training job runs, the trial counts
/// of a tuning job, the failure reason when it failed.
pub fn message(kind: &JobKind, d: &Value) -> String {
    let text = |k: &str| get(d, k).as_str().unwrap_or_default().to_string();
    match phase(get(d, kind.status_key).as_str().unwrap_or_default()) {
        Phase::Failed => [
            text("FailureReason"),
            text("SecondaryStatus"),
            text("ExitMessage"),
        ]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default(),
        _ if kind.what == "tuning" => {
            let c = get(d, "TrainingJobStatusCounters");
            let n = |k: &str| get(c, k).as_i64().unwrap_or(0);
            format!(
                "{} Completed / {} InProgress / {} Failed trials",
                n("Completed"),
                n("InProgress"),
                n("RetryableError") + n("NonRetryableError")
            )
        }
        _ => text("SecondaryStatus"),
    }
}

/// The longest SageMaker job name.
/// The longest name SageMaker gives a job.
pub const MAX_JOB_NAME: usize = 63;

/// A Pythonic job's name, as flytekit's `_make_job_name` makes it: the task's `job_name_prefix` (only
/// letters, digits and `-`) and 20 hex digits of a SHA-256 of the attempt (output prefix, execution,
/// node, attempt, task), within 63 characters. The same attempt always has the same name, so a start
/// repeated finds the job it made.
pub fn pythonic_job_name(prefix: &str, seed_parts: &[&str]) -> String {
    let seed = seed_parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("-");
    let seed = if seed.is_empty() { "job".into() } else { seed };
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let suffix = format!("-{}", &hex[..20]);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "flyte" } else { clean };
    let room = MAX_JOB_NAME - suffix.len();
    let mut head: String = clean.chars().take(room).collect();
    while head.ends_with('-') {
        head.pop();
    }
    if head.is_empty() {
        head = "j".into();
    }
    format!("{head}{suffix}")
}

/// A Pythonic task's settings (`custom`, flytekit's `PythonicJobConfig` and its subclasses).
pub struct Pythonic<'a> {
    /// The task's `custom`.
    pub config: &'a Map<String, Value>,
    /// The container image.
    pub image: &'a str,
    /// The rendered container arguments (the job's `ContainerEntrypoint`).
    pub entrypoint: Vec<String>,
    /// The container's environment (the task's, then `config.environment`, then
    /// `FLYTE_FAIL_ON_ERROR=true`).
    pub environment: Map<String, Value>,
    /// The job's name.
    pub job_name: String,
    /// The attempt's output prefix.
    pub output_prefix: &'a str,
}

fn int_or(config: &Map<String, Value>, k: &str, default: i64) -> Value {
    match config.get(k) {
        Some(Value::Number(n)) => n
            .as_f64()
            .map_or(Value::from(default), |f| Value::from(f as i64)),
        _ => Value::from(default),
    }
}

fn tags(config: &Map<String, Value>) -> Option<Value> {
    let t = config.get("tags")?.as_object()?;
    if t.is_empty() {
        return None;
    }
    Some(Value::Array(
        t.iter()
            .map(|(k, v)| {
                json!({"Key": k, "Value": v.as_str().map_or_else(|| crate::pyfmt::py_str(v), str::to_string)})
            })
            .collect(),
    ))
}

/// The create request of a Pythonic job, as flytekit's `_build_request` makes it.
pub fn pythonic_request(kind: &JobKind, p: &Pythonic<'_>) -> Value {
    let c = p.config;
    let text = |k: &str| c.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let mut resources = Map::new();
    resources.insert(
        "InstanceType".into(),
        Value::from(text("instance_type").unwrap_or("ml.m5.large")),
    );
    resources.insert("InstanceCount".into(), int_or(c, "instance_count", 1));
    resources.insert("VolumeSizeInGB".into(), int_or(c, "volume_size_in_gb", 30));
    if let Some(k) = text("kms_key_id") {
        resources.insert("VolumeKmsKeyId".into(), Value::from(k));
    }
    let stopping = json!({"MaxRuntimeInSeconds": int_or(c, "max_runtime_in_seconds", 3600)});
    let role = text("execution_role_arn").unwrap_or_default();
    let mut request = if kind.what == "training" {
        let output = text("output_s3_path")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/_sagemaker_model", p.output_prefix));
        let mut r = json!({
            "TrainingJobName": p.job_name,
            "RoleArn": role,
            "AlgorithmSpecification": {
                "TrainingImage": p.image,
                "ContainerEntrypoint": p.entrypoint,
                "TrainingInputMode": "File",
            },
            "ResourceConfig": resources,
            "OutputDataConfig": {"S3OutputPath": output},
            "StoppingCondition": stopping,
            "Environment": p.environment,
        });
        if let Some(v) = c.get("vpc_config").filter(|v| v.is_object()) {
            r["VpcConfig"] = v.clone();
        }
        r
    } else {
        let mut r = json!({
            "ProcessingJobName": p.job_name,
            "RoleArn": role,
            "AppSpecification": {"ImageUri": p.image, "ContainerEntrypoint": p.entrypoint},
            "ProcessingResources": {"ClusterConfig": resources},
            "StoppingCondition": stopping,
            "Environment": p.environment,
        });
        if let Some(v) = c.get("network_config").filter(|v| v.is_object()) {
            r["NetworkConfig"] = v.clone();
        }
        r
    };
    if let Some(t) = tags(c) {
        request["Tags"] = t;
    }
    request
}

/// Everything wrong with a Pythonic task's settings and command, as flytekit checks them.
pub fn pythonic_problems(
    config: &Map<String, Value>,
    entrypoint: &[String],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let text = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or_default();
    if text("execution_role_arn").is_empty() {
        out.push((
            "custom.execution_role_arn".into(),
            "is required (the IAM role the job runs as)".into(),
        ));
    }
    if let Some(n) = config.get("instance_count").and_then(Value::as_f64)
        && n != 1.0
    {
        out.push((
            "custom.instance_count".into(),
            format!("Pythonic SageMaker jobs run on one instance, not {n}"),
        ));
    }
    if config
        .get("network_config")
        .and_then(|n| n.get("EnableNetworkIsolation"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.push((
            "custom.network_config.EnableNetworkIsolation".into(),
            "cannot be true: the job reads its inputs from and writes its outputs to S3".into(),
        ));
    }
    if entrypoint.is_empty() {
        out.push((
            "container.args".into(),
            "a Pythonic job runs the task's command; it has none".into(),
        ));
    }
    if entrypoint.len() > 100 {
        out.push((
            "container.args".into(),
            format!(
                "SageMaker's ContainerEntrypoint holds at most 100 arguments, not {}",
                entrypoint.len()
            ),
        ));
    }
    if let Some(long) = entrypoint.iter().find(|a| a.len() > 256) {
        out.push((
            "container.args".into(),
            format!(
                "SageMaker's ContainerEntrypoint arguments are at most 256 characters; one has {}",
                long.len()
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_flytekit_reads_them() {
        assert_eq!(phase("InProgress"), Phase::Running);
        assert_eq!(phase("Stopping"), Phase::Running);
        assert_eq!(phase("Completed"), Phase::Succeeded);
        for s in ["Failed", "Stopped", "Deleting", "DeleteFailed"] {
            assert_eq!(phase(s), Phase::Failed);
        }
    }

    #[test]
    fn pythonic_names_are_stable_valid_and_short() {
        let a = pythonic_job_name("flyte-", &["s3://b/e/n0/0/out", "e", "n0", "t"]);
        assert_eq!(
            a,
            pythonic_job_name("flyte-", &["s3://b/e/n0/0/out", "e", "n0", "t"])
        );
        assert_ne!(
            a,
            pythonic_job_name("flyte-", &["s3://b/e/n0/1/out", "e", "n0", "1", "t"])
        );
        assert!(a.starts_with("flyte-"), "{a}");
        assert_eq!(a.len(), "flyte-".len() + 20);
        let long = pythonic_job_name(&"my_prefix.".repeat(20), &["x"]);
        assert!(long.len() <= 63, "{long}");
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn a_training_result_is_projected_with_iso_times() {
        let d = json!({
            "TrainingJobName": "t", "TrainingJobArn": "arn", "TrainingJobStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m.tar.gz"},
            "FinalMetricDataList": [{"MetricName": "rmse", "Value": 0.5, "Timestamp": 0}],
            "Other": 1,
        });
        let r = result(kind("sagemaker-training-job").unwrap(), &d, None);
        assert_eq!(
            r["ModelArtifacts"]["S3ModelArtifacts"],
            json!("s3://b/m.tar.gz")
        );
        assert_eq!(
            r["FinalMetricDataList"][0]["Timestamp"],
            json!("1970-01-01T00:00:00+00:00")
        );
        assert_eq!(r["OutputDataConfig"]["S3OutputPath"], Value::Null);
        assert!(r.get("Other").is_none());
    }
}
