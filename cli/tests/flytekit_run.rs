//! `updraft run` on packages made by the real flytekit, with the real `pyflyte-execute`.
//!
//! Needs the Python environment `scripts/python-env` makes; `scripts/test` (the README's test command)
//! sets `UPDRAFT_TEST_PYTHON` to it. Without it these tests fail, saying so.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{
    path_with_fake_engine, root, spawn_updraft, temp_dir, updraft, updraft_env, wait_for,
};

fn python() -> String {
    std::env::var("UPDRAFT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_PYTHON is not set: run the tests with `bash scripts/test`, which prepares a Python environment with flytekit")
    })
}

fn run(tag: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let (code, out, err, state) = run_keep(tag, args);
    let _ = std::fs::remove_dir_all(&state);
    (code, out, err)
}

#[test]
fn subworkflows_with_real_tasks() {
    let (code, out, err) = run(
        "sub",
        &[
            "tests/fixtures/flytekit/subworkflows.tgz",
            "-w",
            "fixtures.subworkflows.outer",
            "-i",
            "x=3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 90}));
}

#[test]
fn map_tasks_with_real_tasks() {
    let (code, out, err) = run("maps", &["tests/fixtures/flytekit/maps.tgz"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["o0"], serde_json::json!([1, 4, 9, 16, 25]));
    assert_eq!(out["o1"], serde_json::json!([3, 6, 9, 12, 15]));
    assert_eq!(
        out["o2"],
        serde_json::json!([101, 102, null, 104, 105]),
        "the failing index is none"
    );
    assert_eq!(out["o3"], serde_json::json!(55));
}

#[test]
fn branches_with_real_tasks() {
    let (code, out, err) = run("br", &["tests/fixtures/flytekit/branches.tgz", "-i", "x=3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": "10->6"}));
    let (code, _, err) = run(
        "br0",
        &["tests/fixtures/flytekit/branches.tgz", "-i", "x=0"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("x must not be zero"), "{err}");
}

#[test]
fn launch_plan_defaults_and_fixed_inputs() {
    let (code, out, err) = run(
        "lp",
        &[
            "tests/fixtures/flytekit/launchplans.tgz",
            "-l",
            "greet_twice",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        serde_json::json!({"o0": "Hello, world! Hello, world!"})
    );
    let (code, _, err) = run(
        "lp2",
        &[
            "tests/fixtures/flytekit/launchplans.tgz",
            "-l",
            "greet_twice",
            "-i",
            "times=3",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("input `times` is fixed"), "{err}");
}

#[test]
fn every_literal_type_round_trips_through_flytekit() {
    let (code, out, err) = run(
        "lit",
        &[
            "tests/fixtures/flytekit/literals.tgz",
            "-i",
            "maybe=\"set\"",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // describe: total = i + sum(xs) + sum(counts) = 1 + 6 + 3; a file of `total` lines; a dir of `i` files.
    assert_eq!(out["o1"], serde_json::json!(10));
    assert_eq!(out["o3"], serde_json::json!(10));
    assert_eq!(out["o4"], serde_json::json!(1));
    assert_eq!(
        out["o2"],
        serde_json::json!({"x": 3.5, "y": 4.0, "label": "ORIGIN"})
    );
    let summary = out["o0"].as_str().unwrap();
    assert_eq!(
        summary, "hello:2.50:True:2024-01-02T03:04:05+00:00:180.0:set:origin",
        "{summary}"
    );
}

/// The attempt folders of the newest execution's node `n0`.
fn attempts_of(state: &std::path::Path) -> usize {
    let exec = std::fs::read_dir(state.join("executions"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::read_dir(exec.join("n0"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

fn run_keep(tag: &str, args: &[&str]) -> (i32, serde_json::Value, String, std::path::PathBuf) {
    let state = std::env::temp_dir().join(format!("updraft-flytekit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let out = Command::new(env!("CARGO_BIN_EXE_updraft"))
        .arg("run")
        .args(args)
        .args([
            "--python",
            &python(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .env("PYTHONPATH", root().join("tests/fixtures/flytekit/src"))
        .current_dir(root())
        .output()
        .unwrap();
    let v = serde_json::from_str(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        state,
    )
}

#[test]
fn recoverable_errors_are_retried() {
    let (code, out, err, state) = run_keep(
        "flaky",
        &[
            "tests/fixtures/flytekit/failures.tgz",
            "-w",
            "fixtures.failures.flaky_wf",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 40}));
    assert_eq!(
        attempts_of(&state),
        3,
        "two recoverable failures, then success"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn non_recoverable_errors_are_not() {
    let (code, _, err, state) = run_keep(
        "broken",
        &[
            "tests/fixtures/flytekit/failures.tgz",
            "-w",
            "fixtures.failures.broken_wf",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("bad input 4"), "{err}");
    assert_eq!(
        attempts_of(&state),
        1,
        "retries: 2, but the error is not recoverable"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_crashing_process_is_a_system_failure_with_its_own_retries() {
    let (code, _, err, state) = run_keep(
        "crash",
        &[
            "tests/fixtures/flytekit/failures.tgz",
            "-w",
            "fixtures.failures.crash_wf",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("exit code 3"), "{err}");
    // System failures draw on the system budget (3), not the task's retries (1).
    assert_eq!(attempts_of(&state), 4);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn attempts_past_their_timeout_are_killed_and_retried() {
    let started = std::time::Instant::now();
    let (code, _, err, state) = run_keep(
        "slow",
        &[
            "tests/fixtures/flytekit/failures.tgz",
            "-w",
            "fixtures.failures.slow_wf",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("ran past its timeout"), "{err}");
    assert_eq!(attempts_of(&state), 2, "retries: 1");
    assert!(
        started.elapsed().as_secs() < 50,
        "the 60 s sleeps were killed"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn dynamic_tasks_run_the_sub_workflow_they_return() {
    let (code, out, err, state) =
        run_keep("dyn", &["tests/fixtures/flytekit/dynamic.tgz", "-i", "n=4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": "1,2,3,4"}));
    // The sub-workflow's nodes are shown under the dynamic node, and their logs are kept.
    assert!(err.contains("n0/dn3") && err.contains("n0/dn4"), "{err}");
    let exec = std::fs::read_dir(state.join("executions"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name();
    let (code, logs, lerr) = updraft(&[
        "logs",
        exec.to_str().unwrap(),
        "n0/dn4",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{lerr}");
    assert!(logs.contains("stderr.log"), "{logs}");
    let _ = std::fs::remove_dir_all(&state);
    // No element: the sub-workflow has only the join.
    let (code, out, err) = run(
        "dyn0",
        &["tests/fixtures/flytekit/dynamic.tgz", "-i", "n=0"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": ""}));
    // A dynamic task whose sub-workflow runs dynamic tasks: children of a child.
    let (code, out, err) = run(
        "dyn-nested",
        &["tests/fixtures/flytekit/dynamic_nested.tgz", "-i", "m=3"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": [1, 5, 14]}));
}

#[test]
fn launch_plan_nodes_run_child_executions() {
    let (code, out, err) = run(
        "lpnode",
        &[
            "tests/fixtures/flytekit/launchplans.tgz",
            "-w",
            "fixtures.launchplans.parent_wf",
            "-i",
            "name=Updraft",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // The child gets the node's inputs and the launch plan's fixed `times`.
    assert_eq!(out, serde_json::json!({"o0": "Hi, Updraft! Hi, Updraft!"}));
    assert!(err.contains("n0/n0"), "the child's node is shown: {err}");
}

#[test]
fn gates_sleep_then_wait_for_a_signal_and_an_approval() {
    let state = temp_dir("fk-gates");
    let s = state.to_str().unwrap().to_string();
    let python = python();
    let src = root().join("tests/fixtures/flytekit/src");
    let child = spawn_updraft(
        &[
            "run",
            "tests/fixtures/flytekit/gates.tgz",
            "-i",
            "x=7",
            "--python",
            &python,
            "--state-dir",
            &s,
        ],
        &[("PYTHONPATH", src.as_os_str())],
    );
    let (name, v) = wait_for(&state, |v| {
        v["waiting_for"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "review-note"))
    });
    assert_eq!(v["nodes"]["n1"], "Succeeded", "the sleep is over: {v}");
    // A value of the wrong type is refused; the gate keeps waiting for a good one.
    let (code, _, _) = updraft(&["signal", &name, "review-note", "[1, 2]", "--state-dir", &s]);
    assert_eq!(code, 0);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let (code, _, _) = updraft(&[
        "signal",
        &name,
        "review-note",
        "\"lgtm\"",
        "--state-dir",
        &s,
    ]);
    assert_eq!(code, 0);
    wait_for(&state, |v| {
        v["waiting_for"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "publish-report"))
    });
    let (code, _, _) = updraft(&["signal", &name, "publish-report", "true", "--state-dir", &s]);
    assert_eq!(code, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("signal `review-note` ignored"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"o0": "report 7 (lgtm)"}));
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_rejected_approval_fails_the_execution() {
    let state = temp_dir("fk-reject");
    let s = state.to_str().unwrap().to_string();
    let python = python();
    let src = root().join("tests/fixtures/flytekit/src");
    let child = spawn_updraft(
        &[
            "run",
            "tests/fixtures/flytekit/gates.tgz",
            "--python",
            &python,
            "--state-dir",
            &s,
        ],
        &[("PYTHONPATH", src.as_os_str())],
    );
    // Signals may come before their gate opens: they are kept until it does.
    let (name, _) = wait_for(&state, |v| v["nodes"]["n0"] == "Succeeded");
    for (id, value) in [("publish-report", "false"), ("review-note", "ok")] {
        let (code, _, err) = updraft(&["signal", &name, id, value, "--state-dir", &s]);
        assert_eq!(code, 0, "{err}");
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`publish-report` was not approved"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn raw_container_and_pod_tasks() {
    // As processes: the raw container's paths point at local folders; pod tasks run their primary
    // container.
    let (code, out, err) = run(
        "pods",
        &["tests/fixtures/flytekit/containers.tgz", "-i", "radius=2"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 11}), "len(\"area=12.566\")");

    // Through a container engine (the stand-in of tests/container-engine): only the raw container goes
    // to the engine, with its image.
    let state = temp_dir("fk-engine");
    let engine_state = state.join("engine");
    let python = python();
    let venv_bin = std::path::Path::new(&python)
        .parent()
        .unwrap()
        .to_path_buf();
    let mut dirs = vec![venv_bin];
    dirs.extend(std::env::split_paths(&path_with_fake_engine()));
    let path = std::env::join_paths(dirs).unwrap();
    let src = root().join("tests/fixtures/flytekit/src");
    let (code, out, err) = updraft_env(
        &[
            "run",
            "tests/fixtures/flytekit/containers.tgz",
            "-i",
            "radius=1",
            "--containers",
            "docker",
            "--python",
            &python,
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[
            ("PATH", path.as_os_str()),
            ("PYTHONPATH", src.as_os_str()),
            ("FAKE_ENGINE_STATE", engine_state.as_os_str()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"o0": 10}),
        "len(\"area=3.142\")"
    );
    let log = std::fs::read_to_string(engine_state.join("log")).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.starts_with("run ") && log.contains("-n0-0 python:3.11-slim "),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn the_flytekit_example_packages_and_runs() {
    // As examples/flytekit/README.md says: package with the real pyflyte, then run the archive.
    let state = temp_dir("fk-example");
    let python = python();
    let pyflyte = std::path::Path::new(&python).with_file_name("pyflyte");
    let example = root().join("examples/flytekit");
    let archive = state.join("hello_flyte.tgz");
    let out = Command::new(&pyflyte)
        .args(["--pkgs", "hello_flyte", "package", "--output"])
        .arg(&archive)
        .arg("-f")
        .current_dir(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = state.to_str().unwrap();
    let args = [
        "run",
        archive.to_str().unwrap(),
        "-i",
        "numbers=[2,3]",
        "-i",
        "name=you",
        "--python",
        &python,
        "--state-dir",
        s,
    ];
    for round in ["first run", "cached squares"] {
        let (code, out, err) = updraft_env(&args, &[("PYTHONPATH", example.as_os_str())]);
        assert_eq!(code, 0, "{round}: {err}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"o0": "hello you: 13 from the map, 14 from the dynamic task"}),
            "{round}"
        );
    }
    let cached = std::fs::read_dir(state.join("cache")).unwrap().count();
    assert!(cached >= 2, "the squares of 2 and 3 are cached ({cached})");
    let _ = std::fs::remove_dir_all(&state);
}

/// Runs `updraft <args> --state-dir <state>` from the repository root: (exit code, stdout, stderr).
fn updraft_in(state: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--state-dir", state.to_str().unwrap()]);
    let src = root().join("tests/fixtures/flytekit/src");
    updraft_env(&all, &[("PYTHONPATH", src.as_os_str())])
}

#[test]
fn reference_tasks_and_launch_plans_resolve_against_the_local_registry() {
    let state = temp_dir("refs");
    let refs = "tests/fixtures/flytekit/references.tgz";
    // A workflow that needs nothing registered runs, though another one in its package does.
    let (code, out, err, kept) = run_keep(
        "refs-alone",
        &[refs, "-w", "fixtures.references.standalone_wf"],
    );
    let _ = std::fs::remove_dir_all(kept);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 42}));
    // `plan` shows a task of that package; only what it shows must compile.
    let (code, _, err) = updraft(&["plan", refs, "--task", "fixtures.references.double"]);
    assert_eq!(code, 0, "{err}");

    // Nothing registered: the references are errors naming node, entity and version, before
    // anything runs.
    let wf = [
        "run",
        refs,
        "-w",
        "fixtures.references.references_wf",
        "--python",
        &python(),
    ];
    let (code, _, err) = updraft_in(&state, &wf);
    assert_eq!(code, 1);
    assert!(
        err.contains("node n0: task_node.reference_id: task `fixtures.subworkflows.add` (version v1) is not in the package (or the packages given with it), and nothing registered has it"),
        "{err}"
    );
    assert!(
        err.contains(
            "node n1: workflow_node.launchplan_ref: launch plan `greet_twice` (version v1)"
        ),
        "{err}"
    );
    assert!(!state.join("executions").exists(), "nothing ran");
    let (code, _, err) = updraft_in(&state, &["validate", refs]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("2 problems found"), "{err}");

    // Registered, but one at another version: said, with how to register it.
    let (code, out, err) = updraft_in(
        &state,
        &[
            "register",
            "tests/fixtures/flytekit/subworkflows.tgz",
            "--version",
            "v1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("task fixtures.subworkflows.add v1\n"), "{out}");
    let (code, out, err) = updraft_in(
        &state,
        &["register", "tests/fixtures/flytekit/launchplans.tgz"],
    );
    assert_eq!(code, 0, "{err}");
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("launch plan greet_twice "))
        .unwrap()
        .to_string();
    assert_eq!(digest.len(), 16, "{out}");
    let (code, _, err) = updraft_in(&state, &["validate", refs]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("launch plan `greet_twice` is registered ({digest}), but not at version v1 (register it with --version v1)")),
        "{err}"
    );
    assert!(
        err.contains("task `fixtures.subworkflows.add` (version v1) resolved from the registry"),
        "{err}"
    );

    // Both at v1: validate says where each came from, and the run uses them.
    let (code, _, err) = updraft_in(
        &state,
        &[
            "register",
            "tests/fixtures/flytekit/launchplans.tgz",
            "--version",
            "v1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = updraft_in(&state, &["validate", refs]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok:"), "{out}");
    assert!(
        err.contains("launch plan `greet_twice` (version v1) resolved from the registry"),
        "{err}"
    );
    let (code, out, err) = updraft_in(&state, &wf);
    assert_eq!(code, 0, "{err}");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out, serde_json::json!({"o0": "Hey, ref! Hey, ref!"}));
    // The reference task ran, as a node of this execution, with the registered template.
    let name = common::execution_of(&err);
    let (code, out, err) = updraft_in(&state, &["status", &name]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("): Succeeded\n  n0    "), "{out}");
    let _ = std::fs::remove_dir_all(&state);
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_holding(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            out.push(p);
        }
    }
    out
}

#[test]
fn secrets_are_provided_where_flytekit_reads_them_and_a_missing_one_stops_the_run_first() {
    let state = temp_dir("secrets");
    let pkg = "tests/fixtures/flytekit/secrets.tgz";
    let src = root().join("tests/fixtures/flytekit/src");
    let python = python();
    let run = |extra: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
        let mut args = vec!["run", pkg, "--python", &python, "--state-dir"];
        args.push(state.to_str().unwrap());
        args.extend(extra);
        let mut all_env = vec![("PYTHONPATH", src.as_os_str())];
        all_env.extend(env);
        updraft_env(&args, &all_env)
    };
    // None provided (and none in flytekit's default folder): every request is named, nothing starts.
    let empty = state.join("no-secrets");
    let (code, _, err) = run(&[], &[("FLYTE_SECRETS_DEFAULT_DIR", empty.as_os_str())]);
    assert_eq!(code, 1, "{err}");
    for (node, task, secret, var) in [
        ("n0", "from_context", "db/password", "_FSEC_DB_PASSWORD"),
        ("n1", "from_env_var", "api/token", "_FSEC_API_TOKEN"),
        ("n2", "from_file", "api/token", "_FSEC_API_TOKEN"),
    ] {
        let line = format!(
            "node {node}: task `fixtures.secrets.{task}`: security_context.secrets[0]: secret `{secret}` is not provided here: set {var} in updraft's environment, or put it in the file {}",
            empty.join(secret).display()
        );
        assert!(err.contains(&line), "{line}\nnot in:\n{err}");
    }
    assert!(err.contains("nothing was started"), "{err}");
    assert!(!state.join("executions").exists());

    // A secrets folder: flytekit's lookup finds the file; a variable request gets the value; a file
    // request the path.
    let dir = state.join("secrets");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::create_dir_all(dir.join("api")).unwrap();
    std::fs::write(dir.join("db/password"), "hunter2-from-file").unwrap();
    std::fs::write(dir.join("api/token"), "token-from-file").unwrap();
    let (code, out, err) = run(&["--secrets-dir", dir.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = common::secret_digest("token-from-file");
    assert_eq!(
        out,
        serde_json::json!({"o0": common::secret_digest("hunter2-from-file"), "o1": token, "o2": token})
    );

    // From the environment (flytekit's variable), the folder for the rest: a file request of a value
    // from the environment gets a file of its own, gone when the attempt ends; the value is nowhere
    // in the state folder, logs included.
    std::fs::remove_file(dir.join("api/token")).unwrap();
    let (code, out, err) = run(
        &[],
        &[
            ("UPDRAFT_SECRETS_DIR", dir.as_os_str()),
            ("_FSEC_API_TOKEN", std::ffi::OsStr::new("token-from-env")),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = common::secret_digest("token-from-env");
    assert_eq!(
        out,
        serde_json::json!({"o0": common::secret_digest("hunter2-from-file"), "o1": token, "o2": token})
    );
    assert!(!err.contains("token-from-env"));
    let leaks = files_holding(&state.join("executions"), "token-from-env");
    assert!(leaks.is_empty(), "the secret's value is in {leaks:?}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_serialized_cache_key_is_computed_by_one_attempt_at_a_time() {
    let state = temp_dir("serialize");
    let python = python();
    let src = root().join("tests/fixtures/flytekit/src");
    let args = |state: &std::path::Path, x: &str| -> Vec<String> {
        [
            "run",
            "tests/fixtures/flytekit/caching.tgz",
            "-w",
            "fixtures.caching.serialized_wf",
            "-i",
            x,
            "--python",
            &python,
            "--state-dir",
            state.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let tokens = |out: &[u8]| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(out).unwrap();
        ["o0", "o1", "o2"]
            .map(|k| v[k].as_str().unwrap().to_string())
            .to_vec()
    };
    // Three nodes of one run reach the same key at once: one computes it (a process token), the other
    // two wait and take its result.
    let a = args(&state, "x=4");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, out, err) = updraft_env(&a, &[("PYTHONPATH", src.as_os_str())]);
    assert_eq!(code, 0, "{err}");
    let t = tokens(out.as_bytes());
    assert!(
        t[0] == t[1] && t[1] == t[2],
        "computed more than once: {t:?}"
    );
    // Two runs at once, in two processes sharing the state folder: still computed once.
    let b = args(&state, "x=5");
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let first = spawn_updraft(&b, &[("PYTHONPATH", src.as_os_str())]);
    let second = spawn_updraft(&b, &[("PYTHONPATH", src.as_os_str())]);
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for o in [&first, &second] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (t1, t2) = (tokens(&first.stdout), tokens(&second.stdout));
    assert!(t1.iter().chain(&t2).all(|t| *t == t1[0]), "{t1:?} {t2:?}");
    // A run killed while it holds a key: the system drops its lock, and the next run computes the key
    // instead of waiting for it forever.
    let killed = temp_dir("serialize-killed");
    let c = args(&killed, "x=6");
    let c: Vec<&str> = c.iter().map(String::as_str).collect();
    let mut child = spawn_updraft(&c, &[("PYTHONPATH", src.as_os_str())]);
    wait_for(&killed, |v| {
        v["nodes"]
            .as_object()
            .is_some_and(|n| n.values().any(|p| p == "Running"))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = updraft_env(&c, &[("PYTHONPATH", src.as_os_str())]);
    assert_eq!(code, 0, "{err}");
    let t = tokens(out.as_bytes());
    assert!(t[0] == t[1] && t[1] == t[2], "{t:?}");
    eprintln!("after the kill: computed in {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&killed);
}

#[test]
fn flytekit_only_plugins_run_with_their_own_code() {
    // SQLite3Task: flytekit's own executor, found through the template at {{.taskTemplatePath}}, queries
    // the database; a Python task reads the rows (a parquet schema).
    common::shop_db(&python());
    let (code, out, err) = run(
        "sqlite",
        &["tests/fixtures/flytekit/sqlite.tgz", "-i", "limit=5"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 2, "o1": "tea,coffee"}));
    // NotebookTask: papermill runs the notebook with the input; its recorded output is the task's, and
    // the executed notebook and its HTML are files a Python task reads.
    let (code, out, err) = run(
        "notebook",
        &["tests/fixtures/flytekit/notebook.tgz", "-i", "x=7"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 49, "o1": true, "o2": true}));
}
