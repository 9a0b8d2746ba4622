//! Updraft's settings file: one YAML (or JSON) file that `updraft run`, `plan` and `deploy` read with
//! `--settings F`, and the deployed functions read from `UPDRAFT_SETTINGS`.
//!
//! ```yaml
//! data:
//!   prefix: s3://my-bucket/updraft        # where attempts' data live (default: the local state folder)
//! aws:
//!   region: eu-west-1                     # default: the SDK's own configuration
//!   endpoint: http://127.0.0.1:5000       # optional; AWS_ENDPOINT_URL works too
//! eks: { namespace: ml-{{domain}} }       # the cluster settings of native tasks
//! batch:
//!   jobQueue: arn:aws:batch:…:job-queue/ml
//!   jobRoleArn: arn:aws:iam::…:role/ml-batch-job
//! sagemaker:
//!   roleArn: arn:aws:iam::…:role/ml-sagemaker
//!   prebuiltAlgorithms:                   # images of the legacy built-in algorithm jobs
//!     - name: xgboost
//!       regionalConfigs:
//!         - region: eu-west-1
//!           versionConfigs: [{version: "1.7", image: 141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:1.7-1}]
//! athena:
//!   outputLocation: s3://my-bucket/athena  # default: each attempt's raw output prefix
//!   workgroup: analytics                   # of queries whose task names none (default: primary)
//! hive:
//!   engine: qubole                         # or emr-serverless, or athena
//! qubole:
//!   endpoint: https://us.qubole.com
//!   tokenSecretArn: arn:aws:secretsmanager:…:secret:qubole  # or token: … (never logged)
//!   defaultClusterLabel: default
//! emrServerless:
//!   applicationId: 00f5abc123def456        # the application Hive queries run on
//!   executionRoleArn: arn:aws:iam::…:role/emr-jobs
//! ```
//!
//! Every key is optional. An unknown key is an error naming the file and the key's place
//! ([`SettingsError`]); so is a value of the wrong kind. The keys are described in `docs/settings.md`
//! and `updraft-settings.schema.json` beside this crate.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The top-level keys of a settings file.
pub const SECTIONS: &[&str] = &[
    "data",
    "aws",
    "eks",
    "batch",
    "sagemaker",
    "athena",
    "hive",
    "qubole",
    "emrServerless",
];

/// The whole settings file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Settings {
    /// Where attempts' data live.
    pub data: DataSettings,
    /// How the AWS services are reached.
    pub aws: AwsSettings,
    /// The cluster settings of native tasks (checked by the EKS connector); absent: no cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eks: Option<serde_json::Value>,
    /// AWS Batch tasks.
    pub batch: BatchSettings,
    /// SageMaker tasks.
    pub sagemaker: SageMakerSettings,
    /// Athena queries (`presto` tasks, and `hive` tasks on the `athena` engine).
    pub athena: AthenaSettings,
    /// Which engine runs `hive` tasks.
    pub hive: HiveSettings,
    /// Qubole, where `hive` tasks run on the `qubole` engine.
    pub qubole: QuboleSettings,
    /// EMR Serverless: `hive` tasks on the `emr-serverless` engine, defaults of `emr_serverless` tasks.
    pub emr_serverless: EmrServerlessSettings,
}

/// `data`: where attempts' data live.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DataSettings {
    /// `s3://bucket/prefix`; unset: attempts' data stay in the local state folder (`updraft run`) or
    /// the stack's bucket (deployed). Tasks that run on an AWS service need it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `aws`: how the AWS services are reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AwsSettings {
    /// The region; default: the SDK's own configuration (`AWS_REGION`, the profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// One endpoint for every service (an S3-compatible or emulated AWS); default: the SDK's own
    /// configuration, `AWS_ENDPOINT_URL` included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// `batch`: AWS Batch tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BatchSettings {
    /// The job queue (name or ARN) of tasks whose configuration names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_queue: Option<String>,
    /// The IAM role jobs run as (the job definition's `jobRoleArn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_role_arn: Option<String>,
    /// The IAM role Batch starts jobs with (the job definition's `executionRoleArn`): it reads the
    /// Secrets Manager secrets of tasks with `secret_requests`, which need it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
}

/// `sagemaker`: SageMaker tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SageMakerSettings {
    /// The execution role of jobs whose request names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// The images of the built-in algorithms the legacy `sagemaker_training_job_task` and
    /// `sagemaker_hyperparameter_tuning_job_task` train with, as Flyte's SageMaker plugin configures
    /// them; default: Flyte's (XGBoost 0.90 in us-east-1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prebuilt_algorithms: Option<Vec<PrebuiltAlgorithm>>,
}

/// `athena`: Athena queries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AthenaSettings {
    /// Where query results are written (`s3://…`); default: each attempt's raw output prefix, as in
    /// Flyte. A workgroup that enforces its own location overrides both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_location: Option<String>,
    /// The workgroup of queries whose task names none; default `primary`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workgroup: Option<String>,
    /// The data catalog of queries whose task names none; default `AwsDataCatalog`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
}

/// `hive`: which engine runs `hive` tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HiveSettings {
    /// The engine; default `qubole`.
    pub engine: HiveEngine,
}

/// An engine that runs `hive` tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HiveEngine {
    /// Qubole's commands API, as Flyte's Qubole plugin drives it.
    #[default]
    Qubole,
    /// A Hive job run on an EMR Serverless application (`emrServerless`).
    EmrServerless,
    /// An Athena query, as Flyte's Athena plugin runs `hive` tasks (database = the cluster label).
    Athena,
}

impl HiveEngine {
    /// The engine's name in settings files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qubole => "qubole",
            Self::EmrServerless => "emr-serverless",
            Self::Athena => "athena",
        }
    }
}

/// `qubole`: Qubole's API, where `hive` tasks run on the `qubole` engine.
#[derive(Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct QuboleSettings {
    /// The API's base URL; default `https://api.qubole.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The API token (`X-AUTH-TOKEN`); prefer `tokenSecretArn` in AWS. Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The Secrets Manager secret holding the token (its `SecretString`), read when first needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_secret_arn: Option<String>,
    /// The cluster label of queries whose task names none; default `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_cluster_label: Option<String>,
}

impl std::fmt::Debug for QuboleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuboleSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("token_secret_arn", &self.token_secret_arn)
            .field("default_cluster_label", &self.default_cluster_label)
            .finish()
    }
}

/// `emrServerless`: EMR Serverless.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EmrServerlessSettings {
    /// The application (id, or name looked up) `hive` tasks run on with the `emr-serverless` engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    /// The role job runs run as, where the task names none (`hive` tasks always).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
}

/// One built-in algorithm's images, per region and version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrebuiltAlgorithm {
    /// The algorithm's name, as `flyteidl.plugins.sagemaker.AlgorithmName` spells it (case ignored).
    pub name: String,
    /// Its images in each region.
    #[serde(default)]
    pub regional_configs: Vec<RegionalAlgorithm>,
}

/// An algorithm's images in one region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegionalAlgorithm {
    /// The region (case ignored).
    pub region: String,
    /// The image of each version.
    #[serde(default)]
    pub version_configs: Vec<AlgorithmVersion>,
}

/// The image of one version of an algorithm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlgorithmVersion {
    /// The version (`0.90`, `1.7-1`): compared by its numbers.
    pub version: String,
    /// The image URI.
    pub image: String,
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct SettingsError {
    /// The file (or the variable) the settings came from.
    pub origin: String,
    /// What is wrong, naming the key.
    pub reason: String,
}

impl SettingsError {
    fn new(origin: &str, reason: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            reason: reason.into(),
        }
    }
}

/// Reads a value of `T` from a JSON value, naming the key that is wrong (`batch: unknown field …`).
pub fn from_value<T: serde::de::DeserializeOwned>(
    origin: &str,
    section: &str,
    value: serde_json::Value,
) -> Result<T, SettingsError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = match (section.is_empty(), path.as_str()) {
            (true, ".") => String::new(),
            (true, p) => format!("{p}: "),
            (false, ".") => format!("{section}: "),
            (false, p) => format!("{section}.{p}: "),
        };
        SettingsError::new(origin, format!("{at}{}", e.into_inner()))
    })
}

impl Settings {
    /// Reads a settings file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::new(&origin, format!("cannot read: {e}")))?;
        Self::parse(&origin, &text)
    }

    /// Reads settings from text (YAML or JSON); `origin` names where it came from in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, SettingsError> {
        let value = yaml_value(origin, text)?;
        let settings: Self = from_value(origin, "", value)?;
        settings.check(origin)?;
        Ok(settings)
    }

    /// Reads `--eks-config F`: a settings file, or (as before settings files) the cluster settings
    /// alone, which become the `eks` section.
    pub fn load_eks_alias(path: &Path) -> Result<Self, SettingsError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::new(&origin, format!("cannot read: {e}")))?;
        let value = yaml_value(&origin, &text)?;
        let whole = value
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.keys().all(|k| SECTIONS.contains(&k.as_str())));
        if whole {
            return Self::parse(&origin, &text);
        }
        Ok(Self {
            eks: Some(value),
            ..Self::default()
        })
    }

    /// Checks what the types do not: prefixes and endpoints are of a known kind.
    fn check(&self, origin: &str) -> Result<(), SettingsError> {
        if let Some(p) = &self.data.prefix {
            if p.trim().is_empty() {
                return Err(SettingsError::new(origin, "data.prefix: empty"));
            }
            if !p.starts_with("s3://") || p.trim_end_matches('/') == "s3:" {
                return Err(SettingsError::new(
                    origin,
                    format!(
                        "data.prefix: `{p}` is not an s3:// URI (leave it unset to keep attempts' \
                         data in the local state folder, --state-dir)"
                    ),
                ));
            }
        }
        for (key, url) in [
            ("aws.endpoint", &self.aws.endpoint),
            ("qubole.endpoint", &self.qubole.endpoint),
        ] {
            if let Some(e) = url
                && !(e.starts_with("http://") || e.starts_with("https://"))
            {
                return Err(SettingsError::new(
                    origin,
                    format!("{key}: `{e}` is not an http:// or https:// URL"),
                ));
            }
        }
        if let Some(l) = &self.athena.output_location
            && !l.starts_with("s3://")
        {
            return Err(SettingsError::new(
                origin,
                format!("athena.outputLocation: `{l}` is not an s3:// URI"),
            ));
        }
        Ok(())
    }

    /// The data prefix as an `s3://` URI, for tasks that run on an AWS service; the error says where
    /// to set one.
    pub fn s3_prefix(&self) -> Result<&str, String> {
        match self.data.prefix.as_deref() {
            Some(p) if p.starts_with("s3://") => Ok(p.trim_end_matches('/')),
            Some(_) | None => Err(
                "this task runs on an AWS service, which reads and writes its data in S3; give a \
                 settings file (--settings) with data.prefix set to an s3:// URI"
                    .into(),
            ),
        }
    }

    /// The settings as one line of JSON (how the stack hands them to its functions).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

fn yaml_value(origin: &str, text: &str) -> Result<serde_json::Value, SettingsError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let value: serde_json::Value = serde_norway::from_str(text)
        .map_err(|e| SettingsError::new(origin, format!("not YAML or JSON: {e}")))?;
    match value {
        serde_json::Value::Null => Ok(serde_json::Value::Object(Default::default())),
        v @ serde_json::Value::Object(_) => Ok(v),
        _ => Err(SettingsError::new(
            origin,
            "settings are a mapping of keys (data, aws, eks, batch, sagemaker)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
data: {prefix: s3://bucket/updraft}
aws: {region: eu-west-1, endpoint: http://127.0.0.1:5000}
eks: {namespace: ml}
batch: {jobQueue: ml-queue, jobRoleArn: arn:aws:iam::123456789012:role/batch}
sagemaker:
  roleArn: arn:aws:iam::123456789012:role/sagemaker
  prebuiltAlgorithms:
    - name: xgboost
      regionalConfigs: [{region: eu-west-1, versionConfigs: [{version: '1.7', image: xgb:1.7}]}]
athena: {outputLocation: s3://bucket/athena, workgroup: analytics, catalog: lake}
hive: {engine: emr-serverless}
qubole:
  endpoint: http://127.0.0.1:8090
  token: secret-token
  tokenSecretArn: arn:aws:secretsmanager:eu-west-1:123456789012:secret:qubole
  defaultClusterLabel: etl
emrServerless: {applicationId: 00f5abc123def456, executionRoleArn: arn:aws:iam::123456789012:role/emr}
";

    #[test]
    fn every_key_reads() {
        let s = Settings::parse("f.yaml", FULL).unwrap();
        assert_eq!(s.data.prefix.as_deref(), Some("s3://bucket/updraft"));
        assert_eq!(s.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.aws.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(s.eks, Some(serde_json::json!({"namespace": "ml"})));
        assert_eq!(s.batch.job_queue.as_deref(), Some("ml-queue"));
        assert!(s.batch.job_role_arn.unwrap().ends_with("role/batch"));
        assert!(s.sagemaker.role_arn.unwrap().ends_with("role/sagemaker"));
        let algorithms = s.sagemaker.prebuilt_algorithms.unwrap();
        assert_eq!(
            algorithms[0].regional_configs[0].version_configs[0].image,
            "xgb:1.7"
        );
        assert_eq!(
            s3(&Settings::parse("f", FULL).unwrap()),
            "s3://bucket/updraft"
        );
        assert_eq!(s.athena.workgroup.as_deref(), Some("analytics"));
        assert_eq!(s.hive.engine, HiveEngine::EmrServerless);
        assert_eq!(s.qubole.default_cluster_label.as_deref(), Some("etl"));
        assert_eq!(
            s.emr_serverless.application_id.as_deref(),
            Some("00f5abc123def456")
        );
        let shown = format!("{:?}", s.qubole);
        assert!(!shown.contains("secret-token"), "{shown}");
        assert_eq!(Settings::default().hive.engine, HiveEngine::Qubole);
    }

    fn s3(s: &Settings) -> &str {
        s.s3_prefix().unwrap()
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Settings::parse("f.yaml", "batch: {jobQeue: q}\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("f.yaml: batch.jobQeue: unknown field `jobQeue`"),
            "{text}"
        );
        assert!(text.contains("jobQueue"), "{text}");
        let e = Settings::parse("f.yaml", "sagemker: {}\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `sagemker`"), "{e}");
        let e = Settings::parse("f.yaml", "data: {prefix: 3}\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.yaml: data.prefix: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn values_are_checked() {
        let e = Settings::parse("f", "data: {prefix: 'gs://b/p'}").unwrap_err();
        assert!(e.to_string().contains("data.prefix: `gs://b/p`"), "{e}");
        let e = Settings::parse("f", "aws: {endpoint: localhost:5000}").unwrap_err();
        assert!(e.to_string().contains("aws.endpoint"), "{e}");
        let e = Settings::parse("f", "qubole: {endpoint: api.qubole.com}").unwrap_err();
        assert!(e.to_string().contains("qubole.endpoint"), "{e}");
        let e = Settings::parse("f", "athena: {outputLocation: /tmp/a}").unwrap_err();
        assert!(e.to_string().contains("athena.outputLocation"), "{e}");
        let e = Settings::parse("f", "hive: {engine: presto}").unwrap_err();
        assert!(
            e.to_string().contains("hive.engine") && e.to_string().contains("emr-serverless"),
            "{e}"
        );
        let e = Settings::parse("f", "- a").unwrap_err();
        assert!(e.to_string().contains("mapping"), "{e}");
        assert_eq!(Settings::parse("f", "").unwrap(), Settings::default());
    }

    #[test]
    fn s3_prefix_says_what_is_missing() {
        let none = Settings::default();
        assert!(none.s3_prefix().unwrap_err().contains("--settings"));
        let e = Settings::parse("f", "data: {prefix: /tmp/x}").unwrap_err();
        assert!(
            e.to_string()
                .contains("data.prefix: `/tmp/x` is not an s3:// URI"),
            "{e}"
        );
    }

    #[test]
    fn eks_alias_takes_either_form() {
        let dir = std::env::temp_dir().join(format!("updraft-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bare = dir.join("eks.yaml");
        std::fs::write(&bare, "namespace: ml\nserviceAccount: runner\n").unwrap();
        let s = Settings::load_eks_alias(&bare).unwrap();
        assert_eq!(
            s.eks,
            Some(serde_json::json!({"namespace": "ml", "serviceAccount": "runner"}))
        );
        let whole = dir.join("settings.yaml");
        std::fs::write(&whole, FULL).unwrap();
        assert_eq!(
            Settings::load_eks_alias(&whole).unwrap(),
            Settings::parse("x", FULL).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The JSON Schema beside the crate names exactly the keys the loader reads.
    #[test]
    fn schema_matches_the_loader() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../updraft-settings.schema.json")).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        let props = schema["properties"].as_object().unwrap();
        let top: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut want = SECTIONS.to_vec();
        want.sort();
        let mut got = top.clone();
        got.sort();
        assert_eq!(got, want);
        let full: serde_json::Value = serde_norway::from_str(FULL).unwrap();
        for section in [
            "data",
            "aws",
            "batch",
            "sagemaker",
            "athena",
            "hive",
            "qubole",
            "emrServerless",
        ] {
            let s = &props[section];
            assert_eq!(s["additionalProperties"], false, "{section}");
            let mut keys: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
            keys.sort();
            let mut example: Vec<&String> = full[section].as_object().unwrap().keys().collect();
            example.sort();
            assert_eq!(
                keys, example,
                "{section}: the schema's keys and the loader's"
            );
        }
    }
}
