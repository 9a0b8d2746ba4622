//! `updraft ui` in a real browser: headless Chromium driven through its WebDriver (`chromedriver`, from
//! Debian's packages; `scripts/test` sets `UPDRAFT_TEST_CHROMEDRIVER`). Executions of fixtures — one
//! that succeeded (with a map), one that failed, one waiting at its gates, one running — are shown with
//! their phases; a gate is signalled and approved and an execution aborted from the pages; bad input
//! gets a clear message on the page. A screenshot of each page is kept under
//! `$HOME/.cache/updraft/artifacts/console/` (`UPDRAFT_ARTIFACTS` moves it).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_updraft, temp_dir, updraft};
use serde_json::{Value, json};

/// One HTTP/1.1 request to `127.0.0.1:port`: (status, body as JSON).
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // The answer's head, then its body by its length (or its chunks): the driver may keep the
    // connection open whatever the request says.
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let body = if let Some(n) = length {
        let mut b = vec![0; n];
        r.read_exact(&mut b).unwrap();
        String::from_utf8_lossy(&b).into_owned()
    } else if lower.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    } else {
        let mut b = Vec::new();
        r.read_to_end(&mut b).unwrap();
        String::from_utf8_lossy(&b).into_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver session in headless Chromium.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    shots: PathBuf,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(shots: PathBuf) -> Self {
        let driver_bin = std::env::var("UPDRAFT_TEST_CHROMEDRIVER").unwrap_or_else(|_| {
            panic!("UPDRAFT_TEST_CHROMEDRIVER is not set: run the tests with `bash scripts/test`")
        });
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_bin}: {e}"));
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let chrome = std::process::Command::new("sh")
            .args(["-c", "command -v chromium"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let (status, v) = http(
            port,
            "POST",
            "/session",
            Some(
                &json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                    "binary": chrome,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=1280,1100"]
                }}}}),
            ),
        );
        assert_eq!(status, 200, "a WebDriver session: {v}");
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        // This run's screenshots only.
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            driver,
            port,
            session,
            shots,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A WebDriver command, or its error (an element the page's refresh replaced is stale).
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let (status, v) = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(v)
        }
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("not an element: {e}"))
                .to_string()
        })
        .collect()
    }

    /// The first element matching `css`, waiting up to 30 s for one.
    fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no `{css}` on the page: {}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn attr(&self, element: &str, name: &str) -> String {
        self.call("GET", &format!("/element/{element}/attribute/{name}"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Does `what` to the first element matching `css`, looking for it again while the page's
    /// refresh replaces it (up to 30 s).
    fn on(&self, css: &str, what: impl Fn(&str) -> Result<Value, Value>) -> Value {
        let started = Instant::now();
        loop {
            let e = self.find(css);
            match what(&e) {
                Ok(v) => return v,
                Err(err) => assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "`{css}`: {err}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An attribute of the first element matching `css`.
    fn attr_of(&self, css: &str, name: &str) -> String {
        self.on(css, |e| {
            self.try_call("GET", &format!("/element/{e}/attribute/{name}"), None)
        })
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The text of the first element matching `css`.
    fn text_of(&self, css: &str) -> String {
        self.on(css, |e| {
            self.try_call("GET", &format!("/element/{e}/text"), None)
        })
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Clicks the first element matching `css`.
    fn click_on(&self, css: &str) {
        self.on(css, |e| {
            self.try_call("POST", &format!("/element/{e}/click"), Some(json!({})))
        });
    }

    /// Replaces the text of the first field matching `css` with `text`.
    fn fill(&self, css: &str, text: &str) {
        self.on(css, |e| {
            self.try_call("POST", &format!("/element/{e}/clear"), Some(json!({})))?;
            self.try_call(
                "POST",
                &format!("/element/{e}/value"),
                Some(json!({ "text": text })),
            )
        });
    }

    /// Waits (up to 60 s, the page refreshing itself) until `css`'s `data-phase` is `phase`.
    fn wait_phase(&self, css: &str, phase: &str) {
        let started = Instant::now();
        loop {
            // The element may be replaced between finding it and reading it: look again.
            if let Some(e) = self.find_all(css).into_iter().next()
                && let Ok(v) =
                    self.try_call("GET", &format!("/element/{e}/attribute/data-phase"), None)
                && v.as_str() == Some(phase)
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "`{css}` never became {phase}: {}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `updraft ui` over `state`, and its address.
struct Console(Child, String);

impl Console {
    fn start(state: &Path, files: &[&str]) -> Self {
        let mut args = vec!["ui", "--port", "0", "--state-dir", state.to_str().unwrap()];
        args.extend_from_slice(files);
        let mut child = spawn_updraft(&args, &[]);
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in: {line}"))
            .trim_end_matches('/')
            .to_string();
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Self(child, url)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const GATES: &str = r#"
version: 1
tasks:
  yell:
    type: container
    image: busybox
    inputs: {text: str}
    outputs: {loud: str}
    command: [sh, -c, 'echo "said: $1"; printf "%s!" "$1" > /var/outputs/loud', yell, '{{.inputs.text}}']
  boom:
    type: container
    image: busybox
    inputs: {x: int}
    outputs: {y: int}
    command: [sh, -c, 'echo "it broke on {{.inputs.x}}" >&2; echo "it broke on {{.inputs.x}}" > /var/outputs/_ERROR']
  nap:
    type: container
    image: busybox
    inputs: {s: int}
    outputs: {done: bool}
    command: [sh, -c, 'sleep {{.inputs.s}}; echo true > /var/outputs/done']
workflows:
  review:
    inputs: {text: str}
    outputs: {approved: "${ok.loud}", note: "${note.value}"}
    nodes:
      - {id: loud, task: yell, inputs: {text: "${inputs.text}"}}
      - {id: note, gate: {signal: review-note, type: str}}
      - {id: ok, gate: {approve: publish}, inputs: {loud: "${loud.loud}"}}
  fails:
    inputs: {x: int}
    outputs: {y: "${b.y}"}
    nodes:
      - {id: b, task: boom, inputs: {x: "${inputs.x}"}}
  sleepy:
    inputs: {s: {type: int, default: 300}}
    nodes:
      - {id: nap, task: nap, inputs: {s: "${inputs.s}"}}
"#;

/// The execution under `state` that is not in `known`.
fn newest(state: &Path, known: &mut Vec<String>) -> String {
    let all: Vec<String> = std::fs::read_dir(state.join("executions"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let new: Vec<String> = all.into_iter().filter(|n| !known.contains(n)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    known.push(new[0].clone());
    new[0].clone()
}

/// Waits until `name`'s summary says `phase`.
fn wait_summary(state: &Path, name: &str, what: impl Fn(&Value) -> bool) {
    let path = state.join("executions").join(name).join("execution.json");
    let started = Instant::now();
    loop {
        if let Ok(t) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str::<Value>(&t)
            && what(&v)
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: {path:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_console_shows_executions_and_steers_them_in_a_browser() {
    let dir = temp_dir("console");
    let state = dir.join("state");
    let s = state.to_str().unwrap().to_string();
    let file = dir.join("gates.yaml");
    std::fs::write(&file, GATES).unwrap();
    let f = file.to_str().unwrap().to_string();
    let mut known = Vec::new();

    // One that succeeded (with a map), one that failed.
    let (code, _, err) = updraft(&["run", "examples/hello.yaml", "--state-dir", &s]);
    assert_eq!(code, 0, "{err}");
    let hello = newest(&state, &mut known);
    let (code, _, _) = updraft(&["run", &f, "-w", "fails", "-i", "x=7", "--state-dir", &s]);
    assert_eq!(code, 1);
    let failed = newest(&state, &mut known);
    // One waiting at its gates, one running a long task.
    let mut review = spawn_updraft(
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
    std::thread::sleep(Duration::from_millis(300));
    let gated = {
        let started = Instant::now();
        loop {
            let all: Vec<String> = std::fs::read_dir(state.join("executions"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !known.contains(n))
                .collect();
            if let [one] = &all[..] {
                known.push(one.clone());
                break one.clone();
            }
            assert!(started.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_summary(&state, &gated, |v| {
        v["waiting_for"].as_array().is_some_and(|w| w.len() == 2)
    });
    let mut sleepy = spawn_updraft(&["run", &f, "-w", "sleepy", "--state-dir", &s], &[]);
    let running = {
        let started = Instant::now();
        loop {
            let all: Vec<String> = std::fs::read_dir(state.join("executions"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !known.contains(n))
                .collect();
            if let [one] = &all[..] {
                known.push(one.clone());
                break one.clone();
            }
            assert!(started.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_summary(&state, &running, |v| v["nodes"]["nap"] == "Running");

    let console = Console::start(&state, &["examples/hello.yaml", &f]);
    let shots = std::env::var_os("UPDRAFT_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/updraft/artifacts")
        })
        .join("console");
    let b = Browser::start(shots);
    let url = &console.1;

    // The executions, each with its phase.
    b.go(&format!("{url}/"));
    for (name, phase) in [
        (&hello, "Succeeded"),
        (&failed, "Failed"),
        (&gated, "Running"),
        (&running, "Running"),
    ] {
        let row = format!(r#"tr[data-execution="{name}"]"#);
        assert_eq!(b.attr_of(&row, "data-phase"), phase, "{name}");
    }
    b.screenshot("executions");
    // The filter: failed ones only.
    b.go(&format!("{url}/?phase=Failed"));
    b.find(&format!(r#"tr[data-execution="{failed}"]"#));
    assert_eq!(b.find_all("tr[data-execution]").len(), 1);

    // The one that succeeded: its graph, its map's elements, its nodes.
    b.go(&format!("{url}/executions/{hello}"));
    b.wait_phase("#live", "Succeeded");
    assert_eq!(
        b.attr_of(r#"svg.graph g[data-node="squares"]"#, "data-phase"),
        "Succeeded"
    );
    let elements = b.find_all(r#".grid[data-node="squares"] a"#);
    assert_eq!(elements.len(), 4);
    for e in &elements {
        assert_eq!(b.attr(e, "data-phase"), "Succeeded");
    }
    assert!(b.find_all("svg.timeline g.bar").len() >= 5);
    assert!(b.text_of("#outputs").contains("\"sum\": 30"));
    b.screenshot("execution-succeeded");

    // The one that failed: its error, and its node's page with the attempt's logs.
    b.go(&format!("{url}/executions/{failed}"));
    b.wait_phase("#live", "Failed");
    assert!(b.text_of("#error").contains("it broke on 7"));
    b.go(&format!("{url}/executions/{failed}/nodes/b"));
    let started = Instant::now();
    while !b
        .text_of(r#"pre.log[data-file="stderr.log"]"#)
        .contains("it broke on 7")
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(b.text_of("#inputs").contains("\"x\": 7"));
    b.screenshot("node-failed");

    // The one at its gates: a value for one, approval for the other, from the page.
    b.go(&format!("{url}/executions/{gated}"));
    b.wait_phase("#live", "Running");
    assert_eq!(
        b.attr_of(r#"svg.graph g[data-node="ok"]"#, "data-phase"),
        "Running"
    );
    b.screenshot("execution-gates");
    b.fill("#value-review-note", "looks good");
    b.click_on("#send-review-note");
    assert!(b.text_of("#notice").contains("sent `review-note`"));
    b.click_on("#approve-publish");
    b.wait_phase("#live", "Succeeded");
    assert!(b.text_of("#outputs").contains("looks good"));
    assert!(review.wait().unwrap().success());

    // The running one, aborted from the page.
    b.go(&format!("{url}/executions/{running}"));
    b.wait_phase("#live", "Running");
    b.click_on("#abort");
    b.wait_phase("#live", "Aborted");
    b.screenshot("execution-aborted");
    assert!(!sleepy.wait().unwrap().success());

    // Bad input: an unknown execution, inputs that are not JSON.
    b.go(&format!("{url}/executions/nope"));
    assert!(b.text_of("#message").contains("no execution"));
    b.screenshot("unknown-execution");
    b.go(&format!("{url}/executions/{hello}"));
    b.fill("#relaunch-inputs", "{not json");
    b.click_on("#relaunch");
    assert!(
        b.text_of("#message")
            .contains("the inputs must be a JSON object")
    );
    assert!(!b.source().contains("panicked"));
    b.screenshot("bad-inputs");
    // A relaunch with edited inputs runs it again.
    b.go(&format!("{url}/executions/{hello}"));
    b.fill(
        "#relaunch-inputs",
        r#"{"numbers": [1, 2], "name": "again"}"#,
    );
    b.click_on("#relaunch");
    b.wait_phase("#live", "Succeeded");
    assert!(
        b.text_of("#notice")
            .contains(&format!("relaunched from {hello}"))
    );
    assert!(b.text_of("#outputs").contains("\"sum\": 5"));
    b.screenshot("relaunched");

    // The workflows and launch plans of the files it was given: a graph, an interface, a launch form.
    b.go(&format!("{url}/workflows"));
    for lp in ["hello", "review", "fails", "sleepy"] {
        b.find(&format!(r#"tr[data-launch-plan="{lp}"]"#));
    }
    b.screenshot("workflows");
    b.go(&format!("{url}/launch-plans/hello"));
    b.find(r#"svg.graph g[data-node="squares"]"#);
    assert!(
        b.text_of(r#"tr[data-input="numbers"]"#)
            .contains("[1,2,3,4]")
    );
    b.screenshot("launch-plan");
    // Inputs of the wrong type: the run's own message, on the page.
    b.fill("#launch-inputs", r#"{"numbers": "many"}"#);
    b.click_on("#launch");
    let message = b.text_of("#message");
    assert!(message.contains("input `numbers`"), "{message}");
    b.screenshot("launch-bad-inputs");
    b.go(&format!("{url}/launch-plans/hello"));
    b.fill("#launch-inputs", r#"{"numbers": [10], "name": null}"#);
    b.click_on("#launch");
    b.wait_phase("#live", "Succeeded");
    assert!(b.text_of("#notice").contains("launched hello"));
    assert!(b.text_of("#outputs").contains("\"sum\": 100"));
    b.go(&format!("{url}/launch-plans/nope"));
    assert!(b.text_of("#message").contains("no launch plan `nope`"));
    drop(b);
    // Requests for another host (a name another site rebound here) and forms posted from another
    // site's page are refused.
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let raw = |request: String| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let answer = raw(format!(
        "GET / HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let form = "reason=x";
    let answer = raw(format!(
        "POST /executions/{hello}/abort HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    ));
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("another site"), "{answer}");
    drop(console);
    let _ = std::fs::remove_dir_all(&dir);
}
