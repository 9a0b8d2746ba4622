//! `updraft run` beside flytekit's own local run of the same workflows, on this machine, in one run:
//! whole-process time, time per task, and peak memory (the PSS of the whole process tree, sampled every
//! 50 ms), with warm workers (the default) and, where it does not take too long, without
//! (`--workers off`). Prints figures; asserts nothing on time (it checks that both runs agree on the
//! outputs).
//!
//! ```sh
//! UPDRAFT_TEST_PYTHON=$(bash scripts/python-env) cargo bench -p updraft-cli --bench local
//! ```
//!
//! `UPDRAFT_BENCH_OFF=all` also runs the maps with `--workers off` (about 1.5 s a task on 2 cores);
//! `UPDRAFT_BENCH_CASES=chain,readme` picks cases.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Case {
    name: &'static str,
    what: &'static str,
    /// The package (made before the case runs) and the workflow.
    package: PathBuf,
    workflow: &'static str,
    /// flytekit's side: the module and the workflow function; None when flytekit cannot run it.
    flytekit: Option<(&'static str, &'static str)>,
    /// PYTHONPATH of both runs.
    pythonpath: PathBuf,
    /// `updraft run` arguments beyond the package and workflow.
    extra: Vec<&'static str>,
    /// Also run with `--workers off` by default.
    off: bool,
    /// Extra environment of `updraft run`.
    env: Vec<(&'static str, &'static str)>,
}

/// One measured run.
struct Figures {
    wall: Duration,
    /// Tasks that ran (attempt folders; flytekit's run is given updraft's count).
    tasks: usize,
    /// flytekit: the workflow call alone, in-process.
    in_process: Option<Duration>,
    peak_pss_kib: u64,
    outputs: serde_json::Value,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let python = PathBuf::from(std::env::var("UPDRAFT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_PYTHON is not set: UPDRAFT_TEST_PYTHON=$(bash scripts/python-env) cargo bench -p updraft-cli --bench local")
    }));
    let work = std::env::temp_dir().join(format!("updraft-bench-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let fixtures = root().join("tests/fixtures/flytekit");
    let example = root().join("examples/flytekit");
    // The README's flytekit example, packaged by the real pyflyte as examples/flytekit/README.md says.
    let hello = work.join("hello_flyte.tgz");
    let made = Command::new(python.with_file_name("pyflyte"))
        .args(["--pkgs", "hello_flyte", "package", "--output"])
        .arg(&hello)
        .arg("-f")
        .current_dir(&example)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "pyflyte package: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let all_off = std::env::var("UPDRAFT_BENCH_OFF").is_ok_and(|v| v == "all");
    let cases = vec![
        Case {
            name: "chain",
            what: "50 trivial tasks, each waiting for the one before",
            package: fixtures.join("bench.tgz"),
            workflow: "fixtures.bench.chain_wf",
            flytekit: Some(("fixtures.bench", "chain_wf")),
            pythonpath: fixtures.join("src"),
            extra: vec![],
            off: true,
            env: vec![],
        },
        Case {
            name: "chain+preload",
            what: "the same, the tasks' module also imported once by the worker (`UPDRAFT_WORKER_PRELOAD=fixtures.bench`)",
            package: fixtures.join("bench.tgz"),
            workflow: "fixtures.bench.chain_wf",
            flytekit: Some(("fixtures.bench", "chain_wf")),
            pythonpath: fixtures.join("src"),
            extra: vec![],
            off: false,
            env: vec![("UPDRAFT_WORKER_PRELOAD", "fixtures.bench")],
        },
        Case {
            name: "map1000",
            what: "a map of 1,000 trivial elements (--parallelism: the cores)",
            package: fixtures.join("bench.tgz"),
            workflow: "fixtures.bench.map_wf",
            flytekit: Some(("fixtures.bench", "map_wf")),
            pythonpath: fixtures.join("src"),
            extra: vec![],
            off: all_off,
            env: vec![],
        },
        Case {
            name: "napmap",
            what: "a map of 64 elements that each wait 0.25 s (--parallelism 16)",
            package: fixtures.join("bench.tgz"),
            workflow: "fixtures.bench.nap_map_wf",
            flytekit: Some(("fixtures.bench", "nap_map_wf")),
            pythonpath: fixtures.join("src"),
            extra: vec!["--parallelism", "16"],
            off: all_off,
            env: vec![],
        },
        Case {
            name: "readme",
            what: "examples/flytekit: a map, a dynamic task, retries, a cache (cold)",
            package: hello.clone(),
            workflow: "hello_flyte.workflows.hello",
            flytekit: Some(("hello_flyte.workflows", "hello")),
            pythonpath: example.clone(),
            extra: vec![],
            off: true,
            env: vec![],
        },
        Case {
            name: "hello.yaml",
            what: "README's first command: raw containers as processes, a map, a branch",
            package: root().join("examples/hello.yaml"),
            workflow: "hello",
            flytekit: None,
            pythonpath: example.clone(),
            extra: vec!["--containers", "process"],
            off: false,
            env: vec![],
        },
    ];
    let picked: Option<Vec<String>> = std::env::var("UPDRAFT_BENCH_CASES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    println!(
        "local runs on {} cores, flytekit in {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        python.display()
    );
    let mut rows = Vec::new();
    for case in &cases {
        if picked
            .as_ref()
            .is_some_and(|p| !p.iter().any(|n| n == case.name))
        {
            continue;
        }
        eprintln!("bench: {} …", case.name);
        let on = updraft_run(&python, case, "on", &work);
        let off = case.off.then(|| updraft_run(&python, case, "off", &work));
        let fk = case
            .flytekit
            .map(|(m, f)| flytekit_run(&python, case, m, f, on.tasks, &work));
        if let Some(fk) = &fk {
            assert_eq!(
                on.outputs["o0"], fk.outputs,
                "{}: updraft and flytekit disagree",
                case.name
            );
        }
        rows.push((case, on, off, fk));
    }
    println!();
    println!(
        "| case | what | updraft run (warm workers) | updraft run --workers off | flytekit local run: whole process | flytekit: the workflow call in-process | updraft ÷ flytekit whole process |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (case, on, off, fk) in &rows {
        let cell = |f: &Figures| {
            format!(
                "{:.2} s, {:.1} ms/task ({} tasks), peak {:.0} MiB",
                f.wall.as_secs_f64(),
                f.wall.as_secs_f64() * 1000.0 / f.tasks.max(1) as f64,
                f.tasks,
                f.peak_pss_kib as f64 / 1024.0
            )
        };
        let off = off.as_ref().map_or("—".to_string(), cell);
        let (whole, inproc, ratio) = match fk {
            Some(f) => (
                cell(f),
                f.in_process.map_or("—".to_string(), |d| {
                    format!(
                        "{:.3} s, {:.2} ms/task",
                        d.as_secs_f64(),
                        d.as_secs_f64() * 1000.0 / f.tasks.max(1) as f64
                    )
                }),
                format!("{:.2}×", on.wall.as_secs_f64() / f.wall.as_secs_f64()),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        println!(
            "| `{}` | {} | {} | {off} | {whole} | {inproc} | {ratio} |",
            case.name,
            case.what,
            cell(on)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn updraft_run(python: &Path, case: &Case, workers: &str, work: &Path) -> Figures {
    let state = work.join(format!("{}-{workers}", case.name));
    let _ = std::fs::remove_dir_all(&state);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.arg("run")
        .arg(&case.package)
        .args(["-w", case.workflow, "--workers", workers, "--python"])
        .arg(python)
        .arg("--state-dir")
        .arg(&state)
        .args(&case.extra)
        .env("PYTHONPATH", &case.pythonpath)
        .envs(case.env.iter().copied())
        .current_dir(root());
    let (wall, peak, out, err, ok) = measured(cmd);
    assert!(ok, "{} (--workers {workers}): {err}", case.name);
    let outputs = serde_json::from_str(&out).unwrap();
    let tasks = attempts(&state);
    let _ = std::fs::remove_dir_all(&state);
    Figures {
        wall,
        tasks,
        in_process: None,
        peak_pss_kib: peak,
        outputs,
    }
}

/// flytekit's local run: the workflow function called in one Python process.
fn flytekit_run(
    python: &Path,
    case: &Case,
    module: &str,
    func: &str,
    tasks: usize,
    work: &Path,
) -> Figures {
    const SCRIPT: &str = r#"
import importlib, json, sys, time
mod = importlib.import_module(sys.argv[1])
wf = getattr(mod, sys.argv[2])
t = time.perf_counter()
out = wf()
took = time.perf_counter() - t
print(json.dumps({"seconds": took, "outputs": out}))
"#;
    let mut cmd = Command::new(python);
    cmd.args(["-c", SCRIPT, module, func])
        .env("PYTHONPATH", &case.pythonpath)
        // A cold run, as updraft's (fresh state folder) is.
        .env("FLYTE_LOCAL_CACHE_ENABLED", "false")
        .current_dir(work);
    let (wall, peak, out, err, ok) = measured(cmd);
    assert!(ok, "{} (flytekit): {err}", case.name);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
    Figures {
        wall,
        tasks,
        in_process: Some(Duration::from_secs_f64(v["seconds"].as_f64().unwrap())),
        peak_pss_kib: peak,
        outputs: v["outputs"].clone(),
    }
}

/// Runs `cmd`, timing it and sampling its process tree's memory: (wall, peak PSS KiB, stdout, stderr,
/// success).
fn measured(mut cmd: Command) -> (Duration, u64, String, String, bool) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(tree_pss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (
        wall,
        peak.load(Ordering::Relaxed),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// The summed PSS of process `root` and all its descendants (warm workers' forks share most of their
/// pages, which PSS divides among them).
fn tree_pss_kib(root: u32) -> u64 {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(ppid) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse().ok())
            })
        {
            parent.insert(pid, ppid);
        }
    }
    let in_tree = |mut p: u32| {
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match parent.get(&p) {
                Some(&up) if up != 0 => p = up,
                _ => return false,
            }
        }
        false
    };
    parent
        .keys()
        .filter(|&&p| in_tree(p))
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Pss:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}

/// Attempts that ran under a state folder (folders holding a `stdout.log`).
fn attempts(state: &Path) -> usize {
    fn walk(d: &Path) -> usize {
        let mut n = usize::from(d.join("stdout.log").is_file());
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += walk(&e.path());
            }
        }
        n
    }
    walk(state)
}
