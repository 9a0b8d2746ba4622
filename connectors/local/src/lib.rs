//! Runs task attempts on this machine as processes — never through a shell.
//!
//! - **Python tasks** (`python-task`, and the container of any Python-based plugin task) run their
//!   container arguments — flytekit's `pyflyte-execute …` — with placeholders rendered, in the configured
//!   Python environment. The outcome is read from the output prefix: `outputs.pb` (success), `error.pb`
//!   (failure, with its kind), `futures.pb` (a dynamic task's sub-workflow), nothing and a non-zero exit
//!   (a system failure).
//! - **Raw containers** (`raw-container` with `data_config`) run their command as a process: the inputs are
//!   written as files (one per input, plus `inputs.pb`) into a folder standing for the container's input
//!   path, the container's input and output paths in the arguments are pointed at local folders, and each
//!   declared output is read back from its file (`_ERROR` means failure).
//!
//! Each attempt has its own folder: `<root>/<node>[-<index>]/<attempt>/` with `inputs.pb`, the output
//! prefix `out/`, raw output data `raw/`, and the captured `stdout.log` / `stderr.log`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use updraft_engine::exec::{ErrorKind, TaskLaunch, TaskStatus};
use updraft_engine::template::{self, Vars};
use updraft_engine::{literal, types};
use updraft_proto::Message;
use updraft_proto::core::{
    ContainerError, DynamicJobSpec, ErrorDocument, LiteralMap, LiteralType, TaskTemplate,
    container_error, execution_error, task_template::Target,
};

/// Where and how attempts run.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// The execution's folder.
    pub root: PathBuf,
    /// The Python interpreter of the user's environment (its folder holds `pyflyte-execute`); when unset,
    /// `pyflyte-execute` is looked up on PATH.
    pub python: Option<PathBuf>,
    /// Execution name, for FLYTE_INTERNAL_* variables.
    pub execution: String,
    running: Arc<Mutex<BTreeMap<String, Child>>>,
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
    pub fn new(root: PathBuf, execution: String, python: Option<PathBuf>) -> Self {
        Self {
            root,
            python,
            execution,
            running: Arc::default(),
        }
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

    /// Kills the process of attempt `name`, if it runs.
    pub fn abort(&self, name: &str) {
        if let Ok(mut running) = self.running.lock()
            && let Some(mut child) = running.remove(name)
        {
            let _ = child.kill();
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
            Some(Target::K8sPod(_)) => {
                return Err(LocalError::NoContainer(
                    "pod targets run on a cluster".into(),
                ));
            }
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
        let (in_dir, out_dir) = (dir.join("data-in"), dir.join("data-out"));
        if let Some(d) = data {
            std::fs::create_dir_all(&in_dir)?;
            std::fs::create_dir_all(&out_dir)?;
            std::fs::write(in_dir.join("inputs.pb"), t.inputs.encode_to_vec())?;
            for (k, v) in &t.inputs.literals {
                std::fs::write(in_dir.join(k), template::literal_text(v))?;
            }
            for a in &mut argv {
                if !d.input_path.is_empty() {
                    *a = a.replace(&d.input_path, &in_dir.display().to_string());
                }
                if !d.output_path.is_empty() {
                    *a = a.replace(&d.output_path, &out_dir.display().to_string());
                }
            }
        }
        let Some(program) = argv.first().cloned() else {
            return Err(LocalError::NoContainer(
                "the container has no command".into(),
            ));
        };
        let program = self.resolve_program(&program);
        let mut cmd = Command::new(&program);
        cmd.args(&argv[1..])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log"))?)
            .stderr(std::fs::File::create(dir.join("stderr.log"))?);
        for kv in &container.env {
            cmd.env(&kv.key, &kv.value);
        }
        cmd.env("FLYTE_INTERNAL_EXECUTION_ID", &self.execution)
            .env("FLYTE_INTERNAL_EXECUTION_PROJECT", "local")
            .env("FLYTE_INTERNAL_EXECUTION_DOMAIN", "development")
            .env("FLYTE_INTERNAL_TASK_NAME", &t.task)
            .env("FLYTE_INTERNAL_NODE_ID", &t.node_id)
            .env("FLYTE_ATTEMPT_NUMBER", t.attempt.to_string());
        if let Some(i) = t.index {
            cmd.env("BATCH_JOB_ARRAY_INDEX_VAR_NAME", "FLYTE_K8S_ARRAY_INDEX")
                .env("FLYTE_K8S_ARRAY_INDEX", i.to_string());
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
            .insert(t.name.clone(), child);
        let status = loop {
            std::thread::sleep(Duration::from_millis(5));
            let mut running = self
                .running
                .lock()
                .map_err(|_| std::io::Error::other("lock"))?;
            let Some(child) = running.get_mut(&t.name) else {
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
            return Ok(read_raw_outputs(
                &out_dir,
                outputs,
                status.code(),
                &stderr_tail,
            ));
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
    if let Ok(bytes) = std::fs::read(out.join("outputs.pb")) {
        return match LiteralMap::decode(&bytes[..]) {
            Ok(outputs) => TaskStatus::Succeeded {
                outputs,
                cached: false,
            },
            Err(e) => failed(
                ErrorKind::System,
                true,
                "BadOutputs",
                format!("outputs.pb is not a LiteralMap: {e}"),
            ),
        };
    }
    if let Ok(bytes) = std::fs::read(out.join("error.pb")) {
        return match ErrorDocument::decode(&bytes[..]) {
            Ok(ErrorDocument { error: Some(e) }) => container_failure(&e),
            _ => failed(
                ErrorKind::System,
                true,
                "BadError",
                "error.pb is not an ErrorDocument",
            ),
        };
    }
    if let Ok(bytes) = std::fs::read(out.join("futures.pb")) {
        return match DynamicJobSpec::decode(&bytes[..]) {
            Ok(spec) => TaskStatus::Dynamic {
                spec: Box::new(spec),
            },
            Err(e) => failed(
                ErrorKind::System,
                true,
                "BadFutures",
                format!("futures.pb is not a DynamicJobSpec: {e}"),
            ),
        };
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

fn container_failure(e: &ContainerError) -> TaskStatus {
    let kind = if e.origin == execution_error::ErrorKind::System as i32 {
        ErrorKind::System
    } else {
        ErrorKind::User
    };
    let recoverable = e.kind == container_error::Kind::Recoverable as i32;
    failed(
        kind,
        recoverable,
        if e.code.is_empty() {
            "TaskError"
        } else {
            &e.code
        },
        e.message.clone(),
    )
}

/// The outcome of a raw container: each declared output from its file, or `_ERROR`.
pub fn read_raw_outputs(
    dir: &Path,
    outputs: &BTreeMap<String, LiteralType>,
    code: Option<i32>,
    stderr_tail: &str,
) -> TaskStatus {
    if let Ok(msg) = std::fs::read_to_string(dir.join("_ERROR")) {
        return failed(
            ErrorKind::User,
            true,
            "ContainerError",
            msg.trim().to_string(),
        );
    }
    if code != Some(0) {
        return failed(
            ErrorKind::User,
            true,
            "ExitCode",
            format!(
                "exit code {}: {stderr_tail}",
                code.map_or("none".into(), |c| c.to_string())
            ),
        );
    }
    let mut literals = BTreeMap::new();
    for (name, t) in outputs {
        let path = dir.join(name);
        let lit = match &t.r#type {
            Some(updraft_proto::core::literal_type::Type::Blob(_)) if path.exists() => {
                literal::from_json(&Value::String(path.display().to_string()), t)
            }
            _ => match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let text = text.trim();
                    let v = if types::element(t).is_some()
                        || matches!(
                            t.r#type,
                            Some(updraft_proto::core::literal_type::Type::MapValueType(_))
                        ) {
                        serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
                    } else {
                        Value::String(text.to_string())
                    };
                    literal::from_json(&v, t)
                }
                Err(_) => Err(format!("output `{name}` was not written")),
            },
        };
        match lit {
            Ok(l) => {
                literals.insert(name.clone(), l);
            }
            Err(e) => {
                return failed(
                    ErrorKind::User,
                    false,
                    "BadOutput",
                    format!("output `{name}`: {e}"),
                );
            }
        }
    }
    TaskStatus::Succeeded {
        outputs: LiteralMap { literals },
        cached: false,
    }
}
