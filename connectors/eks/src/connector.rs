//! Native tasks on a cluster behind the connector contract: a start builds the attempt's objects and
//! creates them (finding them when a redelivered start made them already), a check observes them and,
//! once they ended, reads the outcome at the attempt's output prefix, an abort and a finalize delete them.
//! The handle holds references to the objects, so neither rebuilds them.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use updraft_connector::{
    Attempt, Connector, DataStore, Handle, Problem, Transient, failed, read_output_files,
};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::{ErrorKind, TaskStatus};

use crate::Object;
use crate::status::Observed;
use crate::{
    AttemptPaths, BuildError, Cluster, ClusterError, EksConfig, ObjectRef, build, plan_launch,
    status,
};

/// The name EKS handles carry.
const NAME: &str = "eks";

/// Runs native tasks (pods, Kubeflow jobs, Spark applications) on one cluster.
#[derive(Clone)]
pub struct EksConnector {
    /// None for a connector that only checks tasks (see [`EksConnector::checking`]).
    cluster: Option<Cluster>,
    config: EksConfig,
    /// How often a running attempt is looked at.
    pub poll: Duration,
}

/// What a start made: its objects, when (a pod's image pull is given its grace from then), and where the
/// task writes its outcome.
#[derive(Debug, Serialize, Deserialize)]
struct Made {
    objects: Vec<ObjectRef>,
    started_ms: u64,
    output_prefix: String,
    /// Its pod sends the runtime's end signal (see `wrap`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    signal: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The handle of `objects`, made now.
fn handle(objects: &[Object], paths: &AttemptPaths, signal: bool) -> Handle {
    let made = Made {
        objects: objects.iter().map(|o| o.reference()).collect(),
        started_ms: now_ms(),
        output_prefix: paths.output_prefix.clone(),
        signal,
    };
    Handle {
        connector: NAME.into(),
        // Strings and numbers only: it always serializes.
        value: serde_json::to_value(made).unwrap_or_default(),
    }
}

fn made(h: &Handle) -> Result<Made, Transient> {
    serde_json::from_value(h.value.clone())
        .map_err(|e| Transient(format!("not an {NAME} handle: {e}")))
}

impl EksConnector {
    /// Attempts on `cluster`, their objects built with `config`.
    pub fn new(cluster: Cluster, config: EksConfig) -> Self {
        Self {
            cluster: Some(cluster),
            config,
            poll: Duration::from_millis(100),
        }
    }

    /// Connects with a kubeconfig (see [`Cluster::from_kubeconfig`]), or, without one, to the EKS
    /// cluster the settings name with the AWS identity of the environment (see [`Cluster::from_eks`]).
    pub async fn connect(
        kubeconfig: Option<&Path>,
        config: EksConfig,
    ) -> Result<Self, ClusterError> {
        let mut cluster = match (kubeconfig, &config.cluster) {
            (None, Some(eks)) => {
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                Cluster::from_eks(eks, &sdk).await?
            }
            _ => Cluster::from_kubeconfig(kubeconfig).await?,
        };
        cluster.image_pull_grace = Duration::from_secs(config.image_pull_grace_seconds);
        Ok(Self::new(cluster, config))
    }

    /// A connector that serves and checks native tasks with `config` without reaching a cluster (a
    /// launcher's pre-flight check); it starts nothing.
    pub fn checking(config: EksConfig) -> Self {
        Self {
            cluster: None,
            config,
            poll: Duration::from_millis(100),
        }
    }

    fn cluster(&self) -> Result<&Cluster, String> {
        self.cluster
            .as_ref()
            .ok_or_else(|| "this connector only checks tasks: it has no cluster".to_string())
    }

    /// The cluster's settings.
    pub fn config(&self) -> &EksConfig {
        &self.config
    }

    /// Whether `a`'s pod (one of `objects`) takes its inputs from its environment: a Python task's
    /// pod under the wrapper or a raw container's under the copilot, its inputs small enough (see
    /// `wrap`).
    fn inlines(&self, a: &Attempt<'_>, objects: &[Object]) -> bool {
        self.config.task_wrapper
            && crate::wrap::inputs_fit(a, self.config.inline_inputs_max)
            && matches!(objects, [Object::Pod(p)] if crate::wrap::wraps(p))
    }
}

#[async_trait::async_trait]
impl Connector for EksConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Every native task: Python tasks, raw containers, pod tasks, PyTorch, TensorFlow, MPI, Spark.
    fn serves(&self, task: &CompiledTask) -> bool {
        task.plugin.is_native()
    }

    /// The task's objects must build (pod templates, resources, the copilot image, …).
    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        let launch = plan_launch(task, Default::default(), None);
        let paths = AttemptPaths::under("/preflight", &launch);
        match build(task, &launch, &paths, &self.config) {
            Ok(_) => Vec::new(),
            Err(BuildError::Task { field, reason, .. }) => vec![Problem { field, reason }],
            Err(e @ BuildError::NotNative { .. }) => vec![Problem {
                field: "type".into(),
                reason: e.to_string(),
            }],
        }
    }

    fn check_interval(&self) -> Duration {
        self.poll
    }

    fn inline_inputs(&self, a: &Attempt<'_>) -> bool {
        build(a.task, a.launch, a.paths, &self.config).is_ok_and(|o| self.inlines(a, &o))
    }

    /// The objects' references are the attempt's (their names are its); the start time is now.
    fn planned_handle(&self, a: &Attempt<'_>) -> Option<Handle> {
        let objects = build(a.task, a.launch, a.paths, &self.config).ok()?;
        let signals = self.config.task_wrapper
            && matches!(&objects[..], [Object::Pod(p)] if crate::wrap::wraps(p));
        Some(handle(&objects, a.paths, signals))
    }

    fn signals(&self, h: &Handle) -> bool {
        made(h).is_ok_and(|m| m.signal)
    }

    /// The objects other than a pod named after the attempt (a Spark application, a training job),
    /// and how to see a pod's logs.
    fn describe(&self, h: &Handle) -> updraft_connector::Described {
        let Ok(m) = made(h) else {
            return updraft_connector::Described::default();
        };
        let mut d = updraft_connector::Described::default();
        for o in &m.objects {
            if o.kind == "Pod" {
                d.logs.push(
                    updraft_connector::LogPlace::Pod {
                        namespace: o.namespace.clone(),
                        name: o.name.clone(),
                    }
                    .to_string(),
                );
            } else {
                d.external = format!("{}/{}", o.plural, o.name);
            }
        }
        d
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let mut objects = build(a.task, a.launch, a.paths, &self.config)
            .map_err(|e| failed("BuildError", e.to_string(), ErrorKind::User, false))?;
        let inline = self.inlines(a, &objects);
        let signal = a.signal.filter(|_| self.config.task_wrapper);
        let signals = match objects.as_mut_slice() {
            [Object::Pod(p)] => crate::wrap::wrap(p, a, inline, signal) && signal.is_some(),
            _ => false,
        };
        self.cluster()
            .map_err(|e| failed("Cluster", e, ErrorKind::System, false))?
            .start(&objects)
            .await
            .map_err(|e| failed("Cluster", e.to_string(), ErrorKind::System, true))?;
        Ok(handle(&objects, a.paths, signals))
    }

    async fn check(&self, h: &Handle, data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let m = made(h)?;
        let objects: Vec<_> = m.objects.iter().map(ObjectRef::object).collect();
        let pending_for = Duration::from_millis(now_ms().saturating_sub(m.started_ms));
        let observed = self
            .cluster()
            .map_err(Transient)?
            .check(&objects, pending_for)
            .await
            .map_err(|e| Transient(e.to_string()))?;
        if matches!(observed, Observed::Pending { .. }) {
            return Ok(TaskStatus::Queued);
        }
        if matches!(observed, Observed::Running) {
            return Ok(TaskStatus::Running);
        }
        let files = read_output_files(data, &m.output_prefix).await?;
        Ok(status::ended(&files, observed))
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        let objects: Vec<_> = made(h)?.objects.iter().map(ObjectRef::object).collect();
        self.cluster()
            .map_err(Transient)?
            .delete(&objects)
            .await
            .map_err(|e| Transient(e.to_string()))
    }

    /// Deletes a finished attempt's objects when the settings say so (`deleteOnFinish`).
    async fn finalize(&self, h: &Handle) -> Result<(), Transient> {
        if !self.config.delete_on_finish {
            return Ok(());
        }
        self.abort(h).await
    }
}
