//! The warm worker: one Python process per interpreter that has imported flytekit once and forks a
//! process per task from itself (as a forkserver does), so a task starts in tens of milliseconds instead
//! of paying for a new interpreter and flytekit's import. `worker.py` is the Python side; this module
//! starts it, hands it tasks and learns their ends.
//!
//! Each task is still its own process — its own process group, environment, working folder, stdout and
//! stderr files, exit code — so timeouts, aborts and crashes behave as with a process started directly.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use crate::lock;
use std::time::Duration;

use serde_json::{Value, json};

/// The Python side, run with `python -u -c`.
const WORKER_PY: &str = include_str!("worker.py");

/// How long a worker may take to import flytekit and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a fork may take to be answered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// How a task process ended, as the worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

/// What the worker told us, gathered by its reader thread.
#[derive(Debug, Default)]
struct State {
    ready: Option<Result<(), String>>,
    replies: BTreeMap<u64, Value>,
    exits: BTreeMap<u32, Exit>,
    /// The worker's stdout closed: it is gone, and so is any news of its tasks.
    gone: bool,
    /// The last lines the worker wrote to stderr (its own diagnostics).
    stderr: Vec<String>,
}

/// A running warm worker.
#[derive(Debug)]
pub struct Worker {
    python: PathBuf,
    child: Mutex<Child>,
    stdin: Mutex<ChildStdin>,
    state: Arc<(Mutex<State>, Condvar)>,
    next_id: Mutex<u64>,
}

/// A task for the worker to start.
#[derive(Debug)]
pub struct Request<'a> {
    /// The console script (its path in the environment's bin folder) and its arguments.
    pub argv: &'a [String],
    /// The whole environment of the task's process.
    pub env: &'a BTreeMap<String, String>,
    /// Its working folder.
    pub cwd: &'a Path,
    /// Where its stdout goes.
    pub stdout: &'a Path,
    /// Where its stderr goes.
    pub stderr: &'a Path,
}

/// Why the worker did not start a task.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The worker declined this task (e.g. its program is not a console script of the environment);
    /// a process can still run it.
    #[error("{0}")]
    Declined(String),
    /// The worker is gone or does not answer; a process can still run the task.
    #[error("the warm worker stopped: {0}")]
    Gone(String),
}

impl Worker {
    /// Starts a worker with `python`, the environment `env` (on top of this process's), and waits until
    /// it has imported flytekit; the error says why it cannot host tasks.
    pub fn start(python: &Path, env: &[(String, String)]) -> Result<Self, String> {
        let mut child = Command::new(python)
            .args(["-u", "-c", WORKER_PY])
            // Its own group: a Ctrl-C at the terminal reaches `updraft`, which decides what stops.
            .process_group(0)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", python.display()))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err("the worker's pipes were not set up".into());
        };
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        {
            let state = state.clone();
            std::thread::spawn(move || read_events(stdout, &state));
        }
        {
            let state = state.clone();
            std::thread::spawn(move || read_stderr(stderr, &state));
        }
        let worker = Self {
            python: python.to_path_buf(),
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            state,
            next_id: Mutex::new(0),
        };
        let (m, cv) = &*worker.state;
        let (st, timeout) = cv
            .wait_timeout_while(lock(m), READY_TIMEOUT, |s| s.ready.is_none() && !s.gone)
            .unwrap_or_else(|e| e.into_inner());
        let result = match &st.ready {
            Some(r) => r.clone(),
            None if timeout.timed_out() => Err(format!(
                "it did not get ready in {}s",
                READY_TIMEOUT.as_secs()
            )),
            None => Err(format!("it exited: {}", st.stderr.join("\n"))),
        };
        drop(st);
        match result {
            Ok(()) => Ok(worker),
            Err(e) => {
                worker.stop();
                Err(e)
            }
        }
    }

    /// The interpreter this worker runs.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Forks a process for the task; its process id (also its process group's).
    pub fn spawn(&self, req: &Request<'_>) -> Result<u32, Refused> {
        let id = {
            let mut n = lock(&self.next_id);
            *n += 1;
            *n
        };
        let line = json!({
            "id": id,
            "argv": req.argv,
            "env": req.env,
            "cwd": req.cwd,
            "stdout": req.stdout,
            "stderr": req.stderr,
        })
        .to_string()
            + "\n";
        lock(&self.stdin)
            .write_all(line.as_bytes())
            .map_err(|e| Refused::Gone(e.to_string()))?;
        let (m, cv) = &*self.state;
        let (mut st, _) = cv
            .wait_timeout_while(lock(m), REPLY_TIMEOUT, |s| {
                !s.replies.contains_key(&id) && !s.gone
            })
            .unwrap_or_else(|e| e.into_inner());
        let Some(reply) = st.replies.remove(&id) else {
            return Err(Refused::Gone(if st.gone {
                st.stderr.join("\n")
            } else {
                format!("no answer in {}s", REPLY_TIMEOUT.as_secs())
            }));
        };
        if let Some(pid) = reply["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
            return Ok(pid);
        }
        Err(Refused::Declined(
            reply["refused"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string(),
        ))
    }

    /// How process `pid` ended, once it did (told once: the end is forgotten as it is taken); `Err`
    /// when the worker is gone and cannot tell any more.
    pub fn take_exit(&self, pid: u32) -> Result<Option<Exit>, String> {
        let mut st = lock(&self.state.0);
        if let Some(e) = st.exits.remove(&pid) {
            return Ok(Some(e));
        }
        if st.gone {
            return Err(format!(
                "the warm worker stopped while the task ran: {}",
                st.stderr.join("\n")
            ));
        }
        Ok(None)
    }

    /// Whether the worker is gone (a new one is needed for new tasks).
    pub fn is_gone(&self) -> bool {
        lock(&self.state.0).gone
    }

    /// Stops the worker (tasks it started keep running to their end or their kill).
    pub fn stop(&self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_events(stdout: impl Read, state: &(Mutex<State>, Condvar)) {
    let (m, cv) = state;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let mut st = lock(m);
        if let Some(ready) = v.get("ready") {
            st.ready = Some(ready_of(ready));
        } else if let Some(pid) = v["exit"].as_u64().and_then(|p| u32::try_from(p).ok()) {
            let int = |k: &str| v[k].as_i64().and_then(|c| i32::try_from(c).ok());
            st.exits.insert(
                pid,
                Exit {
                    code: int("code"),
                    signal: int("signal"),
                },
            );
        } else if let Some(id) = v["id"].as_u64() {
            st.replies.insert(id, v);
        }
        cv.notify_all();
    }
    lock(m).gone = true;
    cv.notify_all();
}

/// Whether a ready worker can host tasks: forking a process that runs threads is unsafe.
fn ready_of(ready: &Value) -> Result<(), String> {
    let threads = ready["threads"].as_u64().unwrap_or(1);
    if threads > 1 {
        return Err(format!(
            "importing flytekit started {threads} threads in it, and forking a process with threads is unsafe"
        ));
    }
    let has = |m: &str| {
        ready["preloaded"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x == m))
    };
    if !has("flytekit") {
        let errors: Vec<&str> = ready["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        return Err(format!(
            "flytekit is not importable by this interpreter ({})",
            errors.join("; ")
        ));
    }
    Ok(())
}

fn read_stderr(stderr: impl Read, state: &(Mutex<State>, Condvar)) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let mut st = lock(&state.0);
        st.stderr.push(line);
        if st.stderr.len() > 20 {
            st.stderr.remove(0);
        }
    }
}

/// The Python interpreter of a console script: the `#!` line of `script` (e.g. `pyflyte-execute` on
/// PATH), `#!/usr/bin/env python3` looked up on PATH; `None` when it is not a Python script.
pub fn interpreter_of(script: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 512];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let first = String::from_utf8_lossy(&head[..n])
        .lines()
        .next()?
        .to_string();
    let mut words = first.strip_prefix("#!")?.split_whitespace();
    let mut interp = PathBuf::from(words.next()?);
    if interp.file_name().is_some_and(|f| f == "env") {
        interp = on_path(words.find(|w| !w.starts_with('-'))?)?;
    }
    let is_python = interp
        .file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| f.starts_with("python"));
    (interp.is_absolute() && is_python).then_some(interp)
}

/// Where `program` is on this process's PATH.
pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
    crate::containers::on_path(program, &std::env::var_os("PATH")?)
}
