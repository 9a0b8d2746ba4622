//! Runs task attempts on this machine as processes — never through a shell.
//!
//! - **Python tasks** (`python-task`, and the container of any Python-based plugin task) run their
//!   container arguments — flytekit's `pyflyte-execute …` — with placeholders rendered, in the configured
//!   Python environment. The outcome is read from the output prefix: `outputs.pb` (success), `error.pb`
//!   (failure, with its kind), `futures.pb` (a dynamic task's sub-workflow), nothing and a non-zero exit
//!   (a system failure).
//! - **Raw containers** (`raw-container` with `data_config`): the inputs are written as files (one per
//!   input, plus `inputs.pb`) into a folder standing for the container's input path, and each declared
//!   output is read back from its file in the folder standing for its output path (`_ERROR` means
//!   failure). With a container engine ([`Containers::Engine`]: docker or podman) the image runs with the
//!   two folders mounted at the container's paths; without one, the command runs as a process with those
//!   paths in its arguments pointed at the folders.
//!
//! - **Pod tasks** (a `k8s_pod` target: `pod_template`, the legacy `sidecar`) run their primary container
//!   as above; the pod's other containers are not started on this machine.
//!
//! Each attempt has its own folder: `<root>/<node>[-<index>]/<attempt>/` with `inputs.pb`, the output
//! prefix `out/`, raw output data `raw/`, and the captured `stdout.log` / `stderr.log`.

mod containers;

pub use containers::{ContainerChoice, Containers, detect};

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use updraft_engine::exec::outcome::{OutputFiles, from_output_files};
use updraft_engine::exec::{ErrorKind, TaskLaunch, TaskStatus};
use updraft_engine::literal;
use updraft_engine::template::{self, Vars};
use updraft_proto::Message;
use updraft_proto::core::{
    Container, K8sPod, KeyValuePair, LiteralType, TaskTemplate, task_template::Target,
};

/// Where and how attempts run.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// The execution's folder.
    pub root: PathBuf,
    /// The Python interpreter of the user's environment (its folder holds `pyflyte-execute`); when unset,
    /// `pyflyte-execute` is looked up on PATH.
    pub python: Option<PathBuf>,
    /// How raw containers run.
    pub containers: Containers,
    /// Running attempts by name, and whether a container engine runs them.
    running: Arc<Mutex<BTreeMap<String, (Child, bool)>>>,
}

/// Why an attempt could not even start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The task has no container target this executor can run.
    #[error("the task has no container to run locally ({0})")]
    NoContainer(String),
    /// Argument templates did not render.
    #[error("{0}")]
    Template(#[from] template::TemplateError),
    /// File system or process trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The inputs of a raw container could not be written.
    #[error("{0}")]
    Data(String),
}

fn failed(
    kind: ErrorKind,
    recoverable: bool,
    code: &str,
    message: impl Into<String>,
) -> TaskStatus {
    TaskStatus::Failed {
        code: code.into(),
        message: message.into(),
        kind,
        recoverable,
    }
}

impl LocalExecutor {
    /// An executor writing under `root`.
    pub fn new(root: PathBuf, python: Option<PathBuf>) -> Self {
        Self {
            root,
            python,
            containers: Containers::Process,
            running: Arc::default(),
        }
    }

    /// The same executor, running raw containers as `containers` says.
    pub fn with_containers(mut self, containers: Containers) -> Self {
        self.containers = containers;
        self
    }

    /// The folder of one attempt.
    pub fn attempt_dir(&self, t: &TaskLaunch) -> PathBuf {
        let node = match t.index {
            Some(i) => format!("{}-{i}", t.node_id),
            None => t.node_id.clone(),
        };
        self.root.join(node).join(t.attempt.to_string())
    }

    /// Runs one attempt to its end (blocking) and reports its outcome.
    pub fn run(
        &self,
        t: &TaskLaunch,
        task: &TaskTemplate,
        outputs: &BTreeMap<String, LiteralType>,
    ) -> TaskStatus {
        match self.try_run(t, task, outputs) {
            Ok(s) => s,
            Err(LocalError::Io(e)) => failed(ErrorKind::System, true, "LocalIo", e.to_string()),
            Err(e) => failed(ErrorKind::User, false, "LocalSetup", e.to_string()),
        }
    }

    /// Kills the process of attempt `name`, if it runs (and removes its container, when an engine runs it).
    pub fn abort(&self, name: &str) {
        if let Ok(mut running) = self.running.lock()
            && let Some((mut child, in_engine)) = running.remove(name)
        {
            // Killing the engine's client would leave the container running: remove it first.
            if let (true, Containers::Engine { program, .. }) = (in_engine, &self.containers) {
                let _ = Command::new(program)
                    .args(["rm", "-f", name])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_run(
        &self,
        t: &TaskLaunch,
        task: &TaskTemplate,
        outputs: &BTreeMap<String, LiteralType>,
    ) -> Result<TaskStatus, LocalError> {
        let dir = self.attempt_dir(t);
        let out = dir.join("out");
        let raw = dir.join("raw");
        for d in [&out, &raw] {
            std::fs::create_dir_all(d)?;
        }
        let inputs_pb = dir.join("inputs.pb");
        std::fs::write(&inputs_pb, t.inputs.encode_to_vec())?;
        let container = match &task.target {
            Some(Target::Container(c)) => c.clone(),
            Some(Target::K8sPod(pod)) => primary_container(task, pod)?,
            _ => {
                return Err(LocalError::NoContainer(format!(
                    "task type `{}`",
                    task.r#type
                )));
            }
        };
        let prev = (t.attempt > 0).then(|| {
            dir.with_file_name((t.attempt - 1).to_string())
                .join("checkpoint")
                .display()
                .to_string()
        });
        let (inp, outp, rawp, ckpt) = (
            inputs_pb.display().to_string(),
            out.display().to_string(),
            raw.display().to_string(),
            dir.join("checkpoint").display().to_string(),
        );
        let vars = Vars {
            input: &inp,
            input_prefix: &dir.display().to_string(),
            output_prefix: &outp,
            raw_output_prefix: &rawp,
            checkpoint_prefix: &ckpt,
            prev_checkpoint_prefix: prev.as_deref(),
            per_retry_key: &t.name,
            task_template_path: "",
            namespace: "local",
            inputs: Some(&t.inputs),
        };
        let mut argv: Vec<String> = container
            .command
            .iter()
            .chain(container.args.iter())
            .cloned()
            .collect();
        argv = template::render_args(&argv, &vars)?;
        let data = container.data_config.as_ref().filter(|d| d.enabled);
        let engine = match (&self.containers, data) {
            (Containers::Engine { program, .. }, Some(_)) => Some(program.clone()),
            _ => None,
        };
        let (in_dir, out_dir) = (dir.join("data-in"), dir.join("data-out"));
        if let Some(d) = data {
            std::fs::create_dir_all(&in_dir)?;
            std::fs::create_dir_all(&out_dir)?;
            updraft_copilot::write_inputs(&t.inputs, &in_dir, &updraft_copilot::LocalFiles)
                .map_err(|e| LocalError::Data(e.to_string()))?;
            // A container engine mounts the folders at the container's paths; a process is pointed at them.
            if engine.is_none() {
                for a in &mut argv {
                    if !d.input_path.is_empty() {
                        *a = a.replace(&d.input_path, &in_dir.display().to_string());
                    }
                    if !d.output_path.is_empty() {
                        *a = a.replace(&d.output_path, &out_dir.display().to_string());
                    }
                }
            }
        }
        let mut env: Vec<(String, String)> = container
            .env
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        env.extend(t.flyte_env("local", "development"));
        let (program, args) = match (&engine, data) {
            (Some(engine), Some(d)) => {
                let mounts = [
                    (in_dir.as_path(), d.input_path.as_str(), true),
                    (out_dir.as_path(), d.output_path.as_str(), false),
                ];
                let args = containers::engine_args(&t.name, &container.image, &mounts, &env, &argv);
                (engine.clone(), args)
            }
            _ => {
                let Some(first) = argv.first() else {
                    return Err(LocalError::NoContainer(
                        "the container has no command".into(),
                    ));
                };
                (self.resolve_program(first), argv[1..].to_vec())
            }
        };
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log"))?)
            .stderr(std::fs::File::create(dir.join("stderr.log"))?);
        if engine.is_none() {
            cmd.envs(env);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Ok(failed(
                    ErrorKind::User,
                    false,
                    "CommandNotFound",
                    format!("cannot start `{}`: {e}", program.display()),
                ));
            }
        };
        self.running
            .lock()
            .map_err(|_| std::io::Error::other("lock"))?
            .insert(t.name.clone(), (child, engine.is_some()));
        let status = loop {
            std::thread::sleep(Duration::from_millis(5));
            let mut running = self
                .running
                .lock()
                .map_err(|_| std::io::Error::other("lock"))?;
            let Some((child, _)) = running.get_mut(&t.name) else {
                return Ok(failed(
                    ErrorKind::System,
                    false,
                    "Aborted",
                    "the attempt was aborted",
                ));
            };
            if let Some(s) = child.try_wait()? {
                running.remove(&t.name);
                break s;
            }
        };
        let stderr_tail = tail(&dir.join("stderr.log"));
        if data.is_some() {
            return Ok(updraft_copilot::outcome(
                &out_dir,
                outputs,
                None,
                &updraft_copilot::LocalFiles,
                status.code(),
                &stderr_tail,
            )
            .unwrap_or_else(|e| failed(ErrorKind::System, true, "DataError", e.to_string())));
        }
        Ok(read_outcome(&out, status.code(), &stderr_tail))
    }

    fn resolve_program(&self, program: &str) -> PathBuf {
        if let Some(py) = &self.python
            && let Some(bin) = py.parent()
        {
            let candidate = bin.join(program);
            if candidate.is_file() {
                return candidate;
            }
        }
        PathBuf::from(program)
    }
}

/// The primary container of a pod task (see [`updraft_engine::plugins::primary_container_name`]), as a
/// container target: locally a pod task runs its primary container; the pod's other containers are not
/// started.
fn primary_container(task: &TaskTemplate, pod: &K8sPod) -> Result<Container, LocalError> {
    let primary = updraft_engine::plugins::primary_container_name(task, pod);
    let spec = pod
        .pod_spec
        .as_ref()
        .map(literal::struct_json)
        .unwrap_or_default();
    let found = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == primary)
        .ok_or_else(|| {
            LocalError::NoContainer(format!("the pod spec has no container named `{primary}`"))
        })?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let env = found["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(KeyValuePair {
                key: e["name"].as_str()?.to_string(),
                value: e["value"].as_str().unwrap_or("").to_string(),
            })
        })
        .collect();
    Ok(Container {
        image: found["image"].as_str().unwrap_or("").to_string(),
        command: strings(&found["command"]),
        args: strings(&found["args"]),
        env,
        ..Default::default()
    })
}

fn tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The outcome of a flytekit task from its output prefix and exit code.
pub fn read_outcome(out: &Path, code: Option<i32>, stderr_tail: &str) -> TaskStatus {
    let files = OutputFiles::read_with(|name| std::fs::read(out.join(name)).ok());
    if let Some(status) = from_output_files(&files) {
        return status;
    }
    match code {
        Some(0) => failed(
            ErrorKind::System,
            true,
            "NoOutputs",
            "the task exited 0 but wrote neither outputs.pb nor error.pb",
        ),
        Some(c) => failed(
            ErrorKind::System,
            true,
            "ExitCode",
            format!("exit code {c}: {stderr_tail}"),
        ),
        None => failed(
            ErrorKind::System,
            true,
            "Killed",
            format!("killed by a signal: {stderr_tail}"),
        ),
    }
}
