//! The local store: what `updraft run` records under `<state-dir>/executions/<name>/`, and the commands
//! that read it (`list`, `status`, `logs`) or steer a running execution (`abort`, `signal`).
//!
//! - `execution.json` — the execution's summary, rewritten (atomically) on every node phase change;
//! - `history.json` — its history (every node's phase changes and attempts, with their times; children
//!   within), as `updraft status --json` prints it: rewritten at most twice a second and at the end;
//! - `<node>[-<index>]/<attempt>/` — each attempt's inputs, outputs and `stdout.log` / `stderr.log`;
//! - `<node>/sub/…` — the same layout for the child execution of a launch-plan node or of a dynamic task
//!   (its nodes are shown as `<node>/<child node>`);
//! - `control/abort`, `control/signals/<id>.json` — written by `abort` and `signal`, read by the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The summary `execution.json` holds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Execution name.
    pub name: String,
    /// Workflow it runs.
    pub workflow: String,
    /// Execution phase.
    pub phase: String,
    /// Start time, seconds since the epoch.
    pub started: u64,
    /// Node id → phase.
    pub nodes: BTreeMap<String, String>,
    /// Signals the execution waits for.
    pub waiting_for: Vec<String>,
    /// The error it failed with.
    pub error: Option<String>,
    /// Outputs, once it succeeded.
    pub outputs: Option<Value>,
    /// What ran it, for a relaunch: the files (absolute paths), the launch plan and the Python.
    #[serde(default)]
    pub launch: Option<Launch>,
}

/// How `updraft run` started an execution: what a relaunch runs again.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    /// Packages and YAML files, absolute.
    pub files: Vec<PathBuf>,
    /// The launch plan it ran.
    pub launch_plan: String,
    /// `--python`.
    pub python: Option<PathBuf>,
    /// `--settings`.
    pub settings: Option<PathBuf>,
}

/// Every execution's summary under `state` (unreadable ones left out).
pub fn summaries(state: &Path) -> Vec<Summary> {
    std::fs::read_dir(state.join("executions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| load(&e.path()).ok())
        .collect()
}

/// The folder of execution `name`.
pub fn exec_dir(state: &Path, name: &str) -> PathBuf {
    state.join("executions").join(name)
}

/// Writes the summary atomically.
pub fn save(dir: &Path, s: &Summary) -> anyhow::Result<()> {
    let tmp = dir.join("execution.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)?;
    std::fs::rename(&tmp, dir.join("execution.json"))?;
    Ok(())
}

/// Writes the history atomically.
pub fn save_history(
    dir: &Path,
    view: &updraft_engine::exec::history::ExecutionView,
) -> anyhow::Result<()> {
    let tmp = dir.join("history.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(view)?)?;
    std::fs::rename(&tmp, dir.join("history.json"))?;
    Ok(())
}

/// The history of execution `name` as `history.json` holds it; a child execution's is found in its
/// parent's.
pub fn history(
    state: &Path,
    name: &str,
) -> anyhow::Result<updraft_engine::exec::history::ExecutionView> {
    let dir = exec_dir(state, name);
    if let Err(e) = load(&dir) {
        fn find(
            v: updraft_engine::exec::history::ExecutionView,
            name: &str,
        ) -> Option<updraft_engine::exec::history::ExecutionView> {
            if v.name == name {
                return Some(v);
            }
            v.children.into_iter().find_map(|c| find(c.execution, name))
        }
        // Not a top execution: a child of one (names of children start with their parent's).
        for s in summaries(state) {
            if name.starts_with(&s.name)
                && let Ok(top) = history(state, &s.name)
                && let Some(child) = find(top, name)
            {
                return Ok(child);
            }
        }
        return Err(e);
    }
    let path = dir.join("history.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no history (an execution run by an Updraft that kept none)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{}: unreadable", path.display()))
}

fn load(dir: &Path) -> anyhow::Result<Summary> {
    let path = dir.join("execution.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no execution at {}", dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: unreadable", path.display()))
}

/// `updraft list`.
pub fn list(state: &Path) -> anyhow::Result<ExitCode> {
    let dir = state.join("executions");
    let mut rows = summaries(state);
    rows.sort_by_key(|s| s.started);
    if rows.is_empty() {
        eprintln!("no executions under {}", dir.display());
    }
    for s in rows {
        out!("{:<16} {:<10} {}", s.name, s.phase, s.workflow);
    }
    Ok(ExitCode::SUCCESS)
}

/// `updraft status <exec>` (`json`: its history, as JSON).
pub fn status(state: &Path, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        out!("{}", serde_json::to_string_pretty(&history(state, name)?)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = load(&exec_dir(state, name))?;
    out!("{} ({}): {}", s.name, s.workflow, s.phase);
    for (id, phase) in &s.nodes {
        out!("  {id:<28} {phase}");
    }
    if !s.waiting_for.is_empty() {
        out!("waiting for: {}", s.waiting_for.join(", "));
    }
    if let Some(e) = &s.error {
        out!("error: {e}");
    }
    if let Some(o) = &s.outputs {
        out!("outputs: {}", serde_json::to_string_pretty(o)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `updraft watch <exec>`: prints node phase changes of an execution another `updraft run` drives until
/// it ends; then its outputs as JSON (exit 0) or its error (exit 1).
pub fn watch(state: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let dir = exec_dir(state, name);
    let started = std::time::Instant::now();
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let s = load(&dir)?;
        for (id, phase) in &s.nodes {
            if shown.get(id) != Some(phase) {
                eprintln!(
                    "  [{:>7.2}s] {id:<24} {phase}",
                    started.elapsed().as_secs_f64()
                );
                shown.insert(id.clone(), phase.clone());
            }
        }
        if matches!(s.phase.as_str(), "Succeeded" | "Failed" | "Aborted") {
            if let Some(o) = &s.outputs {
                out!("{}", serde_json::to_string_pretty(o)?);
            }
            if let Some(e) = &s.error {
                eprintln!("updraft: {name} {}: {e}", s.phase);
            }
            return Ok(if s.phase == "Succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// `updraft logs <exec> <node>`: the captured output of the node's attempt (the last one by default).
pub fn logs(
    state: &Path,
    name: &str,
    node: &str,
    attempt: Option<u32>,
    index: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let dir = exec_dir(state, name);
    load(&dir)?;
    let folder = match index {
        Some(i) => format!("{node}-{i}"),
        None => node.to_string(),
    };
    // A node of a child execution (`n0/dn1`) keeps its attempts under its parent node's `sub/` folder.
    let node_dir = dir.join(folder.replace('/', "/sub/"));
    let attempt = match attempt {
        Some(a) => a,
        None => std::fs::read_dir(&node_dir)
            .with_context(|| format!("node `{folder}` of {name} has run no task attempt"))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .max()
            .with_context(|| format!("node `{folder}` of {name} has run no task attempt"))?,
    };
    let a = node_dir.join(attempt.to_string());
    // A local process's output; for an attempt a service ran, where the service keeps its logs.
    let mut shown = 0;
    for f in ["stdout.log", "stderr.log", "service-logs.txt"] {
        let Ok(text) = std::fs::read_to_string(a.join(f)) else {
            continue;
        };
        out!("==> {folder} attempt {attempt} {f} <==");
        out_raw!("{text}");
        shown += 1;
    }
    if shown == 0 {
        bail!(
            "{}: no stdout.log, stderr.log or service-logs.txt (the attempt has not started, or its \
             service keeps no logs Updraft knows of)",
            a.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn running(state: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = exec_dir(state, name);
    let s = load(&dir)?;
    if !matches!(s.phase.as_str(), "Running" | "Failing" | "Queued") {
        bail!("execution {name} is {}; nothing to steer", s.phase);
    }
    let control = dir.join("control");
    std::fs::create_dir_all(control.join("signals"))?;
    Ok(control)
}

/// `updraft abort <exec>`.
pub fn abort(state: &Path, name: &str, reason: &str) -> anyhow::Result<ExitCode> {
    let control = running(state, name)?;
    std::fs::write(control.join("abort"), reason)?;
    eprintln!("updraft: asked {name} to abort");
    Ok(ExitCode::SUCCESS)
}

/// `updraft signal <exec> <id> <value>` (the value as JSON, or plain text).
pub fn signal(state: &Path, name: &str, id: &str, value: &str) -> anyhow::Result<ExitCode> {
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        bail!("`{id}` is not a signal id");
    }
    let control = running(state, name)?;
    let v: Value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    let tmp = control.join("signals").join(format!(".{id}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&json!({ "value": v }))?)?;
    std::fs::rename(&tmp, control.join("signals").join(format!("{id}.json")))?;
    eprintln!("updraft: sent `{id}` to {name}");
    Ok(ExitCode::SUCCESS)
}

/// What the control folder asks of a running execution: abort (with a reason), and new signals.
pub fn poll_control(
    dir: &Path,
    seen: &mut std::collections::BTreeSet<String>,
) -> (Option<String>, Vec<(String, Value)>) {
    let control = dir.join("control");
    let abort = std::fs::read_to_string(control.join("abort")).ok();
    let mut signals = Vec::new();
    for e in std::fs::read_dir(control.join("signals"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(id) = file.strip_suffix(".json") else {
            continue;
        };
        if id.starts_with('.') || seen.contains(id) {
            continue;
        }
        if let Ok(v) = std::fs::read(e.path())
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<Value>(&b)?))
        {
            seen.insert(id.to_string());
            signals.push((
                id.to_string(),
                v.get("value").cloned().unwrap_or(Value::Null),
            ));
        }
    }
    (
        abort.map(|r| {
            if r.trim().is_empty() {
                "aborted".to_string()
            } else {
                r
            }
        }),
        signals,
    )
}
