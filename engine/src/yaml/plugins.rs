//! Plugin blocks of Updraft YAML tasks, and the `custom` Struct each produces — the same keys and shapes
//! flytekit's plugins write, so connectors read one format whichever way a task was authored.

use std::collections::BTreeMap;

use prost_types::{ListValue, Struct, Value as PValue, value::Kind};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use updraft_proto::core::resources::{ResourceEntry, ResourceName};

use super::ResourcesDef;

/// JSON → protobuf Struct (numbers become doubles, as in flytekit's output).
pub fn to_struct(v: &Value) -> Struct {
    match to_pvalue(v).kind {
        Some(Kind::StructValue(s)) => s,
        _ => Struct::default(),
    }
}

fn to_pvalue(v: &Value) -> PValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_pvalue).collect(),
        }),
        Value::Object(m) => Kind::StructValue(Struct {
            fields: m.iter().map(|(k, v)| (k.clone(), to_pvalue(v))).collect(),
        }),
    };
    PValue { kind: Some(kind) }
}

/// Drops nulls so unset options stay unset.
fn compact(mut m: Map<String, Value>) -> Value {
    m.retain(|_, v| !v.is_null());
    Value::Object(m)
}

/// AWS Batch (`aws-batch`): SubmitJob settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchDef {
    /// Job parameters.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// EC2 or FARGATE.
    #[serde(default)]
    pub platform_capabilities: Option<String>,
    /// Job tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Scheduling priority.
    #[serde(default)]
    pub scheduling_priority: Option<i64>,
    /// Propagate tags to the ECS task.
    #[serde(default)]
    pub propagate_tags: Option<bool>,
}

impl BatchDef {
    /// The custom Struct (AWSBatchConfig) and the platform capability for the task config.
    pub fn custom(&self) -> (Value, String) {
        let platform = self
            .platform_capabilities
            .clone()
            .unwrap_or_else(|| "EC2".into());
        let v = json!({
            "parameters": self.parameters,
            "schedulingPriority": self.scheduling_priority,
            "platformCapabilities": platform,
            "propagateTags": self.propagate_tags,
            "tags": self.tags,
        });
        (v, platform)
    }
}

/// One replica group of a distributed-training job.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaDef {
    /// Number of replicas.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Image (default: the task's).
    #[serde(default)]
    pub image: Option<String>,
    /// Resources per replica.
    #[serde(default)]
    pub resources: Option<ResourcesDef>,
    /// never, on_failure or always.
    #[serde(default)]
    pub restart_policy: Option<String>,
}

impl ReplicaDef {
    fn to_json(&self, default_replicas: Option<u32>) -> Result<Value, String> {
        let mut m = Map::new();
        m.insert("resources".into(), resources_json(self.resources.as_ref()));
        if let Some(r) = self.replicas.or(default_replicas) {
            m.insert("replicas".into(), json!(r));
        }
        if let Some(i) = &self.image {
            m.insert("image".into(), json!(i));
        }
        if let Some(p) = &self.restart_policy {
            let name = match p.as_str() {
                "never" => "RESTART_POLICY_NEVER",
                "on_failure" => "RESTART_POLICY_ON_FAILURE",
                "always" => "RESTART_POLICY_ALWAYS",
                other => {
                    return Err(format!(
                        "restart_policy `{other}` is not never, on_failure or always"
                    ));
                }
            };
            m.insert("restartPolicy".into(), json!(name));
        }
        Ok(Value::Object(m))
    }
}

/// Resources in flyteidl's proto-JSON shape (`{requests: [{name: CPU, value: "1"}]}`).
pub fn resources_json(r: Option<&ResourcesDef>) -> Value {
    let entries = |r: &ResourcesDef| -> Vec<Value> {
        resource_entries(r)
            .into_iter()
            .map(|e| json!({"name": e.name().as_str_name(), "value": e.value}))
            .collect()
    };
    let mut m = Map::new();
    if let Some(r) = r {
        let req = entries(r);
        if !req.is_empty() {
            m.insert("requests".into(), Value::Array(req));
        }
        if let Some(l) = &r.limits {
            m.insert("limits".into(), Value::Array(entries(l)));
        }
    }
    Value::Object(m)
}

/// The resource entries of `r` (CPU, GPU, memory, ephemeral storage), in flyteidl's terms.
pub fn resource_entries(r: &ResourcesDef) -> Vec<ResourceEntry> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    [
        (ResourceName::Cpu, r.cpu.as_ref().map(text)),
        (ResourceName::Gpu, r.gpu.as_ref().map(text)),
        (ResourceName::Memory, r.memory.clone()),
        (ResourceName::EphemeralStorage, r.ephemeral_storage.clone()),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        value.map(|value| ResourceEntry {
            name: name as i32,
            value,
        })
    })
    .collect()
}

/// Kubeflow run policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPolicyDef {
    /// none, running or all.
    #[serde(default)]
    pub clean_pod_policy: Option<String>,
    /// Seconds a finished job is kept.
    #[serde(default)]
    pub ttl_seconds_after_finished: Option<u32>,
    /// Deadline of the job in seconds.
    #[serde(default)]
    pub active_deadline_seconds: Option<u32>,
    /// Retries of the job.
    #[serde(default)]
    pub backoff_limit: Option<u32>,
}

impl RunPolicyDef {
    fn to_json(&self) -> Result<Value, String> {
        let policy = match self.clean_pod_policy.as_deref() {
            None => None,
            Some("none") => Some("CLEANPOD_POLICY_NONE"),
            Some("running") => Some("CLEANPOD_POLICY_RUNNING"),
            Some("all") => Some("CLEANPOD_POLICY_ALL"),
            Some(o) => {
                return Err(format!(
                    "clean_pod_policy `{o}` is not none, running or all"
                ));
            }
        };
        let mut m = Map::new();
        m.insert("cleanPodPolicy".into(), json!(policy));
        m.insert(
            "ttlSecondsAfterFinished".into(),
            json!(self.ttl_seconds_after_finished),
        );
        m.insert(
            "activeDeadlineSeconds".into(),
            json!(self.active_deadline_seconds),
        );
        m.insert("backoffLimit".into(), json!(self.backoff_limit));
        Ok(compact(m))
    }
}

/// PyTorchJob.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PyTorchDef {
    /// The master replica.
    #[serde(default)]
    pub master: Option<ReplicaDef>,
    /// Worker replicas.
    #[serde(default)]
    pub workers: Option<ReplicaDef>,
    /// Job policy.
    #[serde(default)]
    pub run_policy: Option<RunPolicyDef>,
    /// torchrun elastic training instead of master/worker.
    #[serde(default)]
    pub elastic: Option<ElasticDef>,
}

/// torchrun elastic settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticDef {
    /// Nodes: a number, or `min:max`.
    pub nnodes: Value,
    /// Processes per node.
    #[serde(default)]
    pub nproc_per_node: Option<u32>,
    /// Rendezvous backend (default c10d).
    #[serde(default)]
    pub rdzv_backend: Option<String>,
    /// Restarts allowed.
    #[serde(default)]
    pub max_restarts: Option<u32>,
}

impl PyTorchDef {
    /// DistributedPyTorchTrainingTask as proto JSON.
    pub fn custom(&self) -> Result<Value, String> {
        let mut m = Map::new();
        if let Some(e) = &self.elastic {
            let (min, max) = match &e.nnodes {
                Value::Number(n) => {
                    let n = n
                        .as_u64()
                        .ok_or("elastic.nnodes must be a positive number or `min:max`")?;
                    (n, n)
                }
                Value::String(s) => match s.split_once(':') {
                    Some((a, b)) => (
                        a.trim()
                            .parse()
                            .map_err(|_| format!("elastic.nnodes `{s}` is not min:max"))?,
                        b.trim()
                            .parse()
                            .map_err(|_| format!("elastic.nnodes `{s}` is not min:max"))?,
                    ),
                    None => {
                        let n = s
                            .trim()
                            .parse()
                            .map_err(|_| format!("elastic.nnodes `{s}` is not a number"))?;
                        (n, n)
                    }
                },
                _ => return Err("elastic.nnodes must be a number or `min:max`".into()),
            };
            if min == 0 || min > max {
                return Err(format!("elastic.nnodes {min}:{max} is not a valid range"));
            }
            m.insert(
                "workerReplicas".into(),
                json!({"replicas": min, "resources": {}}),
            );
            m.insert(
                "elasticConfig".into(),
                json!({
                    "rdzvBackend": e.rdzv_backend.clone().unwrap_or_else(|| "c10d".into()),
                    "minReplicas": min,
                    "maxReplicas": max,
                    "nprocPerNode": e.nproc_per_node.unwrap_or(1),
                    "maxRestarts": e.max_restarts.unwrap_or(0),
                }),
            );
        } else {
            m.insert(
                "masterReplicas".into(),
                self.master
                    .as_ref()
                    .unwrap_or(&ReplicaDef::default())
                    .to_json(Some(1))?,
            );
            m.insert(
                "workerReplicas".into(),
                self.workers
                    .as_ref()
                    .unwrap_or(&ReplicaDef::default())
                    .to_json(Some(1))?,
            );
        }
        if let Some(r) = &self.run_policy {
            m.insert("runPolicy".into(), r.to_json()?);
        }
        Ok(Value::Object(m))
    }
}

/// TFJob.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorFlowDef {
    /// Chief replica.
    #[serde(default)]
    pub chief: Option<ReplicaDef>,
    /// Worker replicas.
    #[serde(default)]
    pub workers: Option<ReplicaDef>,
    /// Parameter servers.
    #[serde(default)]
    pub ps: Option<ReplicaDef>,
    /// Evaluator.
    #[serde(default)]
    pub evaluator: Option<ReplicaDef>,
    /// Job policy.
    #[serde(default)]
    pub run_policy: Option<RunPolicyDef>,
}

impl TensorFlowDef {
    /// DistributedTensorflowTrainingTask as proto JSON.
    pub fn custom(&self) -> Result<Value, String> {
        let d = ReplicaDef::default();
        let mut m = Map::new();
        m.insert(
            "chiefReplicas".into(),
            self.chief.as_ref().unwrap_or(&d).to_json(None)?,
        );
        m.insert(
            "workerReplicas".into(),
            self.workers.as_ref().unwrap_or(&d).to_json(Some(1))?,
        );
        m.insert(
            "psReplicas".into(),
            self.ps.as_ref().unwrap_or(&d).to_json(None)?,
        );
        m.insert(
            "evaluatorReplicas".into(),
            self.evaluator.as_ref().unwrap_or(&d).to_json(None)?,
        );
        if let Some(r) = &self.run_policy {
            m.insert("runPolicy".into(), r.to_json()?);
        }
        Ok(Value::Object(m))
    }
}

/// MPIJob.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpiDef {
    /// Launcher replica.
    #[serde(default)]
    pub launcher: Option<ReplicaDef>,
    /// Worker replicas.
    #[serde(default)]
    pub workers: Option<ReplicaDef>,
    /// Slots per worker.
    #[serde(default)]
    pub slots: Option<u32>,
    /// Job policy.
    #[serde(default)]
    pub run_policy: Option<RunPolicyDef>,
}

impl MpiDef {
    /// DistributedMPITrainingTask as proto JSON.
    pub fn custom(&self) -> Result<Value, String> {
        let d = ReplicaDef::default();
        let mut m = Map::new();
        m.insert(
            "launcherReplicas".into(),
            self.launcher.as_ref().unwrap_or(&d).to_json(Some(1))?,
        );
        m.insert(
            "workerReplicas".into(),
            self.workers.as_ref().unwrap_or(&d).to_json(Some(1))?,
        );
        m.insert("slots".into(), json!(self.slots.unwrap_or(1)));
        if let Some(r) = &self.run_policy {
            m.insert("runPolicy".into(), r.to_json()?);
        }
        Ok(Value::Object(m))
    }
}

/// SparkApplication.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkDef {
    /// spark-submit configuration (`spark.executor.instances`, …).
    #[serde(default)]
    pub spark_conf: BTreeMap<String, String>,
    /// Hadoop configuration.
    #[serde(default)]
    pub hadoop_conf: BTreeMap<String, String>,
    /// The application file (default: flytekit's entrypoint in the image).
    #[serde(default)]
    pub main_application_file: Option<String>,
    /// Main class (Java/Scala).
    #[serde(default)]
    pub main_class: Option<String>,
    /// python (default), java, scala or r.
    #[serde(default)]
    pub application_type: Option<String>,
    /// Python interpreter of the executors.
    #[serde(default)]
    pub executor_path: Option<String>,
}

impl SparkDef {
    /// SparkJob as proto JSON.
    pub fn custom(&self) -> Result<Value, String> {
        let app = match self.application_type.as_deref() {
            None | Some("python") => None,
            Some("java") => Some("JAVA"),
            Some("scala") => Some("SCALA"),
            Some("r") => Some("R"),
            Some(o) => {
                return Err(format!(
                    "application_type `{o}` is not python, java, scala or r"
                ));
            }
        };
        let mut m = Map::new();
        m.insert("applicationType".into(), json!(app));
        m.insert(
            "mainApplicationFile".into(),
            json!(
                self.main_application_file
                    .clone()
                    .unwrap_or_else(|| "local:///opt/venv/bin/entrypoint.py".into())
            ),
        );
        m.insert("mainClass".into(), json!(self.main_class));
        m.insert("sparkConf".into(), json!(self.spark_conf));
        m.insert("hadoopConf".into(), json!(self.hadoop_conf));
        m.insert(
            "executorPath".into(),
            json!(
                self.executor_path
                    .clone()
                    .unwrap_or_else(|| "/opt/venv/bin/python3".into())
            ),
        );
        Ok(compact(m))
    }
}

/// Hive on Qubole.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiveDef {
    /// The query; `{{ .inputs.x }}` is replaced by input x.
    pub query: String,
    /// Qubole cluster label.
    #[serde(default)]
    pub cluster_label: Option<String>,
    /// Query timeout in seconds.
    #[serde(default)]
    pub timeout_sec: Option<u32>,
    /// Qubole retries.
    #[serde(default)]
    pub retry_count: Option<u32>,
    /// Qubole tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl HiveDef {
    /// QuboleHiveJob as proto JSON.
    pub fn custom(&self) -> Value {
        let mut q = Map::new();
        q.insert("query".into(), json!(self.query));
        q.insert("timeoutSec".into(), json!(self.timeout_sec));
        q.insert("retryCount".into(), json!(self.retry_count));
        let mut m = Map::new();
        m.insert("clusterLabel".into(), json!(self.cluster_label));
        m.insert("query".into(), compact(q));
        m.insert("tags".into(), json!(self.tags));
        compact(m)
    }
}

/// Athena.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AthenaDef {
    /// The query; `{{ .inputs.x }}` is replaced by input x.
    pub query: String,
    /// Database (schema).
    #[serde(default)]
    pub database: Option<String>,
    /// Catalog.
    #[serde(default)]
    pub catalog: Option<String>,
    /// Workgroup.
    #[serde(default)]
    pub workgroup: Option<String>,
}

impl AthenaDef {
    /// PrestoQuery as proto JSON.
    pub fn custom(&self) -> Value {
        let mut m = Map::new();
        m.insert("statement".into(), json!(self.query));
        m.insert("schema".into(), json!(self.database));
        m.insert("catalog".into(), json!(self.catalog));
        m.insert("routingGroup".into(), json!(self.workgroup));
        compact(m)
    }
}

/// EMR Serverless; keys as flytekit's plugin writes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmrServerlessDef {
    /// IAM role the job runs as.
    pub execution_role_arn: String,
    /// Existing application.
    #[serde(default)]
    pub application_id: Option<String>,
    /// Name of an application to create.
    #[serde(default)]
    pub application_name: Option<String>,
    /// SPARK (default) or HIVE.
    #[serde(default)]
    pub application_type: Option<String>,
    /// EMR release (default emr-7.0.0).
    #[serde(default)]
    pub release_label: Option<String>,
    /// AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// Script-mode Spark job.
    #[serde(default)]
    pub spark_job_driver: Option<SparkDriverDef>,
    /// Script-mode Hive job.
    #[serde(default)]
    pub hive_job_driver: Option<HiveDriverDef>,
    /// Job timeout in minutes (default 60).
    #[serde(default)]
    pub execution_timeout_minutes: Option<u32>,
    /// Extra spark-submit parameters.
    #[serde(default)]
    pub spark_submit_parameters: Option<String>,
    /// Application / monitoring configuration overrides.
    #[serde(default)]
    pub configuration_overrides: Option<Value>,
}

/// A Spark job driver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkDriverDef {
    /// S3 path of the application.
    pub entry_point: String,
    /// Its arguments.
    #[serde(default)]
    pub entry_point_arguments: Vec<String>,
    /// spark-submit parameters.
    #[serde(default)]
    pub spark_submit_parameters: Option<String>,
}

/// A Hive job driver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiveDriverDef {
    /// The query or its S3 path.
    pub query: String,
    /// Initialization query file.
    #[serde(default)]
    pub init_query_file: Option<String>,
    /// Query parameters.
    #[serde(default)]
    pub parameters: Option<String>,
}

impl EmrServerlessDef {
    /// The custom Struct as flytekit's EMRServerless config writes it.
    pub fn custom(&self) -> Result<Value, String> {
        let app_type = self
            .application_type
            .clone()
            .unwrap_or_else(|| "SPARK".into())
            .to_ascii_uppercase();
        if app_type != "SPARK" && app_type != "HIVE" {
            return Err(format!(
                "application_type `{app_type}` is not SPARK or HIVE"
            ));
        }
        if self.application_id.is_none() && self.application_name.is_none() {
            return Err("emr_serverless needs application_id or application_name".into());
        }
        let mut m = Map::new();
        m.insert("execution_role_arn".into(), json!(self.execution_role_arn));
        m.insert("application_id".into(), json!(self.application_id));
        m.insert("application_name".into(), json!(self.application_name));
        m.insert("application_type".into(), json!(app_type));
        m.insert(
            "release_label".into(),
            json!(
                self.release_label
                    .clone()
                    .unwrap_or_else(|| "emr-7.0.0".into())
            ),
        );
        m.insert("region".into(), json!(self.region));
        m.insert(
            "execution_timeout_minutes".into(),
            json!(self.execution_timeout_minutes.unwrap_or(60)),
        );
        m.insert(
            "spark_submit_parameters".into(),
            json!(self.spark_submit_parameters),
        );
        m.insert(
            "configuration_overrides".into(),
            self.configuration_overrides.clone().unwrap_or(Value::Null),
        );
        if let Some(d) = &self.spark_job_driver {
            let mut s = Map::new();
            s.insert("entryPoint".into(), json!(d.entry_point));
            if !d.entry_point_arguments.is_empty() {
                s.insert("entryPointArguments".into(), json!(d.entry_point_arguments));
            }
            s.insert(
                "sparkSubmitParameters".into(),
                json!(d.spark_submit_parameters),
            );
            m.insert("spark_job_driver".into(), compact(s));
        }
        if let Some(d) = &self.hive_job_driver {
            let mut h = Map::new();
            h.insert("query".into(), json!(d.query));
            h.insert("initQueryFile".into(), json!(d.init_query_file));
            h.insert("parameters".into(), json!(d.parameters));
            m.insert("hive_job_driver".into(), compact(h));
        }
        Ok(compact(m))
    }
}

/// A SageMaker job or endpoint: the boto3 create request with `{inputs.x}`, `{images.x}` and
/// `{idempotence_token}` placeholders.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SageMakerDef {
    /// The boto3 request (CreateTrainingJob, CreateProcessingJob, …).
    pub config: Value,
    /// AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// Image placeholders.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
}

impl SageMakerDef {
    /// The custom Struct.
    pub fn custom(&self) -> Result<Value, String> {
        if !self.config.is_object() {
            return Err("sagemaker.config must be a mapping (the boto3 request)".into());
        }
        let mut m = Map::new();
        m.insert("config".into(), self.config.clone());
        m.insert("region".into(), json!(self.region));
        if !self.images.is_empty() {
            m.insert("images".into(), json!(self.images));
        }
        Ok(compact(m))
    }
}

/// A Pythonic SageMaker job (the task function runs inside a training or processing job).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SageMakerJobDef {
    /// IAM role of the job.
    pub execution_role_arn: String,
    /// AWS region.
    pub region: String,
    /// Instance type (default ml.m5.large).
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Instance count (default 1).
    #[serde(default)]
    pub instance_count: Option<u32>,
    /// Volume size (default 30).
    #[serde(default)]
    pub volume_size_in_gb: Option<u32>,
    /// Max runtime (default 3600).
    #[serde(default)]
    pub max_runtime_in_seconds: Option<u32>,
}

impl SageMakerJobDef {
    /// The custom Struct as flytekit's PythonicJobConfig writes it.
    pub fn custom(&self) -> Value {
        json!({
            "execution_role_arn": self.execution_role_arn,
            "region": self.region,
            "instance_type": self.instance_type.clone().unwrap_or_else(|| "ml.m5.large".into()),
            "instance_count": self.instance_count.unwrap_or(1),
            "volume_size_in_gb": self.volume_size_in_gb.unwrap_or(30),
            "max_runtime_in_seconds": self.max_runtime_in_seconds.unwrap_or(3600),
            "job_name_prefix": "flyte-",
        })
    }
}

/// One boto3 call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotoDef {
    /// Service (`sagemaker`).
    pub service: String,
    /// Method (`describe_endpoint`).
    pub method: String,
    /// Request parameters.
    #[serde(default)]
    pub config: Value,
    /// AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// Image placeholders.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
}

impl BotoDef {
    /// The custom Struct.
    pub fn custom(&self) -> Value {
        json!({
            "service": self.service,
            "method": self.method,
            "config": if self.config.is_null() { json!({}) } else { self.config.clone() },
            "region": self.region,
            "images": if self.images.is_empty() { Value::Null } else { json!(self.images) },
        })
    }
}
