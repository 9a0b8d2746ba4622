//! Which plugin serves each task type string (`TaskTemplate.type`), as flytekit writes them.

use std::fmt;

/// The plugin family that runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    /// A container (python-task, raw-container, sqlite): a pod on EKS, a process locally.
    Container,
    /// A pod from a `k8s_pod` target (pod_template tasks, legacy sidecar).
    Pod,
    /// Kubeflow PyTorchJob.
    PyTorch,
    /// Kubeflow TFJob.
    TensorFlow,
    /// Kubeflow MPIJob.
    Mpi,
    /// Spark operator SparkApplication.
    Spark,
    /// AWS Batch job.
    Batch,
    /// Hive through Qubole.
    Hive,
    /// Athena (presto task type).
    Athena,
    /// EMR Serverless job run.
    EmrServerless,
    /// SageMaker jobs, endpoints and boto calls.
    SageMaker,
    /// Served inside the engine (echo).
    Echo,
}

impl PluginKind {
    /// A short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Pod => "pod",
            Self::PyTorch => "pytorch",
            Self::TensorFlow => "tensorflow",
            Self::Mpi => "mpi",
            Self::Spark => "spark",
            Self::Batch => "aws-batch",
            Self::Hive => "hive",
            Self::Athena => "athena",
            Self::EmrServerless => "emr-serverless",
            Self::SageMaker => "sagemaker",
            Self::Echo => "echo",
        }
    }

    /// True for plugins that run on the EKS cluster (or as local processes).
    pub fn is_native(self) -> bool {
        matches!(
            self,
            Self::Container
                | Self::Pod
                | Self::PyTorch
                | Self::TensorFlow
                | Self::Mpi
                | Self::Spark
        )
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every task type string Updraft serves, with its plugin.
pub const TASK_TYPES: &[(&str, PluginKind)] = &[
    ("python-task", PluginKind::Container),
    ("raw-container", PluginKind::Container),
    ("container", PluginKind::Container),
    ("sqlite", PluginKind::Container),
    ("sidecar", PluginKind::Pod),
    ("pod", PluginKind::Pod),
    ("pytorch", PluginKind::PyTorch),
    ("tensorflow", PluginKind::TensorFlow),
    ("mpi", PluginKind::Mpi),
    ("spark", PluginKind::Spark),
    ("aws-batch", PluginKind::Batch),
    ("hive", PluginKind::Hive),
    ("presto", PluginKind::Athena),
    ("emr_serverless", PluginKind::EmrServerless),
    ("sagemaker-training-job", PluginKind::SageMaker),
    ("sagemaker-processing-job", PluginKind::SageMaker),
    ("sagemaker-hyperparameter-tuning-job", PluginKind::SageMaker),
    ("sagemaker-transform-job", PluginKind::SageMaker),
    ("sagemaker-training-task", PluginKind::SageMaker),
    ("sagemaker-processing-task", PluginKind::SageMaker),
    ("sagemaker-endpoint", PluginKind::SageMaker),
    ("boto", PluginKind::SageMaker),
    ("sagemaker_training_job_task", PluginKind::SageMaker),
    ("sagemaker_custom_training_job_task", PluginKind::SageMaker),
    (
        "sagemaker_hyperparameter_tuning_job_task",
        PluginKind::SageMaker,
    ),
    ("echo", PluginKind::Echo),
];

/// The plugin for a task type and target; a python-task with a `k8s_pod` target is a pod.
pub fn plugin_for(task_type: &str, has_pod_target: bool) -> Option<PluginKind> {
    let kind = TASK_TYPES
        .iter()
        .find(|(t, _)| *t == task_type)
        .map(|(_, k)| *k)?;
    Some(if kind == PluginKind::Container && has_pod_target {
        PluginKind::Pod
    } else {
        kind
    })
}

/// The name of a pod task's primary container: the `k8s_pod` target's, else the task config's
/// `primary_container_name` (as flytekit writes it), else `primary`.
pub fn primary_container_name(
    task: &updraft_proto::core::TaskTemplate,
    pod: &updraft_proto::core::K8sPod,
) -> String {
    if pod.primary_container_name.is_empty() {
        task.config
            .get("primary_container_name")
            .cloned()
            .unwrap_or_else(|| "primary".into())
    } else {
        pod.primary_container_name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_types() {
        assert_eq!(
            plugin_for("python-task", false),
            Some(PluginKind::Container)
        );
        assert_eq!(plugin_for("python-task", true), Some(PluginKind::Pod));
        assert_eq!(plugin_for("presto", false), Some(PluginKind::Athena));
        assert_eq!(plugin_for("dask", false), None);
        assert!(PluginKind::Spark.is_native());
        assert!(!PluginKind::Batch.is_native());
    }
}
