//! `updraft run`: executes a workflow on this machine with the embedded engine and the local executor.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::time::Instant;

use crate::progress::{Printer, Progress};
use crate::store;

use anyhow::{Context, bail};
use serde_json::Value;
use updraft_connector::effects::{Child, Reservation};
use updraft_connector::{
    Attempt, AttemptPaths, Connector, Handle, LocalData, Registry, RegistryError, failed,
};
use updraft_connector_eks::EksConnector;
use updraft_connector_local::{ContainerChoice, LocalConnector, Notices, Workers};
use updraft_engine::CompiledPackage;
use updraft_engine::compile::{CompiledTask, Gate as G, NodeIdx, NodeKind};
use updraft_engine::exec::history::{ChildView, ExecutionView, GraphView};
use updraft_engine::exec::{
    Effect, ErrorKind, Event, ExecConfig, ExecError, ExecPhase, Execution, NodePhase, Program,
    TaskLaunch, TaskStatus, TimerKind,
};
use updraft_engine::launch::{choose_launch_plan, launch_inputs, reachable_tasks};
use updraft_engine::literal::{from_json, to_json};
use updraft_proto::core::{LiteralMap, LiteralType};

/// What to run and how.
pub struct RunArgs {
    /// Packages and YAML files.
    pub files: Vec<PathBuf>,
    /// Workflow to run.
    pub workflow: Option<String>,
    /// Launch plan to run.
    pub launch_plan: Option<String>,
    /// `name=value` inputs (values as JSON, or plain text for strings).
    pub inputs: Vec<String>,
    /// A JSON file of inputs.
    pub inputs_file: Option<PathBuf>,
    /// Python interpreter of the environment that runs Python tasks.
    pub python: Option<PathBuf>,
    /// Most task attempts at once.
    pub parallelism: Option<u32>,
    /// Where executions are kept.
    pub state_dir: PathBuf,
    /// Run cached tasks again and overwrite their cached outputs.
    pub overwrite_cache: bool,
    /// A folder of secrets as files (`<dir>/<group>/<key>`).
    pub secrets_dir: Option<PathBuf>,
    /// How raw containers run.
    pub containers: ContainerChoice,
    /// Whether Python tasks run in warm workers.
    pub workers: Workers,
    /// Run native tasks on a cluster.
    pub eks: Option<EksArgs>,
    /// The settings file's contents (`--settings`).
    pub settings: updraft_settings::Settings,
    /// The settings file (`--settings`), kept for a relaunch.
    pub settings_file: Option<PathBuf>,
}

/// `--executor eks` settings.
pub struct EksArgs {
    /// The kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace override.
    pub namespace: Option<String>,
}

/// Outputs of cached tasks, one file per cache key under `<state-dir>/cache/`; a serializable key's
/// reservation is a lock on `<key>.lock` beside it (held by the attempt computing it, in this or another
/// `updraft` process, and dropped by the system if that process dies).
struct LocalCache {
    dir: PathBuf,
    /// The locks this process holds, by attempt.
    held: Mutex<BTreeMap<String, std::fs::File>>,
}

impl LocalCache {
    fn path(&self, key: &str) -> PathBuf {
        // Keys are `task:version:sha256`; made file-name safe, they stay distinct.
        self.dir
            .join(format!("{}.pb", updraft_engine::package::file_safe(key)))
    }

    fn get(&self, key: &str) -> Option<LiteralMap> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        updraft_proto::Message::decode(&bytes[..]).ok()
    }

    /// Reserves `key` for attempt `holder`: held when its lock is free or already the holder's;
    /// otherwise busy, naming the attempt that holds it.
    fn reserve(&self, key: &str, holder: &str) -> std::io::Result<Reservation> {
        use std::io::{Read, Seek, Write};
        let mut held = lock(&self.held);
        if held.contains_key(holder) {
            return Ok(Reservation::Held);
        }
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(key).with_extension("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.seek(std::io::SeekFrom::Start(0))?;
                file.write_all(holder.as_bytes())?;
                held.insert(holder.to_string(), file);
                Ok(Reservation::Held)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut name = String::new();
                let _ = file.read_to_string(&mut name);
                Ok(Reservation::Busy { holder: name })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Releases what attempt `holder` reserved (nothing reserved: nothing to do).
    fn release(&self, holder: &str) {
        lock(&self.held).remove(holder);
    }

    fn put(&self, key: &str, outputs: &LiteralMap) {
        let path = self.path(key);
        let tmp = path.with_extension("tmp");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, updraft_proto::Message::encode_to_vec(outputs)))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            eprintln!(
                "updraft: could not cache outputs at {}: {e}",
                path.display()
            );
        }
    }
}

/// Chooses the launch plan: the one named, the default one of the workflow named, or of the last workflow.
fn choose(
    pkg: &CompiledPackage,
    loaded_order: &[String],
    args: &RunArgs,
) -> anyhow::Result<String> {
    choose_launch_plan(
        pkg,
        args.launch_plan.as_deref(),
        args.workflow.as_deref(),
        loaded_order.last().map(String::as_str),
    )
    .map_err(anyhow::Error::msg)
}

/// The inputs given on the command line: a `--inputs-file` JSON object, then `--input name=value`
/// pairs over it (each value JSON, or else plain text).
pub fn given_inputs(
    inputs_file: Option<&std::path::Path>,
    inputs: &[String],
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut given: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(f) = inputs_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", f.display()))?;
        let Value::Object(m) = v else {
            bail!("{}: inputs must be a JSON object", f.display())
        };
        given.extend(m);
    }
    for kv in inputs {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--input `{kv}`: write name=value"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        given.insert(k.to_string(), value);
    }
    Ok(given)
}

fn gather_inputs(
    pkg: &CompiledPackage,
    lp_name: &str,
    args: &RunArgs,
) -> anyhow::Result<LiteralMap> {
    let given = given_inputs(args.inputs_file.as_deref(), &args.inputs)?;
    launch_inputs(pkg, lp_name, given).map_err(|e| {
        if e.starts_with("missing") {
            anyhow::anyhow!("{e} (give them with --input name=value)")
        } else {
            anyhow::anyhow!(e)
        }
    })
}

/// The signals a workflow's gates wait for, with the types of their values (approvals: booleans).
pub fn signal_types(wf: &updraft_engine::CompiledWorkflow) -> BTreeMap<String, LiteralType> {
    wf.nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Gate(G::Approve { signal_id }) => Some((
                signal_id.clone(),
                updraft_engine::types::simple(updraft_proto::core::SimpleType::Boolean),
            )),
            NodeKind::Gate(G::Signal {
                signal_id, r#type, ..
            }) => Some((signal_id.clone(), (**r#type).clone())),
            _ => None,
        })
        .collect()
}

/// Runs the chosen workflow to its end; prints progress to stderr and the outputs as JSON to stdout.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut pkg = match crate::load::load(&args.files) {
        Ok(p) => p,
        Err(p) => return Ok(crate::report(&p)),
    };
    // Only what the chosen workflow or launch plan reaches must resolve and compile; its references
    // resolve against the local registry.
    let loaded_order = pkg.top_level.clone();
    let roots = pkg.launch_roots(args.launch_plan.as_deref(), args.workflow.as_deref());
    if !pkg.unresolved(Some(&roots)).is_empty()
        && let Err(p) =
            crate::registry::Registry::open(&args.state_dir)?.resolve(&mut pkg, Some(&roots))
    {
        return Ok(crate::report(&p));
    }
    let compiled = match updraft_engine::compile_for(&pkg, &roots) {
        Ok(c) => Arc::new(c),
        Err(p) => return Ok(crate::report(&p)),
    };
    let lp_name = choose(&compiled, &loaded_order, &args)?;
    let inputs = gather_inputs(&compiled, &lp_name, &args)?;
    let workflow = compiled.launch_plans[&lp_name].workflow.clone();
    // Tasks this runner cannot run are rejected before anything starts (also in the workflows of
    // launch-plan nodes; the tasks of dynamic sub-workflows are known only when they run).
    // Each task once, however many nodes call it.
    let reachable = reachable_tasks(&compiled, &workflow);
    let containers = updraft_connector_local::detect(args.containers)
        .map_err(|e| anyhow::anyhow!("--containers: {e}"))?;
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("the task runtime")?,
    );
    // The connectors of this run: local processes, or with `--executor eks` the cluster, and the AWS
    // services' connectors as the settings configure them.
    let sdk = rt.block_on(updraft_connectors::sdk_config(&args.settings));
    let started = Instant::now();
    let progress = Progress::new(std::io::stderr().is_terminal(), started);
    let notices = {
        let printer = progress.printer();
        Notices::to(move |line| printer.line(&format!("updraft: {line}")))
    };
    let registry = match &args.eks {
        None => Registry::new().with(Arc::new(
            LocalConnector::new(args.python.clone(), containers.clone())
                .with_env(aws_env(&args.settings))
                .with_workers(args.workers)
                .with_secrets_dir(args.secrets_dir.clone())
                .with_notices(notices),
        )),
        Some(e) => {
            let mut config = crate::plan::eks_config(&args.settings)?;
            if let Some(ns) = &e.namespace {
                config.namespace.clone_from(ns);
            }
            let eks = rt
                .block_on(EksConnector::connect(e.kubeconfig.as_deref(), config))
                .map_err(|err| anyhow::anyhow!("--executor eks: {err}"))?;
            Registry::new().with(Arc::new(eks))
        }
    };
    let registry = updraft_connectors::with_services(registry, &args.settings, &sdk);
    // Attempts of services that read their data from S3 keep it under the settings' data.prefix.
    let remote = match args.settings.s3_prefix() {
        Ok(prefix) => {
            let bucket = updraft_aws::blobs::parse_uri(&format!("{prefix}/x"))
                .map(|(b, _)| b.to_string())
                .map_err(|e| anyhow::anyhow!("data.prefix: {e}"))?;
            Some(Remote {
                prefix: prefix.to_string(),
                data: Arc::new(updraft_aws::blobs::Blobs::new(
                    s3_client(&sdk, &args.settings),
                    bucket,
                )),
            })
        }
        Err(_) => None,
    };
    // Every task must have a connector here, and its configuration must hold (pod templates, the
    // copilot image, …), before anything starts.
    let problems = registry.preflight(reachable.values().filter(|t| !t.runs_in_engine()).copied());
    if !problems.is_empty() {
        let mut lines = Vec::new();
        let mut unserved = Vec::new();
        for p in &problems {
            match p {
                RegistryError::Unserved { task, task_type } => {
                    unserved.push(format!("{task} ({task_type})"));
                }
                RegistryError::Invalid { task, .. } => {
                    lines.push(format!(
                        "{}{p}",
                        task_place(&pkg, &compiled, &workflow, task)
                    ));
                }
            }
        }
        if !unserved.is_empty() {
            let what = if args.eks.is_some() {
                "on a cluster"
            } else {
                "locally"
            };
            lines.push(format!(
                "{workflow} has tasks that do not run {what} yet: {}",
                unserved.join(", ")
            ));
        }
        bail!("{}; nothing was started", lines.join("\n"));
    }
    let raw_containers = compiled.tasks.values().any(is_raw_container);
    if raw_containers && args.eks.is_none() {
        progress.line(&format!("updraft: raw containers run {containers}"));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = format!("r{stamp:x}-{:x}", std::process::id());
    let root = args.state_dir.join("executions").join(&name);
    std::fs::create_dir_all(&root).with_context(|| format!("{}: cannot create", root.display()))?;
    // Tasks run inside their attempt folders: every path handed to them must be absolute.
    let root = std::path::absolute(&root)
        .with_context(|| format!("{}: no absolute path", root.display()))?;
    let cache = Arc::new(LocalCache {
        dir: std::path::absolute(args.state_dir.join("cache"))?,
        held: Mutex::default(),
    });
    let (tx, rx) = channel();
    let mut d = Driver {
        args: &args,
        remote,
        root_pkg: compiled.clone(),
        root: root.clone(),
        cache,
        registry,
        handles: Arc::default(),
        rt,
        runs: Vec::new(),
        by_name: BTreeMap::new(),
        tx,
        local: VecDeque::new(),
        outstanding: 0,
        waiting_signals: BTreeSet::new(),
        started,
        progress,
        summary: store::Summary {
            name: name.clone(),
            workflow: workflow.clone(),
            phase: "Running".into(),
            started: (stamp / 1000) as u64,
            launch: Some(store::Launch {
                files: args
                    .files
                    .iter()
                    .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
                    .collect(),
                launch_plan: lp_name.clone(),
                python: args
                    .python
                    .as_ref()
                    .and_then(|p| std::path::absolute(p).ok()),
                settings: args
                    .settings_file
                    .as_ref()
                    .and_then(|p| std::path::absolute(p).ok()),
            }),
            ..Default::default()
        },
        notes: Arc::default(),
        history_written: None,
    };
    let program = Program {
        package: compiled.clone(),
        workflow: workflow.clone(),
    };
    d.progress.line(&format!(
        "updraft: running {workflow} as {name} (state in {})",
        root.display()
    ));
    // Ctrl-C (or SIGTERM) aborts the run, stopping its tasks and everything they started; a second
    // one ends `updraft` at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, interrupted.clone())
            .and_then(|_| signal_hook::flag::register(sig, interrupted.clone()))
            .context("cannot handle Ctrl-C")?;
    }
    let mut told_interrupted = false;
    d.start_run(name.clone(), program, None, inputs)?;
    let mut seen_signals = BTreeSet::new();
    let mut told_waiting = false;
    loop {
        d.take_notes();
        while let Some((run, ev)) = d.local.pop_front() {
            if let Some(code) = d.step(run, ev)? {
                return Ok(code);
            }
        }
        if interrupted.load(Ordering::Relaxed) && !told_interrupted {
            told_interrupted = true;
            d.progress.line(&format!(
                "updraft: interrupted: aborting {name} (interrupt again to quit at once)"
            ));
            d.local.push_back((
                0,
                Event::Abort {
                    reason: "interrupted".into(),
                },
            ));
            continue;
        }
        d.summary.phase = format!("{:?}", d.runs[0].exec.phase());
        d.summary.waiting_for = d.waiting_signals.iter().cloned().collect();
        store::save(&root, &d.summary)?;
        d.save_history(false)?;
        if d.outstanding == 0 && !told_waiting {
            if d.waiting_signals.is_empty() {
                bail!("execution {name} has nothing left to run but did not finish");
            }
            told_waiting = true;
            for id in &d.waiting_signals {
                d.progress.line(&format!(
                    "updraft: {name} waits for `{id}`: updraft signal {name} {id} <value>"
                ));
            }
        }
        let (run, ev) = match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let (abort, signals) = store::poll_control(&root, &mut seen_signals);
                if let Some(reason) = abort {
                    d.local.push_back((0, Event::Abort { reason }));
                    continue;
                }
                for (id, v) in signals {
                    if d.deliver_signal(&id, &v) {
                        told_waiting = false;
                    } else {
                        // Refused: forget it, so a corrected value can be sent under the same id.
                        let _ = std::fs::remove_file(
                            root.join("control/signals").join(format!("{id}.json")),
                        );
                        seen_signals.remove(&id);
                    }
                }
                continue;
            }
            Err(e) => bail!("the executor stopped: {e}"),
        };
        if matches!(
            ev,
            Event::Task {
                status: TaskStatus::Succeeded { .. }
                    | TaskStatus::Failed { .. }
                    | TaskStatus::Dynamic { .. },
                ..
            } | Event::Timer { .. }
        ) {
            d.outstanding -= 1;
        }
        d.local.push_back((run, ev));
    }
}

/// The S3 client of the run's remote data: path-style, at the settings' `aws.endpoint` when they give one
/// (which wins over `AWS_ENDPOINT_URL`).
fn s3_client(
    sdk: &aws_config::SdkConfig,
    settings: &updraft_settings::Settings,
) -> aws_sdk_s3::Client {
    let mut conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(true);
    if let Some(e) = &settings.aws.endpoint {
        conf = conf.endpoint_url(e);
    }
    aws_sdk_s3::Client::from_conf(conf.build())
}

/// A raw container (its data moved by a `data_config`).
fn is_raw_container(t: &CompiledTask) -> bool {
    matches!(
        &t.template.target,
        Some(updraft_proto::core::task_template::Target::Container(c))
            if c.data_config.as_ref().is_some_and(|d| d.enabled)
    )
}

/// One execution of the run: the top one, or a child (a launch-plan node's, or a dynamic task's
/// sub-workflow).
struct Live {
    exec: Execution,
    program: Program,
    /// The execution's folder: its attempts' data live under it.
    root: PathBuf,
    /// The run and node waiting for this one.
    parent: Option<(usize, NodeIdx)>,
    /// Shown before node ids: empty for the top execution, else the parent's node path and `/`.
    prefix: String,
    /// Signal id → the type its gate expects (approvals take a boolean).
    signal_types: BTreeMap<String, LiteralType>,
}

/// Where attempts of services that read their data from S3 keep it.
struct Remote {
    /// The settings' `data.prefix` (an `s3://` URI).
    prefix: String,
    /// The store under it.
    data: Arc<dyn updraft_connector::DataStore>,
}

/// What an attempt's start made, noted in its execution's history by the driver.
struct Note {
    run: usize,
    node: NodeIdx,
    index: Option<u32>,
    attempt: u32,
    described: updraft_connector::Described,
}

/// Carries out the effects of every execution of one `updraft run`.
struct Driver<'a> {
    args: &'a RunArgs,
    /// The S3 side of the run's data, when the settings give an `s3://` prefix.
    remote: Option<Remote>,
    root_pkg: Arc<CompiledPackage>,
    root: PathBuf,
    cache: Arc<LocalCache>,
    /// The connectors that run this run's tasks.
    registry: Registry,
    /// Started attempts by name, so an abort reaches what their start made.
    handles: Arc<Mutex<BTreeMap<String, Slot>>>,
    /// Drives the connectors' calls from the attempts' threads.
    rt: Arc<tokio::runtime::Runtime>,
    runs: Vec<Live>,
    /// Child execution name → its run, so a repeated start finds the child it made.
    by_name: BTreeMap<String, usize>,
    tx: Sender<(usize, Event)>,
    /// Events produced by the driver itself (a child's end), handled before anything else.
    local: VecDeque<(usize, Event)>,
    /// Task attempts and timers under way.
    outstanding: usize,
    waiting_signals: BTreeSet<String>,
    started: Instant,
    /// Live lines of running nodes (on a terminal) and phase changes.
    progress: Progress,
    summary: store::Summary,
    /// Starts' notes for the history, from the attempts' threads.
    notes: Arc<Mutex<Vec<Note>>>,
    /// When `history.json` was last written.
    history_written: Option<Instant>,
}

impl Driver<'_> {
    fn start_run(
        &mut self,
        name: String,
        program: Program,
        parent: Option<(usize, NodeIdx)>,
        inputs: LiteralMap,
    ) -> anyhow::Result<Option<ExitCode>> {
        let (dir, prefix) = match parent {
            None => (self.root.clone(), String::new()),
            Some((p, node)) => {
                let up = &self.runs[p];
                let id = &up.program.package.workflows[&up.program.workflow]
                    .node(node)
                    .id;
                (up.root.join(id).join("sub"), format!("{}{id}/", up.prefix))
            }
        };
        let mut config = ExecConfig::new(name.clone());
        config.max_parallelism =
            Some(self.args.parallelism.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
            }));
        config.overwrite_cache = self.args.overwrite_cache;
        let exec = Execution::new(&program, config).map_err(anyhow::Error::msg)?;
        let signal_types = signal_types(&program.package.workflows[&program.workflow]);
        self.runs.push(Live {
            exec,
            program,
            root: dir,
            parent,
            prefix,
            signal_types,
        });
        let run = self.runs.len() - 1;
        self.by_name.insert(name, run);
        self.step(run, Event::Start { inputs })
    }

    /// Steps one execution and carries out its effects; returns the exit code once the top one ends.
    fn step(&mut self, run: usize, ev: Event) -> anyhow::Result<Option<ExitCode>> {
        let array_elem = match &ev {
            Event::Task {
                node,
                index: Some(_),
                ..
            } => Some(*node),
            _ => None,
        };
        let effects = self.runs[run].exec.step_at(ev, now_ms());
        if let Some(node) = array_elem {
            self.show_array(run, node);
        }
        for e in effects {
            if let Some(code) = self.apply(run, e)? {
                return Ok(Some(code));
            }
        }
        Ok(None)
    }

    fn node_path(&self, run: usize, node: NodeIdx) -> String {
        let r = &self.runs[run];
        let id = &r.program.package.workflows[&r.program.workflow]
            .node(node)
            .id;
        format!("{}{id}", r.prefix)
    }

    /// Applies one effect of run `run` through the one interpreter every runtime shares; returns the
    /// exit code once the top execution ends.
    fn apply(&mut self, run: usize, e: Effect) -> anyhow::Result<Option<ExitCode>> {
        let rt = self.rt.clone();
        let mut host = RunHost {
            d: self,
            run,
            exit: None,
            child: None,
        };
        rt.block_on(updraft_connector::effects::apply(&mut host, e))?;
        let (exit, child) = (host.exit, host.child);
        if exit.is_some() {
            return Ok(exit);
        }
        // A child runs its first step once the effect is done (outside the interpreter's call).
        match child {
            Some((name, program, node, inputs)) => {
                self.start_run(name, program, Some((run, node)), inputs)
            }
            None => Ok(None),
        }
    }

    /// Hands a signal to every running execution with a gate for it; false when none takes it.
    fn deliver_signal(&mut self, id: &str, v: &Value) -> bool {
        let mut taken = false;
        let mut wanted = false;
        for run in 0..self.runs.len() {
            if self.runs[run].exec.phase().is_terminal() {
                continue;
            }
            let Some(t) = self.runs[run].signal_types.get(id) else {
                continue;
            };
            wanted = true;
            match from_json(v, t) {
                Ok(value) => {
                    taken = true;
                    self.local.push_back((
                        run,
                        Event::Signal {
                            id: id.to_string(),
                            value: Box::new(value),
                        },
                    ));
                }
                Err(e) => self
                    .progress
                    .line(&format!("updraft: signal `{id}` ignored: {e}")),
            }
        }
        if !wanted {
            self.progress.line(&format!(
                "updraft: signal `{id}` ignored: no gate of this execution waits for it"
            ));
        }
        taken
    }

    /// Notes in the executions' histories what the attempts' starts made.
    fn take_notes(&mut self) {
        for n in std::mem::take(&mut *lock(&self.notes)) {
            if let Some(r) = self.runs.get_mut(n.run) {
                let d = &n.described;
                r.exec
                    .note_attempt(n.node, n.index, n.attempt, &d.external, &d.logs);
            }
        }
    }

    /// The history of run `run` with its children's.
    fn history(&self, run: usize) -> ExecutionView {
        let exec = &self.runs[run].exec;
        let nodes: Vec<_> = (0..exec.node_count() as u32)
            .filter_map(|i| exec.node_record(i))
            .collect();
        let mut view = ExecutionView::new(&exec.state_record(), &nodes);
        let program = &self.runs[run].program;
        view.graph = Some(GraphView::of(&program.package.workflows[&program.workflow]));
        for (child, r) in self.runs.iter().enumerate() {
            if let Some((parent, node)) = r.parent
                && parent == run
            {
                view.children.push(ChildView {
                    node: self.runs[run].program.package.workflows
                        [&self.runs[run].program.workflow]
                        .node(node)
                        .id
                        .clone(),
                    execution: self.history(child),
                });
            }
        }
        view
    }

    /// Writes `history.json` (what `updraft status --json` shows): at once when `now`, else at most
    /// twice a second.
    fn save_history(&mut self, now: bool) -> anyhow::Result<()> {
        if !now
            && self
                .history_written
                .is_some_and(|t| t.elapsed().as_millis() < 500)
        {
            return Ok(());
        }
        self.take_notes();
        self.history_written = Some(Instant::now());
        if self.runs.is_empty() {
            return Ok(());
        }
        store::save_history(&self.root, &self.history(0))
    }

    /// Shows an array node's progress.
    fn show_array(&mut self, run: usize, node: NodeIdx) {
        let Some((size, ok, failed)) = self.runs[run].exec.array_progress(node) else {
            return;
        };
        let path = self.node_path(run, node);
        self.progress.array(&path, size, ok, failed);
    }
}

/// What became of an attempt's start, for its abort.
enum Slot {
    /// Started: the connector and what it made.
    Started(Arc<dyn Connector>, Handle),
    /// Aborted (before or after its start).
    Aborted,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts an attempt through its connector and checks it, at the connector's interval, until it ends or
/// is aborted. Passing errors of a check are retried; fifty in a row end the attempt (a system failure).
/// `updraft run` as the interpreter's host: attempts on threads (or the connector's own process),
/// timers as sleeping threads, children as runs of the same driver, the run's folder for the rest.
struct RunHost<'a, 'b> {
    d: &'a mut Driver<'b>,
    run: usize,
    /// The exit code, once the top execution ended.
    exit: Option<ExitCode>,
    /// A child to start once the effect is applied: name, program, node, inputs.
    child: Option<(String, Program, NodeIdx, LiteralMap)>,
}

#[async_trait::async_trait]
impl updraft_connector::effects::Host for RunHost<'_, '_> {
    type Error = anyhow::Error;

    fn program(&self) -> &Program {
        &self.d.runs[self.run].program
    }

    fn launch_plans(&self) -> Arc<CompiledPackage> {
        self.d.root_pkg.clone()
    }

    fn registry(&self) -> &Registry {
        &self.d.registry
    }

    fn node_path(&self, node: NodeIdx) -> String {
        self.d.node_path(self.run, node)
    }

    fn overwrite_cache(&self) -> bool {
        self.d.args.overwrite_cache
    }

    fn feed(&mut self, event: Event) {
        self.d.local.push_back((self.run, event));
    }

    async fn cached(&mut self, key: &str) -> anyhow::Result<Option<LiteralMap>> {
        Ok(self.d.cache.get(key))
    }

    async fn reserve(&mut self, key: &str, holder: &str) -> anyhow::Result<Reservation> {
        self.d.cache.reserve(key, holder).with_context(|| {
            format!(
                "cannot reserve cache key {key} under {}",
                self.d.cache.dir.display()
            )
        })
    }

    fn cache_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(300)
    }

    async fn start_task(
        &mut self,
        t: TaskLaunch,
        task: &CompiledTask,
        conn: Arc<dyn Connector>,
    ) -> anyhow::Result<()> {
        let (d, run) = (&mut *self.d, self.run);
        d.outstanding += 1;
        let (tx, cache, handles, rt) = (
            d.tx.clone(),
            d.cache.clone(),
            d.handles.clone(),
            d.rt.clone(),
        );
        // Local attempts keep their data in the run's folder; a service's, under the same layout
        // below the settings' S3 prefix.
        let (base, data): (String, Arc<dyn updraft_connector::DataStore>) =
            match (&d.remote, conn.remote_data()) {
                (Some(r), true) => {
                    let rel = d.runs[run]
                        .root
                        .strip_prefix(d.root.parent().unwrap_or(&d.root))
                        .unwrap_or(&d.runs[run].root);
                    (
                        format!("{}/executions/{}", r.prefix, rel.display()),
                        r.data.clone(),
                    )
                }
                _ => (d.runs[run].root.display().to_string(), Arc::new(LocalData)),
            };
        let paths = AttemptPaths::under(&base, &t);
        // Where `updraft logs` looks for the attempt, whichever store holds its data.
        let local_dir =
            PathBuf::from(AttemptPaths::under(&d.runs[run].root.display().to_string(), &t).dir);
        let task = task.clone();
        let printer = d.progress.printer();
        let notes = d.notes.clone();
        std::thread::spawn(move || {
            let (node, index, attempt) = (t.node, t.index, t.attempt);
            let send = |status| {
                tx.send((
                    run,
                    Event::Task {
                        node,
                        index,
                        attempt,
                        status,
                    },
                ))
            };
            let _ = send(TaskStatus::Running);
            let a = Attempt {
                launch: &t,
                task: &task,
                paths: &paths,
                data: data.as_ref(),
                signal: None,
            };
            let note = |described| {
                lock(&notes).push(Note {
                    run,
                    node,
                    index,
                    attempt,
                    described,
                });
            };
            let status = drive(&rt, &conn, &a, &handles, &local_dir, &printer, &note);
            if let (Some(k), TaskStatus::Succeeded { outputs, .. }) = (&t.cache_key, &status) {
                cache.put(k, outputs);
            }
            // Stored (or failed): an attempt waiting on the same key may look again.
            cache.release(&t.name);
            let _ = send(status);
        });
        Ok(())
    }

    async fn abort_task(&mut self, name: &str) -> anyhow::Result<()> {
        let before = lock(&self.d.handles).insert(name.to_string(), Slot::Aborted);
        if let Some(Slot::Started(conn, h)) = before
            && let Err(e) = conn.abort(&h).await
        {
            self.d
                .progress
                .line(&format!("updraft: could not abort {}: {e}", h.value));
        }
        Ok(())
    }

    async fn timer(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        kind: TimerKind,
        after: std::time::Duration,
    ) -> anyhow::Result<()> {
        self.d.outstanding += 1;
        let (tx, run) = (self.d.tx.clone(), self.run);
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let _ = tx.send((
                run,
                Event::Timer {
                    node,
                    index,
                    attempt,
                    kind,
                },
            ));
        });
        Ok(())
    }

    async fn start_child(
        &mut self,
        node: NodeIdx,
        name: &str,
        child: Child,
    ) -> anyhow::Result<Result<(), ExecError>> {
        // A name already started is that child.
        if !self.d.by_name.contains_key(name) {
            let (program, inputs) = match child {
                Child::LaunchPlan { program, inputs } => (program, inputs),
                Child::Dynamic { program, .. } => (program, LiteralMap::default()),
            };
            self.child = Some((name.to_string(), program, node, inputs));
        }
        Ok(Ok(()))
    }

    async fn abort_child(&mut self, _node: NodeIdx, name: &str) -> anyhow::Result<()> {
        if let Some(&child) = self.d.by_name.get(name) {
            self.d.local.push_back((
                child,
                Event::Abort {
                    reason: "its parent node stopped".into(),
                },
            ));
        }
        Ok(())
    }

    async fn node_phase(&mut self, node: NodeIdx, phase: NodePhase) -> anyhow::Result<()> {
        let d = &mut *self.d;
        let path = d.node_path(self.run, node);
        let r = &d.runs[self.run];
        let n = r.program.package.workflows[&r.program.workflow].node(node);
        d.summary.nodes.insert(path.clone(), format!("{phase:?}"));
        if let NodeKind::Gate(G::Approve { signal_id } | G::Signal { signal_id, .. }) = &n.kind {
            if phase == NodePhase::Running {
                d.waiting_signals.insert(signal_id.clone());
            } else {
                d.waiting_signals.remove(signal_id);
            }
        }
        d.progress
            .phase(&path, &format!("{phase:?}"), phase.is_terminal());
        Ok(())
    }

    async fn finished(
        &mut self,
        phase: ExecPhase,
        outputs: Option<LiteralMap>,
        error: Option<ExecError>,
    ) -> anyhow::Result<()> {
        let d = &mut *self.d;
        if let Some((parent, node)) = d.runs[self.run].parent {
            let result = match (phase, outputs) {
                (ExecPhase::Succeeded, Some(o)) => Ok(o),
                _ => Err(error.unwrap_or_else(|| ExecError {
                    node: d.node_path(parent, node),
                    code: "ChildFailed".into(),
                    message: format!("the child execution ended {phase:?}"),
                    kind: ErrorKind::User,
                })),
            };
            d.local.push_back((parent, Event::Child { node, result }));
            return Ok(());
        }
        d.progress.clear();
        let summary = &mut d.summary;
        summary.phase = format!("{phase:?}");
        summary.waiting_for.clear();
        summary.error = error
            .as_ref()
            .map(|e| format!("node {}: {} ({})", e.node, e.message, e.code));
        summary.outputs = outputs.as_ref().map(|o| {
            Value::Object(
                o.literals
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect(),
            )
        });
        store::save(&d.root, summary)?;
        let name = summary.name.clone();
        d.save_history(true)?;
        self.exit = Some(report_end(&name, phase, outputs, error, d.started));
        Ok(())
    }
}

fn drive(
    rt: &tokio::runtime::Runtime,
    conn: &Arc<dyn Connector>,
    a: &Attempt<'_>,
    handles: &Mutex<BTreeMap<String, Slot>>,
    local_dir: &Path,
    printer: &Printer,
    note: &dyn Fn(updraft_connector::Described),
) -> TaskStatus {
    let name = &a.launch.name;
    let aborted = || {
        failed(
            "Aborted",
            "the attempt was aborted",
            ErrorKind::System,
            false,
        )
    };
    if matches!(lock(handles).get(name), Some(Slot::Aborted)) {
        return aborted();
    }
    // The attempt's folders on this machine, its inputs (and its template, when it reads it).
    let prepared = [&a.paths.output_prefix, &a.paths.raw_output_prefix]
        .iter()
        .filter(|p| !p.contains("://"))
        .try_for_each(std::fs::create_dir_all)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            rt.block_on(
                a.paths
                    .write_inputs(a.data, a.launch, a.task, conn.inline_inputs(a)),
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = prepared {
        return failed(
            "LocalIo",
            format!("{}: {e}", a.paths.dir),
            ErrorKind::System,
            true,
        );
    }
    let h = match rt.block_on(conn.start(a)) {
        Ok(h) => h,
        Err(ended) => return ended,
    };
    // For the history: what the start made, and where its logs are (a local process's in its folder).
    let mut described = conn.describe(&h);
    if conn.name() == "local" {
        for f in ["stdout.log", "stderr.log"] {
            described.logs.push(local_dir.join(f).display().to_string());
        }
    }
    note(described);
    // Where a service keeps the attempt's logs (a job run's log folder, its console page): shown now,
    // and kept for `updraft logs`.
    if let Some(logs) = h.value["logs"].as_array().filter(|l| !l.is_empty()) {
        let logs: Vec<&str> = logs.iter().filter_map(|l| l.as_str()).collect();
        printer.line(&format!("updraft: {name} logs: {}", logs.join(" ")));
        let kept = std::fs::create_dir_all(local_dir).and_then(|()| {
            std::fs::write(local_dir.join("service-logs.txt"), logs.join("\n") + "\n")
        });
        if let Err(e) = kept {
            printer.line(&format!(
                "updraft: {name}: cannot keep its log locations: {e}"
            ));
        }
    }
    {
        let mut slots = lock(handles);
        if matches!(slots.get(name), Some(Slot::Aborted)) {
            drop(slots);
            let _ = rt.block_on(conn.abort(&h));
            return aborted();
        }
        slots.insert(name.clone(), Slot::Started(conn.clone(), h.clone()));
    }
    let mut errors = 0u32;
    loop {
        if matches!(lock(handles).get(name), Some(Slot::Aborted)) {
            return aborted();
        }
        match rt.block_on(conn.check(&h, a.data)) {
            Ok(TaskStatus::Queued | TaskStatus::Running) => errors = 0,
            Ok(end) => {
                lock(handles).remove(name);
                if let Err(e) = rt.block_on(conn.finalize(&h)) {
                    printer.line(&format!("updraft: could not clean up after {name}: {e}"));
                }
                return end;
            }
            Err(e) => {
                errors += 1;
                if errors >= 50 {
                    lock(handles).remove(name);
                    let _ = rt.block_on(conn.abort(&h));
                    return failed(
                        "CheckFailed",
                        format!("could not check the attempt: {e}"),
                        ErrorKind::System,
                        true,
                    );
                }
            }
        }
        std::thread::sleep(conn.check_interval());
    }
}

fn report_end(
    name: &str,
    phase: ExecPhase,
    outputs: Option<LiteralMap>,
    error: Option<updraft_engine::exec::ExecError>,
    started: Instant,
) -> ExitCode {
    let took = started.elapsed().as_secs_f64();
    match phase {
        ExecPhase::Succeeded => {
            let json: serde_json::Map<String, Value> = outputs
                .unwrap_or_default()
                .literals
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect();
            eprintln!("updraft: {name} succeeded in {took:.2}s");
            out!(
                "{}",
                serde_json::to_string_pretty(&Value::Object(json)).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        _ => {
            let e = error.map_or_else(String::new, |e| {
                if e.node.is_empty() {
                    format!(": {} ({})", e.message, e.code)
                } else {
                    format!(": node {}: {} ({})", e.node, e.message, e.code)
                }
            });
            eprintln!(
                "updraft: {name} {}{e}",
                match phase {
                    ExecPhase::Aborted => "was aborted",
                    _ => "failed",
                }
            );
            ExitCode::FAILURE
        }
    }
}

/// The variables that point a local task's process at the settings' AWS: `aws.endpoint` as flytekit's
/// S3 endpoint (`FLYTE_AWS_ENDPOINT`) and the SDKs' (`AWS_ENDPOINT_URL`), `aws.region` as the region, so
/// a task reading a blob in S3 reads the same S3 the run's services write to.
fn aws_env(settings: &updraft_settings::Settings) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(e) = &settings.aws.endpoint {
        env.push(("FLYTE_AWS_ENDPOINT".to_string(), e.clone()));
        env.push(("AWS_ENDPOINT_URL".to_string(), e.clone()));
    }
    if let Some(r) = &settings.aws.region {
        env.push(("AWS_REGION".to_string(), r.clone()));
        env.push(("AWS_DEFAULT_REGION".to_string(), r.clone()));
    }
    env
}

/// Where a task is, for an error about it: its file (and entry) and the workflow nodes that call it
/// (`file!entry: workflow W node n0, n3: `).
fn task_place(
    pkg: &updraft_engine::Package,
    compiled: &CompiledPackage,
    workflow: &str,
    task: &str,
) -> String {
    let file = pkg
        .tasks
        .get(task)
        .map(|t| format!("{}: ", t.origin.display()))
        .unwrap_or_default();
    let nodes = updraft_engine::launch::task_nodes_text(compiled, workflow, task);
    if nodes.is_empty() {
        file
    } else {
        format!("{file}{nodes}: ")
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
