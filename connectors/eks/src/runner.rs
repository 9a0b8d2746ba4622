//! Runs task attempts on a cluster from synchronous code (`updraft run --executor eks`): build the
//! objects, start them, watch them to their end, read the outcome at the output prefix, delete them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::outcome::OutputFiles;
use updraft_engine::exec::{ErrorKind, TaskLaunch, TaskStatus};

use crate::status::Observed;
use crate::{Cluster, ClusterError, EksConfig, Object, Paths, build};

/// Runs attempts on one cluster, with data in a local folder the cluster's containers also see.
pub struct EksRunner {
    rt: tokio::runtime::Runtime,
    cluster: Cluster,
    config: EksConfig,
    /// Attempts under way: name → their objects (removed on abort).
    running: Arc<Mutex<BTreeMap<String, Vec<Object>>>>,
    /// How often an attempt's state is read.
    pub poll: Duration,
}

fn failed(code: &str, message: String, kind: ErrorKind, recoverable: bool) -> TaskStatus {
    TaskStatus::Failed {
        code: code.into(),
        message,
        kind,
        recoverable,
    }
}

impl EksRunner {
    /// Connects with a kubeconfig (see [`Cluster::from_kubeconfig`]), or, without one, to the EKS
    /// cluster the configuration names with the AWS identity (see [`Cluster::from_eks`]).
    pub fn connect(kubeconfig: Option<&Path>, config: EksConfig) -> Result<Self, ClusterError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Config {
                path: "runtime".into(),
                reason: e.to_string(),
            })?;
        let mut cluster = match (kubeconfig, &config.cluster) {
            (None, Some(eks)) => rt.block_on(async {
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                Cluster::from_eks(eks, &sdk).await
            })?,
            _ => rt.block_on(Cluster::from_kubeconfig(kubeconfig))?,
        };
        cluster.image_pull_grace = Duration::from_secs(config.image_pull_grace_seconds);
        Ok(Self {
            rt,
            cluster,
            config,
            running: Arc::default(),
            poll: Duration::from_millis(100),
        })
    }

    /// Runs one attempt to its end. `dir` is the attempt's folder: `inputs.pb` is written there and the
    /// task writes under `dir/out`, paths the cluster's containers must see.
    pub fn run(&self, task: &CompiledTask, launch: &TaskLaunch, dir: &Path) -> TaskStatus {
        match self.try_run(task, launch, dir) {
            Ok(s) => s,
            Err(e) => failed("Cluster", e, ErrorKind::System, true),
        }
    }

    fn try_run(
        &self,
        task: &CompiledTask,
        launch: &TaskLaunch,
        dir: &Path,
    ) -> Result<TaskStatus, String> {
        use updraft_proto::Message;
        let out = dir.join("out");
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        std::fs::write(dir.join("inputs.pb"), launch.inputs.encode_to_vec())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let text = |p: PathBuf| p.display().to_string();
        let prev = (launch.attempt > 0).then(|| {
            text(
                dir.with_file_name((launch.attempt - 1).to_string())
                    .join("checkpoint"),
            )
        });
        let paths = Paths {
            input: text(dir.join("inputs.pb")),
            output_prefix: text(out.clone()),
            raw_output_prefix: text(dir.join("raw")),
            checkpoint_prefix: text(dir.join("checkpoint")),
            prev_checkpoint_prefix: prev,
        };
        let objects = match build(task, launch, &paths, &self.config) {
            Ok(o) => o,
            Err(e) => return Ok(failed("BuildError", e.to_string(), ErrorKind::User, false)),
        };
        if let Ok(mut r) = self.running.lock() {
            r.insert(launch.name.clone(), objects.clone());
        }
        self.rt
            .block_on(self.cluster.start(&objects))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut errors = 0u32;
        let observed = loop {
            let live = self
                .running
                .lock()
                .is_ok_and(|r| r.contains_key(&launch.name));
            if !live {
                return Ok(failed(
                    "Aborted",
                    "the attempt was aborted".into(),
                    ErrorKind::System,
                    false,
                ));
            }
            match self
                .rt
                .block_on(self.cluster.check(&objects, started.elapsed()))
            {
                Ok(Observed::Pending { .. } | Observed::Running) => errors = 0,
                Ok(end) => break end,
                // A passing API error: look again; one that lasts ends the attempt (a system failure,
                // retried by the engine), its objects deleted.
                Err(e) => {
                    errors += 1;
                    if errors >= 50 {
                        self.abort(&launch.name);
                        return Err(format!("the cluster kept failing: {e}"));
                    }
                }
            }
            std::thread::sleep(self.poll);
        };
        if let Ok(mut r) = self.running.lock() {
            r.remove(&launch.name);
        }
        if self.config.delete_on_finish {
            let _ = self.rt.block_on(self.cluster.delete(&objects));
        }
        let files = OutputFiles::read_with(|name| std::fs::read(out.join(name)).ok());
        Ok(crate::status::ended(&files, observed))
    }

    /// Deletes the objects of attempt `name`, if it runs; its `run` then returns.
    pub fn abort(&self, name: &str) {
        let objects = self.running.lock().ok().and_then(|mut r| r.remove(name));
        if let Some(objects) = objects {
            let _ = self.rt.block_on(self.cluster.delete(&objects));
        }
    }
}
