//! Native tasks on Kubernetes (EKS): the objects a task attempt becomes.
//!
//! [`build`] turns one task attempt ([`TaskLaunch`]) of a compiled task into the Kubernetes objects that run
//! it, as Flyte's Kubernetes plugins would:
//!
//! - python tasks and raw containers: a Pod from the container target;
//! - `pod_template` tasks and the legacy `sidecar` plugin: a Pod from the `k8s_pod` target's pod spec, its
//!   primary container completed with the rendered arguments and Updraft's variables;
//! - tasks naming a `pod_template_name`: the named template (from [`EksConfig::pod_templates`]) underneath;
//! - array elements (map tasks): one Pod per element, its index in `FLYTE_K8S_ARRAY_INDEX`;
//! - `pytorch`, `tensorflow`, `mpi`: a Kubeflow PyTorchJob, TFJob or MPIJob (`kubeflow.org/v1`);
//! - `spark`: a SparkApplication (`sparkoperator.k8s.io/v1beta2`).
//!
//! Every object is named after the attempt (deterministic, DNS-1123, at most 63 characters), labelled with
//! its execution, node and attempt, and placed in the namespace [`EksConfig::namespace`] gives.
//! Interruptible attempts get the configured node selector and tolerations.
//! The builders are pure: no cluster is needed, which is what `updraft plan` uses.

pub mod auth;
mod cluster;
mod config;
mod connector;
mod kubeflow;
pub mod pod;
mod spark;
pub mod status;
pub mod wrap;
mod yaml;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::TaskLaunch;
use updraft_engine::plugins::PluginKind;

pub use cluster::{Cluster, ClusterError};
pub use config::{EksConfig, Interruptible};
pub use connector::EksConnector;
pub use updraft_connector::AttemptPaths;
pub use updraft_connector::plan_launch;
pub use yaml::to_yaml;

/// A Kubernetes object to create.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A core/v1 Pod.
    Pod(Box<Pod>),
    /// A custom resource (Kubeflow jobs, Spark applications).
    Custom(Box<CustomObject>),
}

/// A custom resource, with the names the API needs to address it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomObject {
    /// API group (`kubeflow.org`).
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Kind (`PyTorchJob`).
    pub kind: String,
    /// Plural resource name (`pytorchjobs`).
    pub plural: String,
    /// Name, namespace, labels and annotations.
    pub metadata: ObjectMeta,
    /// The `spec`.
    pub spec: Value,
}

impl Object {
    /// Its metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Pod(p) => &p.metadata,
            Self::Custom(c) => &c.metadata,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> &str {
        match self {
            Self::Pod(_) => "Pod",
            Self::Custom(c) => &c.kind,
        }
    }

    /// The object as the API takes it (with `apiVersion` and `kind`).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Pod(p) => {
                let mut v = serde_json::to_value(p.as_ref()).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("apiVersion".into(), "v1".into());
                    m.insert("kind".into(), "Pod".into());
                }
                v
            }
            Self::Custom(c) => serde_json::json!({
                "apiVersion": format!("{}/{}", c.group, c.version),
                "kind": c.kind,
                "metadata": serde_json::to_value(&c.metadata).unwrap_or(Value::Null),
                "spec": c.spec,
            }),
        }
    }
}

/// Where an object lives and how the API addresses it: enough to look at or delete it later (a check
/// message carries these instead of the whole object).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    /// API group; empty for core objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Object {
    /// Its address.
    pub fn reference(&self) -> ObjectRef {
        let m = self.metadata();
        let (group, version, plural) = match self {
            Self::Pod(_) => (String::new(), "v1".to_string(), "pods".to_string()),
            Self::Custom(c) => (c.group.clone(), c.version.clone(), c.plural.clone()),
        };
        ObjectRef {
            group,
            version,
            kind: self.kind().into(),
            plural,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        }
    }
}

impl ObjectRef {
    /// An object with only this address, which is all [`Cluster::check`] and [`Cluster::delete`] read.
    pub fn object(&self) -> Object {
        let metadata = ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        };
        if self.group.is_empty() && self.kind == "Pod" {
            return Object::Pod(Box::new(Pod {
                metadata,
                ..Default::default()
            }));
        }
        Object::Custom(Box::new(CustomObject {
            group: self.group.clone(),
            version: self.version.clone(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
            metadata,
            spec: Value::Null,
        }))
    }
}

/// Why a task cannot become Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The plugin is not a native (Kubernetes) one.
    #[error("task `{task}` is a {plugin} task, which does not run on Kubernetes")]
    NotNative {
        /// Task name.
        task: String,
        /// Its plugin.
        plugin: String,
    },
    /// The task's definition lacks something the object needs.
    #[error("task `{task}`: {field}: {reason}")]
    Task {
        /// Task name.
        task: String,
        /// The field at fault.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) fn task_error(task: &str, field: &str, reason: impl Into<String>) -> BuildError {
    BuildError::Task {
        task: task.into(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// The objects that run one attempt of `task`.
pub fn build(
    task: &CompiledTask,
    launch: &TaskLaunch,
    paths: &AttemptPaths,
    config: &EksConfig,
) -> Result<Vec<Object>, BuildError> {
    let base = pod::Base::new(task, launch, paths, config)?;
    Ok(match task.plugin {
        PluginKind::Container | PluginKind::Pod => vec![Object::Pod(Box::new(base.pod()))],
        PluginKind::PyTorch | PluginKind::TensorFlow | PluginKind::Mpi => {
            vec![Object::Custom(Box::new(kubeflow::job(&base)?))]
        }
        PluginKind::Spark => vec![Object::Custom(Box::new(spark::application(&base)?))],
        other => {
            return Err(BuildError::NotNative {
                task: task.name.clone(),
                plugin: other.to_string(),
            });
        }
    })
}
