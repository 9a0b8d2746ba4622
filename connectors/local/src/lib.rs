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
//! **Warm workers** ([`Workers::On`], the default): a Python task whose program is a console script of a
//! Python environment (`pyflyte-execute`, `pyflyte-map-execute`) runs in a process forked from a warm
//! worker of that interpreter, which imported flytekit once ([`Worker`]). The task's process is otherwise
//! the same as one started directly. When an interpreter cannot host a worker, its tasks run as
//! processes and the notice says why.
//!
//! Every attempt's process leads its own process group; an abort, a timeout and the attempt's end kill
//! the whole group, so nothing a task started outlives it.
//!
//! [`LocalConnector`] implements the connector contract ([`updraft_connector::Connector`]): a start spawns
//! the process, a check looks whether it exited (and then reads its outcome), an abort kills it. Each
//! attempt has its own folder ([`updraft_connector::AttemptPaths`]): `<node>[-<index>]/<attempt>/` with
//! `inputs.pb`, the output prefix `out/`, raw output data `raw/`, and the captured `stdout.log` /
//! `stderr.log`.

mod containers;
mod worker;

pub use containers::{ContainerChoice, Containers, detect};
pub use worker::{Exit, Worker, interpreter_of};

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use updraft_connector::{Attempt, Connector, DataStore, Handle, Problem, Transient, failed};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::outcome::{OutputFiles, from_output_files};
use updraft_engine::exec::{ErrorKind, TaskStatus};
use updraft_engine::literal;
use updraft_engine::plugins::PluginKind;
use updraft_engine::template;
use updraft_proto::core::{
    Container, K8sPod, KeyValuePair, LiteralType, TaskTemplate, task_template::Target,
};

/// The connector that runs attempts on this machine (see the crate's documentation).
#[derive(Debug)]
pub struct LocalConnector {
    /// The Python interpreter of the user's environment (its folder holds `pyflyte-execute`); when unset,
    /// `pyflyte-execute` is looked up on PATH.
    pub python: Option<PathBuf>,
    /// How raw containers run.
    pub containers: Containers,
    /// Variables every attempt's process gets before its container's own (`with_env`).
    env: Vec<(String, String)>,
    /// Whether Python tasks run in warm workers.
    workers: Workers,
    /// Warm workers by interpreter (or why that interpreter cannot host one).
    pool: Mutex<BTreeMap<PathBuf, Slot>>,
    /// Where notices go (why tasks run as processes).
    notices: Notices,
    /// Running attempts by name.
    running: Mutex<BTreeMap<String, Running>>,
    /// Where secrets are kept as files, `<dir>/<group>/<key>` (`with_secrets_dir`).
    secrets_dir: Option<PathBuf>,
}

/// The attempt's folder of secret files (`FILE` requests of values from the environment).
const SECRETS: &str = ".secrets";

/// What a task's process needs for its secrets.
#[derive(Default)]
struct SecretSetup {
    /// Variables to set.
    env: Vec<(String, String)>,
    /// Files to write: the variable that names the file, the request's index, the value.
    files: Vec<(String, usize, String)>,
}

/// Where a secret was found.
enum Found {
    Value(String),
    File(PathBuf),
}

/// Whether Python tasks run in processes forked from a warm worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    /// Forked from a warm worker when the interpreter can host one (the default).
    #[default]
    On,
    /// A new process per task.
    Off,
}

/// A warm worker of one interpreter, or none (it could not host one).
#[derive(Debug)]
enum Slot {
    Up(Arc<Worker>),
    Unavailable,
}

/// Where a notice line goes.
type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Receives the connector's notices (one line each, each said once).
#[derive(Clone, Default)]
pub struct Notices {
    to: Option<Sink>,
    said: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl Notices {
    /// Notices go to `f`.
    pub fn to(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            to: Some(Arc::new(f)),
            said: Arc::default(),
        }
    }

    fn say(&self, line: &str) {
        let new = lock(&self.said).insert(line.to_string());
        if let (true, Some(f)) = (new, &self.to) {
            f(line);
        }
    }
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notices")
    }
}

/// An attempt's process: a child of this process, or forked by a warm worker.
#[derive(Debug)]
enum Proc {
    Child(Child),
    Forked { pid: u32, worker: Arc<Worker> },
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Self::Child(c) => c.id(),
            Self::Forked { pid, .. } => *pid,
        }
    }

    /// How it ended, once it did: its exit code (`None` when a signal killed it).
    fn try_wait(&mut self) -> Result<Option<Option<i32>>, String> {
        match self {
            Self::Child(c) => c
                .try_wait()
                .map(|s| s.map(|s| s.code()))
                .map_err(|e| e.to_string()),
            Self::Forked { pid, worker } => Ok(worker.take_exit(*pid)?.map(|e| e.code)),
        }
    }

    /// Kills its process group (the process and everything it started) and, for a child, reaps it.
    fn kill(&mut self) {
        kill_group(self.pid());
        if let Self::Child(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Kills process group `pgid`, if it still has members.
fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A running attempt's process and where its outcome will be.
#[derive(Debug)]
struct Running {
    proc: Proc,
    /// A container engine runs it (its container must go on abort).
    in_engine: bool,
    /// The attempt's folder (`stderr.log`).
    dir: PathBuf,
    /// The output prefix (flytekit's outputs.pb / error.pb).
    out: PathBuf,
    /// A raw container's output folder (one file per output) and its outputs' types.
    data_out: Option<(PathBuf, BTreeMap<String, LiteralType>)>,
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
    /// A secret the task asks for is not provided.
    #[error("{0}")]
    Secret(String),
}

/// The name local processes are known by in their handles.
const NAME: &str = "local";

impl LocalConnector {
    /// A connector running Python tasks with `python` (or `pyflyte-execute` from PATH), raw containers
    /// as `containers` says.
    pub fn new(python: Option<PathBuf>, containers: Containers) -> Self {
        Self {
            python,
            containers,
            env: Vec::new(),
            workers: Workers::default(),
            pool: Mutex::default(),
            notices: Notices::default(),
            running: Mutex::default(),
            secrets_dir: None,
        }
    }

    /// Whether Python tasks run in warm workers ([`Workers::On`] by default).
    #[must_use]
    pub fn with_workers(mut self, workers: Workers) -> Self {
        self.workers = workers;
        self
    }

    /// Where notices go, e.g. why a Python environment's tasks run as processes.
    #[must_use]
    pub fn with_notices(mut self, notices: Notices) -> Self {
        self.notices = notices;
        self
    }

    /// The warm worker of the interpreter behind `program` (a console script), started on first use
    /// with the connector's variables; `None` (once said why) when there is none.
    fn worker_for(&self, program: &Path) -> Option<Arc<Worker>> {
        if self.workers == Workers::Off {
            return None;
        }
        let script = if program.components().count() > 1 {
            program.to_path_buf()
        } else {
            worker::on_path(program.to_str()?)?
        };
        let python = interpreter_of(&script)?;
        let mut pool = lock(&self.pool);
        match pool.get(&python) {
            Some(Slot::Up(w)) if !w.is_gone() => return Some(w.clone()),
            Some(Slot::Unavailable) => return None,
            _ => {}
        }
        match Worker::start(&python, &self.env) {
            Ok(w) => {
                let w = Arc::new(w);
                pool.insert(python, Slot::Up(w.clone()));
                Some(w)
            }
            Err(why) => {
                self.notices.say(&format!(
                    "Python tasks of {} run as processes, without a warm worker: {why}",
                    python.display()
                ));
                pool.insert(python, Slot::Unavailable);
                None
            }
        }
    }

    /// Gives every attempt's process these variables (the container's own and flytekit's come after
    /// them and win), e.g. the S3 endpoint of the settings' `aws.endpoint`.
    #[must_use]
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = env;
        self
    }

    /// Secrets tasks ask for are also looked up as files `<dir>/<group>/<key>` (flytekit's layout), and
    /// tasks read them there.
    pub fn with_secrets_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.secrets_dir = dir;
        self
    }

    /// A variable of the attempts' environment: this connector's own, else this process's.
    fn var(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    }

    /// The folder flytekit reads secret files from in the attempts: the secrets folder given, else
    /// flytekit's own (`FLYTE_SECRETS_DEFAULT_DIR`, default `/etc/secrets`).
    fn secrets_folder(&self) -> PathBuf {
        self.secrets_dir.clone().unwrap_or_else(|| {
            PathBuf::from(
                self.var("FLYTE_SECRETS_DEFAULT_DIR")
                    .unwrap_or_else(|| "/etc/secrets".into()),
            )
        })
    }

    /// Where each secret `task` asks for is: `Ok` with the variables its process needs beyond the
    /// environment it inherits (and the files a `FILE` request is given, to write), or every secret
    /// that is nowhere, with where it was looked for.
    fn secrets_for(&self, task: &TaskTemplate) -> Result<SecretSetup, Vec<Problem>> {
        let requests = updraft_connector::secrets::requests(task);
        let mut setup = SecretSetup::default();
        if requests.is_empty() {
            return Ok(setup);
        }
        let prefix = self
            .var("FLYTE_SECRETS_ENV_PREFIX")
            .unwrap_or_else(|| updraft_connector::secrets::ENV_PREFIX.into());
        let file_prefix = self.var("FLYTE_SECRETS_FILE_PREFIX").unwrap_or_default();
        let folder = self.secrets_folder();
        if let Some(d) = &self.secrets_dir {
            setup
                .env
                .push(("FLYTE_SECRETS_DEFAULT_DIR".into(), d.display().to_string()));
        }
        let mut missing = Vec::new();
        for r in requests {
            let var = r.env_name(&prefix);
            let file = r.file_in(&folder, &file_prefix);
            let found = match self.var(&var) {
                Some(v) => Some(Found::Value(v)),
                None if file.is_file() => Some(Found::File(file.clone())),
                None => None,
            };
            let Some(found) = found else {
                missing.push(Problem {
                    field: r.field(),
                    reason: format!(
                        "secret `{}` is not provided here: set {var} in updraft's environment, or put it in the file {} (--secrets-dir)",
                        r.label(),
                        file.display()
                    ),
                });
                continue;
            };
            if r.env_var.is_empty() {
                continue; // flytekit's own lookup finds it where it was found
            }
            match (r.wants_file(), found) {
                (true, Found::File(path)) => setup
                    .env
                    .push((r.env_var.clone(), path.display().to_string())),
                (true, Found::Value(v)) => setup.files.push((r.env_var.clone(), r.index, v)),
                (false, Found::Value(v)) => setup.env.push((r.env_var.clone(), v)),
                (false, Found::File(path)) => match std::fs::read_to_string(&path) {
                    Ok(v) => setup.env.push((r.env_var.clone(), v)),
                    Err(e) => missing.push(Problem {
                        field: r.field(),
                        reason: format!(
                            "secret `{}`: cannot read {}: {e}",
                            r.label(),
                            path.display()
                        ),
                    }),
                },
            }
        }
        if missing.is_empty() {
            Ok(setup)
        } else {
            Err(missing)
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        lock(&self.running)
    }

    /// Kills the process of attempt `name`, if it runs (and removes its container, when an engine runs it).
    fn kill(&self, name: &str) {
        let Some(mut r) = self.running().remove(name) else {
            return;
        };
        r.proc.kill();
        let _ = std::fs::remove_dir_all(r.dir.join(SECRETS));
        // Killing the engine's client would leave the container running: remove it first.
        if let (true, Containers::Engine { program, .. }) = (r.in_engine, &self.containers) {
            let _ = Command::new(program)
                .args(["rm", "-f", name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Prepares the attempt's folder and starts its process; a second start of a running attempt keeps
    /// the process it has.
    fn spawn(&self, a: &Attempt<'_>) -> Result<Option<TaskStatus>, LocalError> {
        let t = a.launch;
        if self.running().contains_key(&t.name) {
            return Ok(None);
        }
        let task = &a.task.template;
        let dir = PathBuf::from(&a.paths.dir);
        let out = PathBuf::from(&a.paths.output_prefix);
        for d in [&out, &PathBuf::from(&a.paths.raw_output_prefix)] {
            std::fs::create_dir_all(d)?;
        }
        let container = container_of(task)?;
        let vars = a.paths.vars(t, "local");
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
            updraft_copilot_data::write_inputs(
                &t.inputs,
                &in_dir,
                &updraft_copilot_data::LocalFiles,
            )
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
        let mut env = self.env.clone();
        env.extend(
            container
                .env
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone())),
        );
        env.extend(t.flyte_env("local", "development"));
        // The secrets it asks for, where flytekit reads them (a FILE request of a value from the
        // environment: a file of the attempt's own, removed when it ends).
        let secrets = self.secrets_for(task).map_err(|p| {
            let what: Vec<String> = p
                .into_iter()
                .map(|p| format!("{}: {}", p.field, p.reason))
                .collect();
            LocalError::Secret(what.join("; "))
        })?;
        env.extend(secrets.env);
        if !secrets.files.is_empty() {
            let folder = dir.join(SECRETS);
            std::fs::create_dir_all(&folder)?;
            std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
            for (var, index, value) in secrets.files {
                let path = folder.join(index.to_string());
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?;
                std::io::Write::write_all(&mut f, value.as_bytes())?;
                env.push((var, path.display().to_string()));
            }
        }
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
        let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
        // A Python task forked from a warm worker, when its interpreter has one.
        if data.is_none()
            && let Some(w) = self.worker_for(&program)
        {
            let mut argv = vec![program.display().to_string()];
            argv.extend(args.iter().cloned());
            let mut full: BTreeMap<String, String> = std::env::vars().collect();
            full.extend(env.iter().cloned());
            let req = worker::Request {
                argv: &argv,
                env: &full,
                cwd: &dir,
                stdout: &stdout,
                stderr: &stderr,
            };
            match w.spawn(&req) {
                Ok(pid) => {
                    self.running().insert(
                        t.name.clone(),
                        Running {
                            proc: Proc::Forked { pid, worker: w },
                            in_engine: false,
                            dir,
                            out,
                            data_out: None,
                        },
                    );
                    return Ok(None);
                }
                Err(why) => {
                    // A worker that is gone or does not answer serves no more tasks: the next task
                    // starts a new one.
                    if let worker::Refused::Gone(_) = why {
                        lock(&self.pool).remove(w.python());
                        w.stop();
                    }
                    self.notices.say(&format!(
                        "`{}` runs as a new process per task: {why}",
                        program.display()
                    ));
                }
            }
        }
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .current_dir(&dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        // A process gets its variables; an engine's client gets them to hand to the container by name.
        cmd.envs(env);
        let child = match cmd.spawn() {
            Ok(c) => Proc::Child(c),
            Err(e) => {
                return Ok(Some(failed(
                    "CommandNotFound",
                    format!("cannot start `{}`: {e}", program.display()),
                    ErrorKind::User,
                    false,
                )));
            }
        };
        self.running().insert(
            t.name.clone(),
            Running {
                proc: child,
                in_engine: engine.is_some(),
                dir,
                out,
                data_out: data.map(|_| (out_dir, a.task.interface.outputs.clone())),
            },
        );
        Ok(None)
    }

    /// The status of attempt `name`: running, or its outcome read from its files once it exited.
    fn status(&self, name: &str) -> Result<TaskStatus, Transient> {
        let mut running = self.running();
        let Some(r) = running.get_mut(name) else {
            return Ok(failed(
                "Aborted",
                "the attempt was aborted",
                ErrorKind::System,
                false,
            ));
        };
        let exit = match r.proc.try_wait() {
            Ok(Some(code)) => code,
            Ok(None) => return Ok(TaskStatus::Running),
            Err(why) => {
                // Its worker is gone, and with it any news of its end: stop it, so its retry runs alone.
                if let Some(r) = running.remove(name) {
                    kill_group(r.proc.pid());
                }
                return Ok(failed("WorkerLost", why, ErrorKind::System, true));
            }
        };
        let Some(r) = running.remove(name) else {
            return Err(Transient("the attempt vanished".into()));
        };
        drop(running);
        let _ = std::fs::remove_dir_all(r.dir.join(SECRETS));
        // Whatever the task left running in its group ends with it, as a container's processes do.
        kill_group(r.proc.pid());
        let stderr_tail = tail(&r.dir.join("stderr.log"));
        if let Some((data_out, outputs)) = &r.data_out {
            return Ok(updraft_copilot_data::outcome(
                data_out,
                outputs,
                None,
                &updraft_copilot_data::LocalFiles,
                exit,
                &stderr_tail,
            )
            .unwrap_or_else(|e| failed("DataError", e.to_string(), ErrorKind::System, true)));
        }
        Ok(read_outcome(&r.out, exit, &stderr_tail))
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

#[async_trait::async_trait]
impl Connector for LocalConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Python tasks, raw containers and pod tasks (their primary container).
    fn serves(&self, task: &CompiledTask) -> bool {
        matches!(task.plugin, PluginKind::Container | PluginKind::Pod)
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        let mut problems = match container_of(&task.template) {
            Ok(_) => Vec::new(),
            Err(e) => vec![Problem {
                field: "target".into(),
                reason: e.to_string(),
            }],
        };
        if let Err(mut p) = self.secrets_for(&task.template) {
            problems.append(&mut p);
        }
        problems
    }

    fn check_interval(&self) -> Duration {
        Duration::from_millis(5)
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        match self.spawn(a) {
            Ok(None) => Ok(Handle {
                connector: NAME.into(),
                value: Value::String(a.launch.name.clone()),
            }),
            Ok(Some(ended)) => Err(ended),
            Err(LocalError::Io(e)) => {
                Err(failed("LocalIo", e.to_string(), ErrorKind::System, true))
            }
            Err(LocalError::Secret(e)) => Err(failed("SecretMissing", e, ErrorKind::User, false)),
            Err(e) => Err(failed("LocalSetup", e.to_string(), ErrorKind::User, false)),
        }
    }

    /// Its outcome is read from the attempt's folder on this machine.
    async fn check(&self, h: &Handle, _data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        self.status(process_name(h)?)
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        self.kill(process_name(h)?);
        Ok(())
    }
}

/// Locks `m`; a panic while another thread held it leaves what it guards as it was: keep using it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The attempt name a local handle holds.
fn process_name(h: &Handle) -> Result<&str, Transient> {
    h.value
        .as_str()
        .ok_or_else(|| Transient(format!("not a local handle: {}", h.value)))
}

/// The container a task runs locally: its container target, or a pod task's primary container.
fn container_of(task: &TaskTemplate) -> Result<Container, LocalError> {
    match &task.target {
        Some(Target::Container(c)) => Ok(c.clone()),
        Some(Target::K8sPod(pod)) => primary_container(task, pod),
        _ => Err(LocalError::NoContainer(format!(
            "task type `{}`",
            task.r#type
        ))),
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
            "NoOutputs",
            "the task exited 0 but wrote neither outputs.pb nor error.pb",
            ErrorKind::System,
            true,
        ),
        Some(c) => failed(
            "ExitCode",
            format!("exit code {c}: {stderr_tail}"),
            ErrorKind::System,
            true,
        ),
        None => failed(
            "Killed",
            format!("killed by a signal: {stderr_tail}"),
            ErrorKind::System,
            true,
        ),
    }
}
