//! Helpers shared by the binary's test files: run `updraft`, in the foreground or the background, and
//! wait for an execution's recorded state.

#![allow(dead_code, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};

/// The repository root (tests run from it, so fixture paths are relative to it).
pub fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `updraft <args>`: (exit code, stdout, stderr).
pub fn updraft(args: &[&str]) -> (i32, String, String) {
    updraft_env(args, &[])
}

/// Runs `updraft <args>` with extra environment variables: (exit code, stdout, stderr).
pub fn updraft_env(args: &[&str], env: &[(&str, &OsStr)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_updraft"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Python with the locked flytekit the tests run tasks in (`UPDRAFT_TEST_PYTHON`, set by
/// `scripts/test`).
pub fn flytekit_python() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("UPDRAFT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_PYTHON is not set: run the tests with `bash scripts/test`")
    }))
}

/// The flytekit fixtures' source folder (their tasks import `fixtures.*` from it).
pub fn fixture_src() -> std::path::PathBuf {
    root().join("tests/fixtures/flytekit/src")
}

/// The execution a run names on its first line (`running … as <name>`).
pub fn execution_of(err: &str) -> String {
    err.split(" as ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string()
}

/// A fresh temporary folder for one test.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("updraft-cli-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts `updraft <args>` in the background with extra environment variables, capturing its output.
pub fn spawn_updraft(args: &[&str], env: &[(&str, &OsStr)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_updraft"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `PATH` with the stand-in container engine of `tests/container-engine` first.
pub fn path_with_fake_engine() -> std::ffi::OsString {
    let mut dirs = vec![root().join("tests/container-engine")];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// Waits (up to 60 s) until the only execution under `state` records a summary for which `what` holds;
/// returns its name and summary.
pub fn wait_for(
    state: &std::path::Path,
    what: impl Fn(&serde_json::Value) -> bool,
) -> (String, serde_json::Value) {
    for _ in 0..1200 {
        if let Some(Ok(e)) = std::fs::read_dir(state.join("executions"))
            .ok()
            .and_then(|mut d| d.next())
            && let Ok(text) = std::fs::read_to_string(e.path().join("execution.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && what(&v)
        {
            return (e.file_name().to_string_lossy().into_owned(), v);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the execution under {} never got there", state.display());
}

/// The digest the secrets fixture's tasks return for a value (never the value itself).
pub fn secret_digest(value: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(value.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect::<String>()[..12].to_string()
}

/// Makes the database the `sqlite` fixture's query reads (`fixtures.sqlite.SHOP_DB`), with `python`
/// (the flytekit environment).
#[allow(dead_code)]
pub fn shop_db(python: &str) {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from fixtures.sqlite import shop_db; shop_db()",
        ])
        .arg(root().join("tests/fixtures/flytekit/src"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot make the sqlite fixture's database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
