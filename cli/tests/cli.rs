//! The `updraft` binary: exit codes, messages and output formats.

#![allow(clippy::unwrap_used)]

mod common;

use common::{path_with_fake_engine, spawn_updraft, temp_dir, updraft, updraft_env, wait_for};

#[test]
fn validate_good_inputs() {
    let (code, out, err) = updraft(&["validate", "examples/hello.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "ok: 1 workflow, 4 tasks, 1 launch plan");
    let (code, out, err) = updraft(&[
        "validate",
        "tests/fixtures/flytekit/maps.tgz",
        "tests/fixtures/yaml/everything.yaml",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: 3 workflows"), "{out}");
}

#[test]
fn validate_reports_one_line_per_problem() {
    let (code, _, err) = updraft(&["validate", "tests/fixtures/flytekit/references.tgz"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("tests/fixtures/flytekit/references.tgz!"),
        "{err}"
    );
    assert!(
        lines[0].contains(
            ": workflow fixtures.references.references_wf: node n0: task_node.reference_id: "
        ),
        "{err}"
    );
    assert_eq!(lines[2], "updraft: 2 problems found");
    let (code, out, _) = updraft(&[
        "validate",
        "tests/fixtures/flytekit/references.tgz",
        "tests/fixtures/flytekit/subworkflows.tgz",
        "tests/fixtures/flytekit/launchplans.tgz",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ok:"));
}

#[test]
fn validate_missing_and_wrong_files() {
    let (code, _, err) = updraft(&["validate", "no/such/file.tgz"]);
    assert_eq!(code, 1);
    assert!(err.contains("no/such/file.tgz: cannot read:"), "{err}");
    let (code, _, err) = updraft(&["validate", "README.md"]);
    assert_eq!(code, 1);
    assert!(err.contains("README.md: not a .tgz package"), "{err}");
    let (code, _, err) = updraft(&["validate", "examples"]);
    assert_eq!(code, 1);
    assert!(err.contains("examples: is a directory"), "{err}");
    let (code, _, _) = updraft(&["validate"]);
    assert_eq!(code, 2, "clap usage error");
}

#[test]
fn inspect_text_and_json() {
    let (code, out, err) = updraft(&["inspect", "tests/fixtures/flytekit/queries.tgz"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hive_daily  [hive → hive]"), "{out}");
    assert!(out.contains("athena_count  [presto → athena]"), "{out}");
    let (code, out, _) = updraft(&[
        "inspect",
        "--format",
        "json",
        "tests/fixtures/flytekit/launchplans.tgz",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["launch_plans"]["greet_twice"]["fixed"],
        serde_json::json!(["times"])
    );
    assert_eq!(
        v["tasks"]["fixtures.launchplans.greet"]["inputs"]["times"],
        "int"
    );
}

#[test]
fn graph_mermaid_and_dot() {
    let (code, out, err) = updraft(&["graph", "tests/fixtures/flytekit/branches.tgz"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("flowchart TD"));
    assert!(
        out.contains("subgraph node1_group [\"n1: branch\"]"),
        "{out}"
    );
    assert!(out.contains("fail: x must not be zero"), "{out}");
    assert!(out.contains("node0 --> node1"), "{out}");
    let (code, out, _) = updraft(&[
        "graph",
        "--format",
        "dot",
        "tests/fixtures/flytekit/subworkflows.tgz",
        "--workflow",
        "fixtures.subworkflows.outer",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("digraph \"fixtures.subworkflows.outer\""),
        "{out}"
    );
    assert!(out.contains("subgraph cluster_"), "{out}");
    assert!(
        out.contains("on failure") || out.contains("style=dashed"),
        "{out}"
    );
    let (code, out, _) = updraft(&["graph", "tests/fixtures/flytekit/maps.tgz"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("[[\"n0: map square (container), parallelism 2\"]]"),
        "{out}"
    );
    let (code, _, err) = updraft(&[
        "graph",
        "tests/fixtures/flytekit/maps.tgz",
        "--workflow",
        "nope",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no workflow `nope`"), "{err}");
}

#[test]
fn run_the_example() {
    let state = temp_dir("hello");
    let s = state.to_str().unwrap();
    let (code, out, err) = updraft(&["run", "examples/hello.yaml", "--state-dir", s]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::json!({"sum": 30, "message": "world"}));
    assert!(
        err.contains("describe-small"),
        "progress names the branch child: {err}"
    );
    // The map's progress, every 10% when stderr is not a terminal.
    for done in ["1/4", "2/4", "3/4"] {
        assert!(
            err.lines()
                .any(|l| l.contains("squares") && l.contains("] ") && l.ends_with(done)),
            "{done}: {err}"
        );
    }
    let (code, out, err) = updraft(&[
        "run",
        "examples/hello.yaml",
        "--state-dir",
        s,
        "-i",
        "numbers=[5,6,7,8]",
        "--input",
        "name=x",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"sum": 174, "message": "A BIG NUMBER!"})
    );
    // Each attempt kept its files: the four squares, with their inputs and logs.
    let exec_dirs: Vec<_> = std::fs::read_dir(state.join("executions"))
        .unwrap()
        .collect();
    assert_eq!(exec_dirs.len(), 2);
    let _ = std::fs::remove_dir_all(&state);
}

const FAILING: &str = r#"
version: 1
tasks:
  boom:
    type: container
    image: busybox
    inputs: {x: int}
    outputs: {y: int}
    retries: 1
    command: [sh, -c, 'echo "it broke on {{.inputs.x}}" > /var/outputs/_ERROR']
  spark_task: {type: spark, image: i:1, module: m, function: f, inputs: {x: int}, outputs: {y: int}, spark: {spark_conf: {}}}
workflows:
  fails:
    inputs: {x: int}
    outputs: {y: "${b.y}"}
    nodes:
      - {id: b, task: boom, inputs: {x: "${inputs.x}"}}
  remote:
    inputs: {x: int}
    outputs: {y: "${p.y}"}
    nodes:
      - {id: p, task: spark_task, inputs: {x: "${inputs.x}"}}
"#;

#[test]
fn run_reports_failures_retries_and_bad_inputs() {
    let state = temp_dir("fail");
    let file = state.join("failing.yaml");
    std::fs::write(&file, FAILING).unwrap();
    let (f, s) = (file.to_str().unwrap(), state.to_str().unwrap());
    let (code, out, err) = updraft(&["run", f, "-w", "fails", "-i", "x=7", "--state-dir", s]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("failed: node b: it broke on 7 (ContainerError)"),
        "{err}"
    );
    // Two attempts ran (retries: 1), each in its own folder.
    let exec = std::fs::read_dir(state.join("executions"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(exec.join("b/0/stderr.log").exists() && exec.join("b/1/stderr.log").exists());
    assert!(!exec.join("b/2").exists());

    let (code, _, err) = updraft(&["run", f, "-w", "fails", "--state-dir", s]);
    assert_eq!(code, 1);
    assert!(err.contains("missing required input(s) [\"x\"]"), "{err}");
    let (code, _, err) = updraft(&["run", f, "-w", "fails", "-i", "x=seven", "--state-dir", s]);
    assert_eq!(code, 1);
    assert!(
        err.contains("input `x`: expected int, got a string"),
        "{err}"
    );
    let (code, _, err) = updraft(&[
        "run",
        f,
        "-w",
        "fails",
        "-i",
        "y=1",
        "-i",
        "x=1",
        "--state-dir",
        s,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("`y` is not an input of `fails`"), "{err}");
    let (code, _, err) = updraft(&["run", f, "-w", "remote", "-i", "x=1", "--state-dir", s]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "remote has tasks that do not run locally yet: spark_task (spark); nothing was started"
        ),
        "{err}"
    );
    let runs = std::fs::read_dir(state.join("executions")).unwrap().count();
    assert_eq!(runs, 1, "only the first (failing) run made an execution");
    let _ = std::fs::remove_dir_all(&state);
}

const HISTORY: &str = r#"
version: 1
image: busybox
tasks:
  boom:
    type: container
    inputs: {x: int}
    outputs: {y: int}
    retries: 1
    command: [sh, -c, 'echo "it broke on {{.inputs.x}}" > /var/outputs/_ERROR']
  shout:
    type: container
    inputs: {text: str}
    outputs: {loud: str}
    command: [sh, -c, 'echo "said: $1"; printf "%s!" "$1" > /var/outputs/loud', shout, '{{.inputs.text}}']
workflows:
  inner:
    inputs: {text: str}
    outputs: {loud: "${s.loud}"}
    nodes:
      - {id: s, task: shout, inputs: {text: "${inputs.text}"}}
  outer:
    inputs: {x: int}
    outputs: {loud: "${child.loud}"}
    nodes:
      - {id: child, launch_plan: inner, inputs: {text: hi}}
      - {id: b, task: boom, inputs: {x: "${inputs.x}"}, after: [child]}
"#;

#[test]
fn status_json_shows_the_history_of_a_run_with_its_children() {
    let state = temp_dir("history");
    let file = state.join("history.yaml");
    std::fs::write(&file, HISTORY).unwrap();
    let (f, s) = (file.to_str().unwrap(), state.to_str().unwrap());
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (code, _, err) = updraft(&["run", f, "-w", "outer", "-i", "x=7", "--state-dir", s]);
    assert_eq!(code, 1, "{err}");
    let name = common::only_execution(&state);
    let v = common::history_json(&state, &name);
    assert_eq!(v["name"], name.as_str());
    assert_eq!(v["phase"], "Failed");
    assert_eq!(v["inputs"]["x"], 7);
    let started = v["started_ms"].as_u64().unwrap();
    let ended = v["ended_ms"].as_u64().unwrap();
    assert!(before <= started && started <= ended, "{v}");
    let node = |v: &serde_json::Value, id: &str| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no node {id}: {v}"))
    };
    // Both attempts of b failed, in order, each with its error and its logs' files.
    let b = node(&v, "b");
    assert_eq!(b["phase"], "Failed");
    let attempts = b["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{b}");
    let mut last = started;
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i);
        assert_eq!(a["phase"], "Failed", "{a}");
        assert_eq!(a["error"]["message"], "it broke on 7", "{a}");
        assert_eq!(a["cache"], "off");
        let (q, e) = (
            a["queued_ms"].as_u64().unwrap(),
            a["ended_ms"].as_u64().unwrap(),
        );
        assert!(last <= q && q <= e && e <= ended, "times in order: {b}");
        last = e;
        let logs: Vec<&str> = a["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert!(
            logs.iter()
                .any(|l| l.ends_with(&format!("b/{i}/stderr.log"))),
            "{a}"
        );
        assert!(
            logs.iter().all(|l| std::path::Path::new(l).exists()),
            "{logs:?}"
        );
    }
    let phases: Vec<&str> = b["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.first(), Some(&"Queued"), "{b}");
    assert_eq!(phases.last(), Some(&"Failed"), "{b}");
    // The launch plan's child execution, with its own history, under the node that started it.
    let children = v["children"].as_array().unwrap();
    assert_eq!(children.len(), 1, "{v}");
    assert_eq!(children[0]["node"], "child");
    let child = &children[0]["execution"];
    assert_eq!(child["phase"], "Succeeded");
    assert_eq!(child["outputs"]["loud"], "hi!");
    let shout = node(child, "s");
    assert_eq!(shout["attempts"][0]["phase"], "Succeeded");
    assert!(child["started_ms"].as_u64().unwrap() >= started);
    assert_eq!(node(&v, "child")["phase"], "Succeeded");

    // The same history as one HTML file: the graph coloured by phase, a timeline bar per attempt,
    // the child's section; no script and nothing fetched from elsewhere.
    let page = state.join("run.html");
    let (code, _, err) = updraft(&[
        "report",
        &name,
        "-o",
        page.to_str().unwrap(),
        "--state-dir",
        s,
    ]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(
        html.contains(r#"data-node="b" data-phase="Failed""#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-node="child" data-phase="Succeeded""#),
        "{html}"
    );
    assert_eq!(
        html.matches(r#"<g class="bar" data-phase="Failed">"#)
            .count(),
        2,
        "{html}"
    );
    assert!(html.contains("it broke on 7"), "{html}");
    assert!(html.contains("Child of node"), "{html}");
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("src="));

    for args in [
        &["status", "nope", "--json", "--state-dir", s][..],
        &["report", "nope", "--state-dir", s][..],
    ] {
        let (code, _, err) = updraft(args);
        assert_eq!(code, 1);
        assert!(err.contains("no execution at"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&state);
}

const GATES: &str = r#"
version: 1
tasks:
  shout:
    type: container
    image: busybox
    inputs: {text: str}
    outputs: {loud: str}
    command: [sh, -c, 'echo "said: $1"; printf "%s!" "$1" > /var/outputs/loud', shout, '{{.inputs.text}}']
workflows:
  review:
    inputs: {text: str}
    outputs: {approved: "${ok.loud}", note: "${note.value}"}
    nodes:
      - {id: loud, task: shout, inputs: {text: "${inputs.text}"}}
      - {id: pause, gate: {sleep: 200ms}}
      - {id: note, gate: {signal: review-note, type: str}, after: [pause]}
      - {id: ok, gate: {approve: publish}, inputs: {loud: "${loud.loud}"}}
  stuck:
    nodes:
      - {id: wait, gate: {sleep: 1h}}
"#;

#[test]
fn signals_approvals_status_list_and_logs() {
    let state = temp_dir("gates");
    let file = state.join("gates.yaml");
    std::fs::write(&file, GATES).unwrap();
    let (f, s) = (
        file.to_str().unwrap().to_string(),
        state.to_str().unwrap().to_string(),
    );
    let child = spawn_updraft(
        &[
            "run",
            &f,
            "-w",
            "review",
            "-i",
            "text=ship it",
            "--state-dir",
            &s,
        ],
        &[],
    );
    let (name, _) = wait_for(&state, |v| {
        let w = &v["waiting_for"];
        w.as_array().is_some_and(|a| a.len() == 2)
    });
    // Approve, then send the note the second gate waits for.
    let (code, _, _) = updraft(&["signal", &name, "publish", "true", "--state-dir", &s]);
    assert_eq!(code, 0);
    let (code, _, _) = updraft(&[
        "signal",
        &name,
        "review-note",
        "looks good",
        "--state-dir",
        &s,
    ]);
    assert_eq!(code, 0);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"approved": "ship it!", "note": "looks good"})
    );
    assert!(stderr.contains("waits for `publish`"), "{stderr}");

    let (code, out, _) = updraft(&["status", &name, "--state-dir", &s]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("{name} (review): Succeeded")),
        "{out}"
    );
    assert!(
        out.contains("note") && out.contains("\"note\": \"looks good\""),
        "{out}"
    );
    let (code, out, _) = updraft(&["list", "--state-dir", &s]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&name) && out.contains("Succeeded") && out.contains("review"),
        "{out}"
    );
    let (code, out, _) = updraft(&["logs", &name, "loud", "--state-dir", &s]);
    assert_eq!(code, 0);
    assert!(out.contains("said: ship it"), "{out}");
    let (code, _, err) = updraft(&["logs", &name, "nope", "--state-dir", &s]);
    assert_eq!(code, 1);
    assert!(err.contains("has run no task attempt"), "{err}");
    let (code, _, err) = updraft(&["signal", &name, "publish", "true", "--state-dir", &s]);
    assert_eq!(code, 1, "a finished execution cannot be steered");
    assert!(err.contains("is Succeeded"), "{err}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn abort_a_running_execution() {
    let state = temp_dir("abort");
    let file = state.join("gates.yaml");
    std::fs::write(&file, GATES).unwrap();
    let (f, s) = (
        file.to_str().unwrap().to_string(),
        state.to_str().unwrap().to_string(),
    );
    let child = spawn_updraft(&["run", &f, "-w", "stuck", "--state-dir", &s], &[]);
    let (name, _) = wait_for(&state, |v| v["nodes"]["wait"] == "Running");
    let (code, _, _) = updraft(&["abort", &name, "--reason", "enough", "--state-dir", &s]);
    assert_eq!(code, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("was aborted: enough (Aborted)"), "{stderr}");
    let (_, out, _) = updraft(&["status", &name, "--state-dir", &s]);
    assert!(out.contains("Aborted"), "{out}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn cached_tasks_hit_miss_and_overwrite() {
    let state = temp_dir("cache");
    let s = state.to_str().unwrap();
    // `square` is cached (version 1); `total` is not.
    let ran = || -> (usize, usize) {
        let mut newest: Vec<_> = std::fs::read_dir(state.join("executions"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        newest.sort();
        let exec = newest.last().unwrap();
        let squares = std::fs::read_dir(exec)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("squares-"))
            .count();
        let adds = usize::from(exec.join("add").exists());
        (squares, adds)
    };
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "examples/hello.yaml", "--state-dir", s];
        args.extend_from_slice(extra);
        let (code, out, err) = updraft(&args);
        assert_eq!(code, 0, "{err}");
        std::thread::sleep(std::time::Duration::from_millis(5)); // distinct execution names
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let first = run(&[]);
    assert_eq!(ran(), (4, 1), "every square ran");
    assert_eq!(run(&[]), first);
    assert_eq!(ran(), (0, 1), "every square came from the cache");
    assert_eq!(run(&["--overwrite-cache"]), first);
    assert_eq!(ran(), (4, 1));
    let other = run(&["-i", "numbers=[1,2,3,9]"]);
    assert_eq!(other["sum"], 95);
    assert_eq!(ran(), (1, 1), "only the new element missed");
    let _ = std::fs::remove_dir_all(&state);
}

const SLEEPY: &str = r#"
version: 1
image: alpine:3
tasks:
  nap:
    type: container
    inputs: {s: int}
    outputs: {done: bool}
    command: [sh, -c, 'sleep {{.inputs.s}}; echo true > /var/outputs/done']
workflows:
  sleepy:
    inputs: {s: {type: int, default: 60}}
    nodes:
      - {id: nap, task: nap, inputs: {s: "${inputs.s}"}}
"#;

#[test]
fn raw_containers_run_through_a_container_engine() {
    let state = temp_dir("engine");
    let engine_state = state.join("engine");
    let s = state.to_str().unwrap();
    let path = path_with_fake_engine();
    let env = [
        ("PATH", path.as_os_str()),
        ("FAKE_ENGINE_STATE", engine_state.as_os_str()),
    ];
    let (code, out, err) = updraft_env(
        &[
            "run",
            "examples/hello.yaml",
            "--containers",
            "docker",
            "--state-dir",
            s,
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::json!({"message": "world", "sum": 30}));
    assert!(err.contains("raw containers run with docker"), "{err}");
    let log = std::fs::read_to_string(engine_state.join("log")).unwrap();
    let runs: Vec<&str> = log.lines().filter(|l| l.starts_with("run ")).collect();
    assert_eq!(runs.len(), 5, "four squares and the total: {log}");
    // Each attempt is a container named after it, with its input folder mounted read-only at the
    // container's input path and its output folder at the output path.
    let square = runs
        .iter()
        .find(|l| l.contains("-squares-2-0 "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(square.contains(" python:3.11-slim "), "{square}");
    assert!(
        square.contains("/squares-2/0/data-in:/var/inputs:ro"),
        "{square}"
    );
    assert!(
        square.contains("/squares-2/0/data-out:/var/outputs "),
        "{square}"
    );
    // Variables go by name, their values through the engine client's environment: none in its arguments.
    assert!(square.contains(" FLYTE_INTERNAL_NODE_ID "), "{square}");
    assert!(!square.contains("=squares"), "{square}");

    // An engine asked for by name must answer.
    let only_fake =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/container-engine");
    let (code, _, err) = updraft_env(
        &[
            "run",
            "examples/hello.yaml",
            "--containers",
            "podman",
            "--state-dir",
            s,
        ],
        &[("PATH", only_fake.as_os_str())],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--containers: podman is not on PATH"), "{err}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn aborting_removes_the_running_container() {
    let state = temp_dir("engine-abort");
    let engine_state = state.join("engine");
    let file = state.join("sleepy.yaml");
    std::fs::write(&file, SLEEPY).unwrap();
    let (f, s) = (
        file.to_str().unwrap().to_string(),
        state.to_str().unwrap().to_string(),
    );
    let path = path_with_fake_engine();
    let child = spawn_updraft(
        &["run", &f, "--containers", "docker", "--state-dir", &s],
        &[
            ("PATH", path.as_os_str()),
            ("FAKE_ENGINE_STATE", engine_state.as_os_str()),
        ],
    );
    let (name, _) = wait_for(&state, |v| v["nodes"]["nap"] == "Running");
    let pid_file = engine_state.join(format!("{name}-nap-0.pid"));
    for _ in 0..200 {
        if pid_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(pid_file.exists(), "the container is running");
    let (code, _, _) = updraft(&["abort", &name, "--state-dir", &s]);
    assert_eq!(code, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = std::fs::read_to_string(engine_state.join("log")).unwrap();
    assert!(log.contains(&format!("rm {name}-nap-0")), "{log}");
    assert!(!pid_file.exists(), "the container is gone");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn plan_prints_the_objects_native_tasks_would_create() {
    let (code, out, err) = updraft(&[
        "plan",
        "tests/fixtures/flytekit/training.tgz",
        "--task",
        "fixtures.training.torch_train",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# task fixtures.training.torch_train (pytorch)\n"),
        "{out}"
    );
    assert!(
        out.contains("kind: PyTorchJob") && out.contains("Worker:"),
        "{out}"
    );
    assert!(
        out.contains("s3://updraft-data/executions/plan/n0/0/out"),
        "{out}"
    );
    // Every native task of a package, one YAML document per object.
    let (code, out, _) = updraft(&[
        "plan",
        "tests/fixtures/flytekit/containers.tgz",
        "-i",
        "radius=1.5",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("\n---\n").count(), 3, "{out}");
    assert!(
        out.contains("- \"1.5\""),
        "the input is rendered into the command: {out}"
    );
    let (code, _, err) = updraft(&[
        "plan",
        "tests/fixtures/flytekit/batch.tgz",
        "--task",
        "nope",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no task `nope`"), "{err}");
}

/// Two maps at once: on a terminal each keeps a live line of its own, drawn together; elsewhere plain
/// lines only.
#[test]
fn progress_keeps_a_line_per_running_node_on_a_terminal_and_plain_lines_elsewhere() {
    let state = temp_dir("progress");
    let yaml = state.join("two-maps.yaml");
    std::fs::write(
        &yaml,
        r#"
version: 1
image: busybox:1
tasks:
  nap:
    type: container
    inputs: {x: int}
    outputs: {}
    command: [sh, -c, 'sleep 0.3']
workflows:
  wf:
    nodes:
      - {id: left, map: {task: nap, parallelism: 2}, inputs: {x: [1, 2, 3, 4, 5, 6]}}
      - {id: right, map: {task: nap, parallelism: 2}, inputs: {x: [1, 2, 3, 4, 5, 6]}}
"#,
    )
    .unwrap();
    let args = |dir: &str| {
        vec![
            "run".to_string(),
            yaml.display().to_string(),
            "--containers".into(),
            "process".into(),
            "--parallelism".into(),
            "4".into(),
            "--state-dir".into(),
            state.join(dir).display().to_string(),
        ]
    };
    // Not a terminal: plain lines, no cursor movement.
    let plain: Vec<String> = args("plain");
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let (code, _, err) = updraft(&plain);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains('\x1b'), "{err}");
    assert!(
        err.contains("left                     [###############...............] 3/6"),
        "{err}"
    );
    // A terminal (util-linux's `script` gives the run a pseudo-terminal).
    let command = std::iter::once(env!("CARGO_BIN_EXE_updraft").to_string())
        .chain(args("tty"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        // A terminal that draws (whatever the runner's own TERM says, `dumb` included).
        .env("TERM", "xterm-256color")
        .current_dir(common::root())
        .output()
        .unwrap_or_else(|e| {
            panic!("util-linux's `script` (Debian: bsdutils) gives the run a terminal: {e}")
        });
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    // A frame is drawn between cursor movements; one shows both maps' bars.
    let together = tty.split("\x1b[").any(|frame| {
        frame.contains(" left ") && frame.contains(" right ") && frame.matches("/6 ").count() >= 2
    });
    assert!(together, "no frame shows both maps' lines: {tty:?}");
    assert!(tty.contains("/6"), "{tty:?}");
    let _ = std::fs::remove_dir_all(&state);
}

/// `updraft plan`'s YAML is read back as the very objects of `--format json` by a YAML 1.1 reader
/// (PyYAML, as kubectl's reader is 1.1): every fixture with native tasks, including a pod whose
/// annotations are `yes`, `on`, `0755`, `1:30` and a date.
#[test]
fn plan_yaml_reads_back_as_the_same_objects_in_yaml_1_1() {
    let python = common::flytekit_python();
    let dir = temp_dir("plan-yaml11");
    // Every fixture with native tasks (the references package with the packages it references).
    let mut files: Vec<Vec<String>> = Vec::new();
    for dir in ["tests/fixtures/flytekit", "tests/fixtures/yaml", "examples"] {
        for e in std::fs::read_dir(common::root().join(dir))
            .unwrap()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            // A fast-registered package's tasks name `{{.remote_package_path}}`, which only a registrar
            // fills in (uploading the code bundle): `plan` refuses it, naming the placeholder.
            if name == "literals_fast.tgz" {
                continue;
            }
            if name.ends_with(".tgz") || name.ends_with(".yaml") {
                let mut group = vec![format!("{dir}/{name}")];
                if name == "references.tgz" {
                    group.push(format!("{dir}/subworkflows.tgz"));
                    group.push(format!("{dir}/launchplans.tgz"));
                }
                files.push(group);
            }
        }
    }
    let mut planned = 0;
    for group in &files {
        let file = group[0].as_str();
        let mut args: Vec<&str> = vec!["plan"];
        args.extend(group.iter().map(String::as_str));
        let (code, yaml, err) = updraft(&args);
        assert_eq!(code, 0, "{file}: {err}");
        args.extend(["--format", "json"]);
        let (code, json, err) = updraft(&args);
        assert_eq!(code, 0, "{file}: {err}");
        let objects = serde_json::from_str::<serde_json::Value>(&json).unwrap();
        let n = objects.as_array().unwrap().len();
        if n == 0 {
            continue; // no native tasks
        }
        planned += 1;
        let (y, j) = (dir.join("plan.yaml"), dir.join("plan.json"));
        std::fs::write(&y, &yaml).unwrap();
        std::fs::write(&j, &json).unwrap();
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                "import json, sys, yaml\n\
                 docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                 want = json.load(open(sys.argv[2]))\n\
                 print(len(docs), docs == want)\n\
                 for d, w in zip(docs, want):\n    d == w or print(repr(d), repr(w))",
            ])
            .arg(&y)
            .arg(&j)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.starts_with(&format!("{n} True")), "{file}: {said}");
        if file.ends_with("everything.yaml") {
            assert!(
                json.contains("\"sidecar.istio.io/inject\": \"yes\""),
                "{json}"
            );
            assert!(yaml.contains("sidecar.istio.io/inject: \"yes\""), "{yaml}");
        }
    }
    assert!(planned >= 10, "only {planned} fixtures have native tasks?");
    let _ = std::fs::remove_dir_all(&dir);
}
