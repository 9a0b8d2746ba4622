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

/// `updraft ui … --port 0` in the background and the port it listens on; stopped when dropped.
pub struct Console {
    child: Child,
    /// The port on 127.0.0.1.
    pub port: u16,
}

impl Console {
    /// Starts `updraft ui ARGS --port 0` with extra environment variables.
    pub fn start(args: &[&str], env: &[(&str, &OsStr)]) -> Self {
        use std::io::BufRead;
        let mut all = vec!["ui", "--port", "0"];
        all.extend_from_slice(args);
        let mut child = spawn_updraft(&all, env);
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let port = line
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in: {line}"));
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Self { child, port }
    }

    /// Its address, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET path`: (status, headers as lower-case name and value, body).
    pub fn get(&self, path: &str) -> (u16, Vec<(String, String)>, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    }

    /// The text of log `src` (a page's `data-src`) read to its end, as the page's script follows it.
    pub fn follow_log(&self, src: &str) -> String {
        let mut text = String::new();
        let mut offset = 0u64;
        let started = std::time::Instant::now();
        loop {
            let (code, headers, body) = self.get(&format!("{src}&offset={offset}"));
            assert_eq!(code, 200, "{src}: {body}");
            text.push_str(&body);
            let header = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            offset = header("x-offset").parse().unwrap();
            if header("x-running") != "1" {
                return text;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "{src} still runs after 120 s: {text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data-src` of each log a node's page follows: (label, source).
pub fn log_sources(page: &str) -> Vec<(String, String)> {
    page.split(r#"<pre class="log" data-file=""#)
        .skip(1)
        .filter_map(|p| {
            let (label, rest) = p.split_once('"')?;
            let src = rest.split("data-src=\"").nth(1)?.split('"').next()?;
            Some((label.to_string(), src.replace("&amp;", "&")))
        })
        .collect()
}

/// The only execution under the local store `state`.
pub fn only_execution(state: &std::path::Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(state.join("executions"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names.remove(0)
}

/// The history of execution `name` of the local store `state`, as `updraft status --json` prints it.
pub fn history_json(state: &std::path::Path, name: &str) -> serde_json::Value {
    let (code, out, err) = updraft(&[
        "status",
        name,
        "--json",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}
