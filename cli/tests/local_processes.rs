//! `updraft run`'s task processes, with warm workers (the default) and without (`--workers off`), with the
//! real flytekit: each task its own process (group, environment, working folder, output files), what a
//! task starts dying with it on a timeout or an abort (Python tasks in both modes, raw containers run as
//! processes), on Ctrl-C (the run aborts) and when `updraft` itself is killed (warm workers' tasks), a task
//! killed by a signal leaving its siblings alone, a lost worker's task retried by a new one, and an
//! interpreter that cannot host a worker running its tasks as processes, saying why.
//!
//! Needs the Python environment `scripts/python-env` makes (`UPDRAFT_TEST_PYTHON`, set by `scripts/test`)
//! and, for the fallback, the moto environment (`UPDRAFT_TEST_MOTO`, a Python without flytekit).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    fixture_src, flytekit_python, spawn_updraft, temp_dir, updraft, updraft_env, wait_for,
};

const PACKAGE: &str = "tests/fixtures/flytekit/processes.tgz";

/// The arguments of `updraft run PACKAGE -w fixtures.processes.<wf> <extra>` with the flytekit Python
/// and the state folder `state`.
fn run_args(state: &Path, wf: &str, extra: &[&str]) -> Vec<String> {
    let python = flytekit_python();
    [
        "run",
        PACKAGE,
        "-w",
        &format!("fixtures.processes.{wf}"),
        "--python",
        python.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect()
}

/// Starts that run in the background (`run_args`).
fn spawn_run(state: &Path, wf: &str, extra: &[&str]) -> std::process::Child {
    let args = run_args(state, wf, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_updraft(&args, &[("PYTHONPATH", fixture_src().as_os_str())])
}

/// Runs that run to its end: (code, outputs, stderr).
fn run(state: &Path, wf: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let args = run_args(state, wf, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = updraft_env(
        &args,
        &[
            ("PYTHONPATH", fixture_src().as_os_str()),
            ("WHOAMI_MARK", "marked".as_ref()),
        ],
    );
    (
        code,
        serde_json::from_str(&out).unwrap_or(serde_json::Value::Null),
        err,
    )
}

/// Whether process `pid` is still alive (a zombie, dead but not yet reaped, is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        state != Some("Z") && state != Some("X")
    })
}

/// The pids tasks wrote to `file`, a line each (waiting up to 120 s for the first).
fn pids_in(file: &Path) -> Vec<u32> {
    for _ in 0..2400 {
        if let Ok(s) = std::fs::read_to_string(file)
            && s.ends_with('\n')
        {
            return s.lines().map(|l| l.trim().parse().unwrap()).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} was never written", file.display());
}

/// The pid the first task wrote to `file`.
fn pid_in(file: &Path) -> u32 {
    pids_in(file)[0]
}

/// Waits (up to 10 s) for `pid` to be gone; whether it is.
fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

/// The only execution's folder under `state`.
fn execution_dir(state: &Path) -> PathBuf {
    std::fs::read_dir(state.join("executions"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
}

#[test]
fn each_task_is_its_own_process_with_and_without_warm_workers() {
    let mut outputs = Vec::new();
    for workers in ["on", "off"] {
        let state = temp_dir(&format!("whoami-{workers}"));
        let (code, out, err) = run(&state, "whoami_wf", &["--workers", workers]);
        assert_eq!(code, 0, "--workers {workers}: {err}");
        let expect = |tag: &str| {
            serde_json::json!([
                tag,
                "fixtures.processes.whoami",
                "marked",
                "True",
                "0",
                "pyflyte-execute",
                "True"
            ])
        };
        assert_eq!(
            out,
            serde_json::json!({"o0": expect("a"), "o1": expect("b")}),
            "--workers {workers}"
        );
        // Each attempt's own output files, holding only its own lines.
        let exec = execution_dir(&state);
        for (node, mine, theirs) in [("n0", "a", "b"), ("n1", "b", "a")] {
            let stdout = std::fs::read_to_string(exec.join(node).join("0/stdout.log")).unwrap();
            let stderr = std::fs::read_to_string(exec.join(node).join("0/stderr.log")).unwrap();
            assert!(stdout.contains(&format!("stdout of {mine}")), "{stdout}");
            assert!(!stdout.contains(&format!("of {theirs}")), "{stdout}");
            assert!(stderr.contains(&format!("stderr of {mine}")), "{stderr}");
            assert!(!stderr.contains(&format!("of {theirs}")), "{stderr}");
        }
        outputs.push(out);
        let _ = std::fs::remove_dir_all(&state);
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn a_timed_out_python_task_takes_what_it_started_with_it() {
    for workers in ["on", "off"] {
        let state = temp_dir(&format!("orphan-{workers}"));
        let pidfile = state.join("grandchild.pid");
        let input = format!("pidfile={}", pidfile.display());
        let (code, _, err) = run(&state, "timeout_wf", &["-i", &input, "--workers", workers]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("ran past its timeout"), "{err}");
        // Each attempt that got as far as starting its grandchild (the second always does).
        for pid in pids_in(&pidfile) {
            assert!(
                gone(pid),
                "--workers {workers}: the task's `sleep 300` ({pid}) outlived it"
            );
        }
        let _ = std::fs::remove_dir_all(&state);
    }
}

#[test]
fn an_aborted_python_task_takes_what_it_started_with_it() {
    let state = temp_dir("orphan-abort");
    let (child, pid) = start_lingering(&state, "on");
    let (name, _) = wait_for(&state, |v| v["phase"] == "Running");
    let s = state.to_str().unwrap();
    let (code, _, err) = updraft(&["abort", &name, "--reason", "enough", "--state-dir", s]);
    assert_eq!(code, 0, "{err}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was aborted: enough"), "{stderr}");
    assert!(gone(pid), "the task's `sleep 300` ({pid}) outlived it");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_timed_out_raw_container_process_takes_what_it_started_with_it() {
    let state = temp_dir("orphan-raw");
    let pidfile = state.join("grandchild.pid");
    let yaml = state.join("orphan.yaml");
    std::fs::write(
        &yaml,
        format!(
            r#"
version: 1
image: busybox:1
tasks:
  spawn:
    type: container
    timeout: 3s
    outputs: {{}}
    command: [sh, -c, 'sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait']
workflows:
  wf:
    nodes:
      - {{id: a, task: spawn}}
"#,
            p = pidfile.display()
        ),
    )
    .unwrap();
    let (code, _, err) = updraft(&[
        "run",
        yaml.to_str().unwrap(),
        "--containers",
        "process",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ran past its timeout"), "{err}");
    let pid = pid_in(&pidfile);
    assert!(gone(pid), "the container's `sleep 300` ({pid}) outlived it");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_task_killed_by_a_signal_leaves_its_siblings_alone() {
    let state = temp_dir("crash-beside");
    let (code, _, err) = run(&state, "crash_beside_wf", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("killed by a signal"), "{err}");
    // The sibling ran to its end beside the crashes (the failure policy lets it).
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(execution_dir(&state).join("execution.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["nodes"]["n1"], "Succeeded", "{summary}");
    assert_eq!(summary["nodes"]["n0"], "Failed", "{summary}");
    let _ = std::fs::remove_dir_all(&state);
}

/// The warm workers (children of `updraft`'s process `parent` running `python -u -c`).
fn workers_of(parent: u32) -> Vec<u32> {
    children_of(parent, "A warm worker")
}

/// The processes whose parent is `parent` and whose command line contains `text`.
fn children_of(parent: u32, text: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(stat), Ok(cmd)) = (
            std::fs::read_to_string(e.path().join("stat")),
            std::fs::read(e.path().join("cmdline")),
        ) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = String::from_utf8_lossy(&cmd);
        if ppid == Some(parent) && cmd.contains(text) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_lost_worker_fails_its_task_as_a_system_error_and_a_new_one_takes_over() {
    let state = temp_dir("lost-worker");
    let child = spawn_run(&state, "steady_wf", &[]);
    wait_for(&state, |v| v["nodes"]["n0"] == "Running");
    // The first task is forked (its attempt folder's stdout exists) once the worker is up.
    let exec = execution_dir(&state);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !exec.join("n0/0/stdout.log").exists() {
        assert!(Instant::now() < deadline, "the first task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let workers = workers_of(child.id());
    assert_eq!(workers.len(), 1, "one warm worker: {workers:?}");
    // Killed once it has forked the task (with cold caches its first import can take a while; a
    // worker killed before it forks refuses the task, which then runs as a process of its own).
    while children_of(workers[0], "").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the worker never forked the task"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-9", &workers[0].to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!({"o0": 3})
    );
    // The lost attempt failed as a system error and was retried.
    assert!(exec.join("n0/1").exists(), "{stderr}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn an_interpreter_without_flytekit_runs_tasks_as_processes_saying_why() {
    // An environment whose `pyflyte-execute` has a Python without flytekit (moto's) as its interpreter
    // and hands over to the real one: no worker can import flytekit there, so tasks run as processes.
    let moto = std::env::var("UPDRAFT_TEST_MOTO").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_MOTO is not set: run the tests with `bash scripts/test`")
    });
    let state = temp_dir("no-flytekit");
    let bin = state.join("env/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = flytekit_python();
    let real_script = real.parent().unwrap().join("pyflyte-execute");
    let script = bin.join("pyflyte-execute");
    std::fs::write(
        &script,
        format!(
            "#!{moto}\nimport os, sys\nos.execv({real:?}, [{real:?}, {real_script:?}] + sys.argv[1:])\n",
            real = real.display().to_string(),
            real_script = real_script.display().to_string(),
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", script.to_str().unwrap()])
        .status()
        .unwrap();
    let python = bin.join("python");
    std::os::unix::fs::symlink(&moto, &python).unwrap();
    let (code, out, err) = updraft_env(
        &[
            "run",
            PACKAGE,
            "-w",
            "fixtures.processes.whoami_wf",
            "--python",
            python.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[("PYTHONPATH", fixture_src().as_os_str())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("run as processes, without a warm worker: flytekit is not importable"),
        "{err}"
    );
    assert_eq!(
        err.matches("without a warm worker").count(),
        1,
        "said once: {err}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["o0"][0],
        "a"
    );
    let _ = std::fs::remove_dir_all(&state);
}

/// Starts `abort_wf` (a task whose `sleep 300` grandchild and itself would run 5 minutes) in the
/// background; the run and the grandchild's pid.
fn start_lingering(state: &Path, workers: &str) -> (std::process::Child, u32) {
    let pidfile = state.join("grandchild.pid");
    let input = format!("pidfile={}", pidfile.display());
    let child = spawn_run(state, "abort_wf", &["-i", &input, "--workers", workers]);
    let pid = pid_in(&pidfile);
    assert!(alive(pid));
    (child, pid)
}

fn send(signal: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn an_interrupted_run_aborts_and_its_tasks_take_what_they_started_with_them() {
    for workers in ["on", "off"] {
        let state = temp_dir(&format!("interrupt-{workers}"));
        let (child, grandchild) = start_lingering(&state, workers);
        send("-INT", child.id());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("interrupted: aborting"), "{stderr}");
        assert!(stderr.contains("was aborted: interrupted"), "{stderr}");
        assert!(
            gone(grandchild),
            "--workers {workers}: the task's `sleep 300` ({grandchild}) outlived the run"
        );
        let _ = std::fs::remove_dir_all(&state);
    }
}

#[test]
fn a_killed_run_takes_its_warm_workers_tasks_with_it() {
    let state = temp_dir("killed-run");
    let (mut child, grandchild) = start_lingering(&state, "on");
    // SIGKILL cannot be handled: the worker sees its connector gone and stops what it started.
    send("-KILL", child.id());
    let _ = child.wait();
    assert!(
        gone(grandchild),
        "the task's `sleep 300` ({grandchild}) outlived the run"
    );
    let _ = std::fs::remove_dir_all(&state);
}
