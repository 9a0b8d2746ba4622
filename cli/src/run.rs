//! `updraft run`: executes a workflow on this machine with the embedded engine and the local executor.

use std::collections::{BTreeMap, BTreeSet};

use crate::store;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;
use updraft_connector_local::LocalExecutor;
use updraft_engine::CompiledPackage;
use updraft_engine::compile::Gate as G;
use updraft_engine::compile::NodeKind::Gate;
use updraft_engine::exec::{
    Effect, ErrorKind, Event, ExecConfig, ExecPhase, Execution, NodePhase, Program, TaskStatus,
};
use updraft_engine::literal::{from_json, to_json};
use updraft_engine::plugins::PluginKind;
use updraft_proto::core::LiteralMap;

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
}

/// Outputs of cached tasks, one file per cache key under `<state-dir>/cache/`.
struct LocalCache {
    dir: PathBuf,
}

impl LocalCache {
    fn path(&self, key: &str) -> PathBuf {
        // Keys are `task:version:sha256`; made file-name safe, they stay distinct.
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.pb"))
    }

    fn get(&self, key: &str) -> Option<LiteralMap> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        updraft_proto::Message::decode(&bytes[..]).ok()
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
    if let Some(lp) = &args.launch_plan {
        if !pkg.launch_plans.contains_key(lp) {
            bail!(
                "no launch plan `{lp}`; the files define: {:?}",
                pkg.launch_plans.keys().collect::<Vec<_>>()
            );
        }
        return Ok(lp.clone());
    }
    let wf = match &args.workflow {
        Some(w) => w.clone(),
        None => loaded_order
            .last()
            .cloned()
            .context("the files define no workflow")?,
    };
    if !pkg.workflows.contains_key(&wf) {
        bail!(
            "no workflow `{wf}`; the files define: {:?}",
            pkg.workflows.keys().collect::<Vec<_>>()
        );
    }
    pkg.launch_plans
        .iter()
        .find(|(name, lp)| **name == wf && lp.workflow == wf)
        .or_else(|| pkg.launch_plans.iter().find(|(_, lp)| lp.workflow == wf))
        .map(|(n, _)| n.clone())
        .with_context(|| format!("workflow `{wf}` has no launch plan"))
}

fn gather_inputs(
    pkg: &CompiledPackage,
    lp_name: &str,
    args: &RunArgs,
) -> anyhow::Result<LiteralMap> {
    let lp = &pkg.launch_plans[lp_name];
    let mut given: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(f) = &args.inputs_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", f.display()))?;
        let Value::Object(m) = v else {
            bail!("{}: inputs must be a JSON object", f.display())
        };
        given.extend(m);
    }
    for kv in &args.inputs {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--input `{kv}`: write name=value"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        given.insert(k.to_string(), value);
    }
    let mut out = lp.defaults.clone();
    for (k, v) in given {
        if lp.fixed.contains_key(&k) {
            bail!("input `{k}` is fixed by launch plan `{lp_name}`");
        }
        let t = lp.interface.inputs.get(&k).with_context(|| {
            format!(
                "`{k}` is not an input of `{}` (inputs: {:?})",
                lp.workflow,
                lp.interface.inputs.keys().collect::<Vec<_>>()
            )
        })?;
        let lit = from_json(&v, t).map_err(|e| anyhow::anyhow!("input `{k}`: {e}"))?;
        out.insert(k, lit);
    }
    out.extend(lp.fixed.clone());
    let missing: Vec<&String> = lp
        .required
        .iter()
        .filter(|r| !out.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        bail!("missing required input(s) {missing:?} (give them with --input name=value)");
    }
    Ok(LiteralMap { literals: out })
}

/// Runs the chosen workflow to its end; prints progress to stderr and the outputs as JSON to stdout.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let pkg = match crate::load::load(&args.files) {
        Ok(p) => p,
        Err(p) => return Ok(crate::report(&p)),
    };
    let compiled = match updraft_engine::compile(&pkg) {
        Ok(c) => Arc::new(c),
        Err(p) => return Ok(crate::report(&p)),
    };
    let lp_name = choose(&compiled, &pkg.top_level, &args)?;
    let inputs = gather_inputs(&compiled, &lp_name, &args)?;
    let workflow = compiled.launch_plans[&lp_name].workflow.clone();
    // Tasks this runner cannot run are rejected before anything starts.
    let not_local: BTreeSet<String> = compiled.workflows[&workflow]
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            updraft_engine::compile::NodeKind::Task { task } => compiled.tasks.get(task),
            _ => None,
        })
        .filter(|t| !matches!(t.plugin, PluginKind::Container | PluginKind::Echo))
        .map(|t| format!("{} ({})", t.name, t.plugin))
        .collect();
    if !not_local.is_empty() {
        bail!(
            "{workflow} has tasks that do not run locally yet: {}; nothing was started",
            not_local.into_iter().collect::<Vec<_>>().join(", ")
        );
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
    let executor = Arc::new(LocalExecutor::new(
        root.clone(),
        name.clone(),
        args.python.clone(),
    ));
    let cache = Arc::new(LocalCache {
        dir: std::path::absolute(args.state_dir.join("cache"))?,
    });
    let mut config = ExecConfig::new(name.clone());
    config.max_parallelism = Some(
        args.parallelism
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32)),
    );
    let program = Program {
        package: compiled.clone(),
        workflow: workflow.clone(),
    };
    let mut exec = Execution::new(&program, config).map_err(anyhow::Error::msg)?;
    let wf = &compiled.workflows[&workflow];
    eprintln!(
        "updraft: running {workflow} as {name} (state in {})",
        root.display()
    );
    let started = Instant::now();
    let (tx, rx) = channel::<Event>();
    let mut outstanding = 0usize;
    let mut waiting_signals: BTreeSet<String> = BTreeSet::new();
    let mut seen_signals = BTreeSet::new();
    let mut told_waiting = false;
    let mut summary = store::Summary {
        name: name.clone(),
        workflow: workflow.clone(),
        phase: "Running".into(),
        started: (stamp / 1000) as u64,
        ..Default::default()
    };
    // Signal id → the type its gate expects (approvals take a boolean).
    let signal_types: BTreeMap<String, updraft_proto::core::LiteralType> = wf
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            Gate(G::Approve { signal_id }) => Some((
                signal_id.clone(),
                updraft_engine::types::simple(updraft_proto::core::SimpleType::Boolean),
            )),
            Gate(G::Signal {
                signal_id, r#type, ..
            }) => Some((signal_id.clone(), (**r#type).clone())),
            _ => None,
        })
        .collect();
    let mut effects = exec.step(Event::Start { inputs });
    loop {
        for e in effects.drain(..) {
            match e {
                Effect::StartTask(t) => {
                    outstanding += 1;
                    let task = compiled.tasks.get(&t.task).cloned();
                    let (tx, executor, cache) = (tx.clone(), executor.clone(), cache.clone());
                    let overwrite_cache = args.overwrite_cache;
                    std::thread::spawn(move || {
                        let (node, index, attempt) = (t.node, t.index, t.attempt);
                        let send = |status| {
                            tx.send(Event::Task {
                                node,
                                index,
                                attempt,
                                status,
                            })
                        };
                        let status = match &task {
                            Some(c) if matches!(c.plugin, PluginKind::Container) => {
                                let cached = t
                                    .cache_key
                                    .as_deref()
                                    .filter(|_| !overwrite_cache)
                                    .and_then(|k| cache.get(k));
                                match cached {
                                    Some(outputs) => TaskStatus::Succeeded {
                                        outputs,
                                        cached: true,
                                    },
                                    None => {
                                        let _ = send(TaskStatus::Running);
                                        // Outputs as the task declares them (per element for
                                        // the tasks of YAML maps).
                                        let status =
                                            executor.run(&t, &c.template, &c.interface.outputs);
                                        if let (Some(k), TaskStatus::Succeeded { outputs, .. }) =
                                            (&t.cache_key, &status)
                                        {
                                            cache.put(k, outputs);
                                        }
                                        status
                                    }
                                }
                            }
                            // Checked before the start: every task of the workflow runs locally.
                            _ => TaskStatus::Failed {
                                code: "NotLocal".into(),
                                message: format!("task `{}` does not run locally", t.task),
                                kind: ErrorKind::User,
                                recoverable: false,
                            },
                        };
                        let _ = send(status);
                    });
                }
                Effect::Timer {
                    node,
                    index,
                    attempt,
                    kind,
                    after,
                } => {
                    outstanding += 1;
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(after);
                        let _ = tx.send(Event::Timer {
                            node,
                            index,
                            attempt,
                            kind,
                        });
                    });
                }
                Effect::AbortTask { name, .. } => executor.abort(&name),
                Effect::StartChild {
                    node, launch_plan, ..
                } => {
                    outstanding += 1;
                    let err = updraft_engine::exec::ExecError {
                        node: wf.node(node).id.clone(),
                        code: "NotLocal".into(),
                        message: format!(
                            "launch-plan nodes (`{launch_plan}`) do not run locally yet"
                        ),
                        kind: ErrorKind::User,
                    };
                    let _ = tx.send(Event::Child {
                        node,
                        result: Err(err),
                    });
                }
                Effect::AbortChild { .. } => {}
                Effect::NodePhase { node, phase } => {
                    let n = wf.node(node);
                    summary.nodes.insert(n.id.clone(), format!("{phase:?}"));
                    if let Gate(G::Approve { signal_id } | G::Signal { signal_id, .. }) = &n.kind {
                        if phase == NodePhase::Running {
                            waiting_signals.insert(signal_id.clone());
                        } else {
                            waiting_signals.remove(signal_id);
                        }
                    }
                    eprintln!(
                        "  [{:>7.2}s] {:<24} {phase:?}",
                        started.elapsed().as_secs_f64(),
                        n.id
                    );
                }
                Effect::Finished {
                    phase,
                    outputs,
                    error,
                } => {
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
                    store::save(&root, &summary)?;
                    return Ok(report_end(&name, phase, outputs, error, started));
                }
            }
        }
        summary.phase = format!("{:?}", exec.phase());
        summary.waiting_for = waiting_signals.iter().cloned().collect();
        store::save(&root, &summary)?;
        if outstanding == 0 && !told_waiting {
            if waiting_signals.is_empty() {
                bail!("execution {name} has nothing left to run but did not finish");
            }
            told_waiting = true;
            for id in &waiting_signals {
                eprintln!("updraft: {name} waits for `{id}`: updraft signal {name} {id} <value>");
            }
        }
        let ev = match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let (abort, signals) = store::poll_control(&root, &mut seen_signals);
                if let Some(reason) = abort {
                    effects = exec.step(Event::Abort { reason });
                    continue;
                }
                for (id, v) in signals {
                    match signal_types.get(&id).map(|t| from_json(&v, t)) {
                        Some(Ok(value)) => {
                            told_waiting = false;
                            effects.extend(exec.step(Event::Signal {
                                id,
                                value: Box::new(value),
                            }));
                        }
                        Some(Err(e)) => {
                            // Refused: forget it, so a corrected value can be sent under the same id.
                            eprintln!("updraft: signal `{id}` ignored: {e}");
                            let _ = std::fs::remove_file(
                                root.join("control/signals").join(format!("{id}.json")),
                            );
                            seen_signals.remove(&id);
                        }
                        None => eprintln!(
                            "updraft: signal `{id}` ignored: no gate of {workflow} waits for it"
                        ),
                    }
                }
                continue;
            }
            Err(e) => bail!("the executor stopped: {e}"),
        };
        if matches!(
            ev,
            Event::Task {
                status: TaskStatus::Succeeded { .. } | TaskStatus::Failed { .. },
                ..
            } | Event::Timer { .. }
                | Event::Child { .. }
        ) {
            outstanding -= 1;
        }
        effects = exec.step(ev);
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
            println!(
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
