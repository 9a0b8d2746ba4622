//! Figures for the serverless runtime, against LocalStack (prints them; asserts nothing about speed).
//!
//! ```sh
//! bash localstack/up && UPDRAFT_TEST_LOCALSTACK=http://127.0.0.1:4566 \
//!   UPDRAFT_TEST_PYTHON=$(bash scripts/python-env) cargo bench -p updraft-functions --bench serverless
//! ```
//!
//! - **node-to-node latency**: flytekit workflows run through the transitions queue with native tasks
//!   on the Kubernetes API test server; for each transition that saw a task done and submitted the next
//!   task (a new pod), the time from the message's receipt to the pod's creation at the cluster, and
//!   to the end of the transition; plus the SQS hop (send → receive) that precedes it in a deployment;
//! - **task end → next task**: from a pod's containers all exiting (as the test kubelet saw it) to the
//!   next pod's creation, with the pods' end signals and polled (the wrapper off);
//! - **where that time goes**: proxies in front of LocalStack and the test server time each request;
//! - **AWS requests per transition**, counted by the proxy, by service, and what they cost per million
//!   transitions next to Step Functions Standard's $25;
//! - **cold start**: the `transition` binary from process start to its first request for an event
//!   (`/runtime/invocation/next`) on a stand-in Lambda Runtime API;
//! - **peak RSS** of each function's binary handling one event;
//! - **bootstrap size** of the zips `scripts/bundle` made, when present.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use updraft_connector_eks::{Cluster, EksConfig};
use updraft_functions::launch::{Packages, Request, launch};
use updraft_functions::transition::{Received, Transition, is_final};
use updraft_functions::{Clients, Settings};
use updraft_test_kube::{Node, Server};

mod common;
use common::{Batching, env, ms, percentile, resources, sdk};

// ------------------------------------------------------------------ a counting proxy

/// Requests seen by the proxy, by AWS service (from the signature's credential scope).
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Time from each request's last byte to its response's first byte, in ms, by service.
type Waits = Arc<Mutex<BTreeMap<String, Vec<f64>>>>;

/// When each POST request arrived (for the Kubernetes API: object creations).
type Posts = Arc<Mutex<Vec<Instant>>>;

/// Forwards TCP connections to `upstream`, counting the HTTP requests that pass and timing their
/// answers; a request without an AWS signature counts as `unsigned` (the Kubernetes API's).
fn proxy(upstream: String, unsigned: &'static str) -> (String, Counts, Waits, Posts) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let counts: Counts = Arc::default();
    let waits: Waits = Arc::default();
    let posts: Posts = Arc::default();
    let (c, w, po) = (counts.clone(), waits.clone(), posts.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let up = TcpStream::connect(&upstream).unwrap();
            let _ = conn.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (up_r, down_w) = (up.try_clone().unwrap(), conn.try_clone().unwrap());
            // The request waiting for its answer on this connection (HTTP/1.1: one at a time).
            let pending: Arc<Mutex<Option<(Instant, String)>>> = Arc::default();
            let (p, w) = (pending.clone(), w.clone());
            std::thread::spawn(move || copy_answers(up_r, down_w, &p, &w));
            let (c, po) = (c.clone(), po.clone());
            std::thread::spawn(move || count_requests(conn, up, &c, &pending, &po, unsigned));
        }
    });
    (addr, counts, waits, posts)
}

/// Copies answers back to the client, timing the first bytes of each.
fn copy_answers(
    mut up: TcpStream,
    mut client: TcpStream,
    pending: &Mutex<Option<(Instant, String)>>,
    waits: &Waits,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match up.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some((sent, service)) = pending.lock().unwrap().take() {
            waits
                .lock()
                .unwrap()
                .entry(service)
                .or_default()
                .push(ms(sent.elapsed()));
        }
        if client.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Copies a client's requests upstream, counting each by the service its credential scope names.
fn count_requests(
    client: TcpStream,
    mut up: TcpStream,
    counts: &Counts,
    pending: &Mutex<Option<(Instant, String)>>,
    posts: &Posts,
    unsigned: &str,
) {
    let mut r = BufReader::new(client);
    loop {
        // Request line and headers.
        let mut head = Vec::new();
        let mut length = 0usize;
        let mut service = unsigned.to_string();
        let mut read = false;
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if head.is_empty() {
                if text.starts_with("post ") {
                    posts.lock().unwrap().push(Instant::now());
                }
                read = text.starts_with("get ") || text.starts_with("head ");
            }
            if let Some(v) = text.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if text.starts_with("authorization:")
                && let Some(scope) = text.split("credential=").nth(1)
            {
                service = scope.split('/').nth(3).unwrap_or("?").to_string();
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if service == "s3" {
            // S3 prices reads and writes apart.
            service = if read { "s3 GET" } else { "s3 PUT" }.into();
        }
        *counts.lock().unwrap().entry(service.clone()).or_default() += 1;
        head.extend_from_slice(&body);
        if up.write_all(&head).is_err() {
            return;
        }
        *pending.lock().unwrap() = Some((Instant::now(), service));
    }
}

// ------------------------------------------------------------------ the stack

/// For the executions named `<prefix>…`, each pod's end to the creation of the pod after it (their
/// pods in the order of their creation), in ms, sorted.
fn end_to_next(server: &Server, prefix: &str) -> Vec<f64> {
    let store = server.store.lock().unwrap();
    let mut by_exec: BTreeMap<String, Vec<(Instant, String)>> = BTreeMap::new();
    for (k, at) in &store.created {
        if let Some((exec, _)) = k.name.split_once('-')
            && exec.starts_with(prefix)
        {
            by_exec
                .entry(exec.to_string())
                .or_default()
                .push((*at, k.name.clone()));
        }
    }
    let mut out = Vec::new();
    for pods in by_exec.values_mut() {
        pods.sort();
        for pair in pods.windows(2) {
            let ended = store
                .ends
                .iter()
                .find(|(k, _)| k.name == pair[0].1)
                .map(|(_, at)| *at);
            if let Some(ended) = ended.filter(|e| *e <= pair[1].0) {
                out.push(ms(pair[1].0.duration_since(ended)));
            }
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Hands `t` the transitions queue's messages in batches gathered as the event source mapping does
/// with `batching`, until execution `name` ends (`limit_s` seconds at most); returns the messages,
/// the batches and how long `t` took over them.
async fn drive_batches(
    t: &Transition,
    watcher: &Clients,
    sqs: &aws_sdk_sqs::Client,
    (url, batching): (&str, Batching),
    name: &str,
    limit_s: u64,
) -> (usize, usize, Duration) {
    let limit = Instant::now() + Duration::from_secs(limit_s);
    let (mut messages, mut batches, mut busy) = (0, 0, Duration::ZERO);
    loop {
        let item = watcher.store.execution(name).await.unwrap().unwrap();
        if is_final(&item.phase) {
            assert_eq!(item.phase, "SUCCEEDED", "{name}: {:?}", item.error);
            return (messages, batches, busy);
        }
        assert!(Instant::now() < limit, "{name} did not finish");
        let msgs = common::receive_batch(sqs, url, batching).await;
        if msgs.is_empty() {
            continue;
        }
        messages += msgs.len();
        batches += 1;
        busy += common::hand(t, sqs, url, &msgs).await.1;
    }
}

/// The launch of the flytekit branch workflow as execution `name`, the `i`th of a series (x from 1
/// to 5 in turn).
fn branch_request(name: &str, i: usize) -> Request {
    Request {
        name: Some(name.into()),
        workflow: Some("fixtures.branches.branch_wf".into()),
        inputs: serde_json::from_value(serde_json::json!({"x": 1 + i as i64 % 5})).unwrap(),
        ..Default::default()
    }
}

/// Hands `t` the transitions queue's messages (gathered with `batching`) until execution `name`
/// ends (two minutes at most).
async fn drive(
    t: &Transition,
    watcher: &Clients,
    sqs: &aws_sdk_sqs::Client,
    queue: (&str, Batching),
    name: &str,
) {
    drive_batches(t, watcher, sqs, queue, name, 120).await;
}

fn cluster(work: &Path, root: &Path) -> Server {
    let node = Node::python(
        Path::new(&env("UPDRAFT_TEST_PYTHON")),
        &root.join("tests/fixtures/flytekit/src"),
        &[updraft_test_kube::programs_dir("updraft-copilot")],
    );
    Server::start_node(0, work.join("kubelet"), node).unwrap()
}

/// Requests answered so far and the time spent waiting for them, by service.
fn totals(waits: &[&Waits]) -> BTreeMap<String, (usize, f64)> {
    let mut out = BTreeMap::new();
    for w in waits {
        for (service, times) in w.lock().unwrap().iter() {
            let e: &mut (usize, f64) = out.entry(service.clone()).or_default();
            e.0 += times.len();
            e.1 += times.iter().sum::<f64>();
        }
    }
    out
}

// ------------------------------------------------------------------ a stand-in Runtime API

/// Serves one event on a Lambda Runtime API; records when the first `next` arrived and the response.
struct RuntimeApi {
    addr: String,
    first_next: Arc<Mutex<Option<Instant>>>,
    response: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
}

impl RuntimeApi {
    fn start(event: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let first_next = Arc::new(Mutex::new(None));
        let response = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, s) = (first_next.clone(), response.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut served = false;
            while !s.load(Ordering::SeqCst) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    let _ = reader.read_exact(&mut body);
                    if line.starts_with("GET") && line.contains("/invocation/next") {
                        f.lock().unwrap().get_or_insert_with(Instant::now);
                        if served {
                            // No second event: hold the request until stopped.
                            while !s.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            return;
                        }
                        served = true;
                        let deadline = updraft_functions::now_ms() + 60_000;
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: bench-1\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:bench\r\nContent-Length: {}\r\n\r\n{event}",
                            event.len()
                        );
                    } else {
                        *r.lock().unwrap() = Some(String::from_utf8_lossy(&body).into_owned());
                        let _ = write!(conn, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
                    }
                }
            }
        });
        Self {
            addr,
            first_next,
            response,
            stop,
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts function `binary` on a stand-in Runtime API with `event`: the time to its first `next`,
/// its response, and its peak RSS (KiB) once it answered.
fn run_function(
    binary: &str,
    settings: &Settings,
    endpoint: &str,
    event: String,
    wait_response: bool,
    extra: &[(&str, String)],
) -> (Duration, Option<String>, u64) {
    let api = RuntimeApi::start(event);
    let started = Instant::now();
    let mut child = std::process::Command::new(binary)
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("UPDRAFT_TABLE", &settings.table)
        .env("UPDRAFT_BUCKET", &settings.bucket)
        .env("UPDRAFT_TRANSITIONS_URL", &settings.transitions_url)
        .env("RUST_LOG", "warn")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let limit = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Some(t) = *api.first_next.lock().unwrap() {
            break t - started;
        }
        assert!(Instant::now() < limit, "{binary} never asked for an event");
        std::thread::sleep(Duration::from_micros(200));
    };
    if wait_response {
        while api.response.lock().unwrap().is_none() {
            assert!(Instant::now() < limit, "{binary} never answered");
            std::thread::sleep(Duration::from_millis(2));
        }
        // Its next `next` (the event is done).
        std::thread::sleep(Duration::from_millis(50));
    }
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    let response = api.response.lock().unwrap().clone();
    (ready, response, rss)
}

// ------------------------------------------------------------------ the figures

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `UPDRAFT_BENCH_LOG=info` (or any filter) shows the transitions' logs.
    if let Ok(filter) = std::env::var("UPDRAFT_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let localstack = env("UPDRAFT_TEST_LOCALSTACK");
    let upstream = localstack
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (endpoint, counts, waits, _) = proxy(upstream, "?");
    let sdk = sdk(&endpoint).await;
    let id = format!("bench-{}", std::process::id());
    let mut settings = resources(&sdk, &id).await;
    let work = std::env::temp_dir().join(format!("updraft-{id}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let mut server = cluster(&work, &root);
    server.write_kubeconfig(&work.join("kubeconfig")).unwrap();
    // The transitions reach the cluster through a proxy too, to time its answers.
    let (kube_proxy, _, kube_waits, creations) = proxy(
        server.url.trim_start_matches("http://").to_string(),
        "kubernetes",
    );
    let kubeconfig = std::fs::read_to_string(work.join("kubeconfig"))
        .unwrap()
        .replace(&server.url, &kube_proxy);
    std::fs::write(work.join("kubeconfig-timed"), kubeconfig).unwrap();
    let eks: EksConfig = serde_json::from_value(serde_json::json!({
        "namespace": "flyte",
        "env": {
            "FLYTE_AWS_ENDPOINT": localstack,
            "FLYTE_AWS_ACCESS_KEY_ID": "test",
            "FLYTE_AWS_SECRET_ACCESS_KEY": "test",
            "AWS_ENDPOINT_URL": localstack,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    }))
    .unwrap();
    settings.eks = Some(eks.clone());
    let clients: Clients = settings.clients_with(sdk.clone());
    // The bench's own calls (polling, receiving, deleting) go around the proxy, so only the
    // transitions' calls are counted.
    let direct = self::sdk(&localstack).await;
    let watcher: Clients = settings.clients_with(direct.clone());
    let sqs = aws_sdk_sqs::Client::new(&direct);

    // Register the package.
    let file = "tests/fixtures/flytekit/branches.tgz";
    let bytes = std::fs::read(root.join(file)).unwrap();
    let key = "packages/branches.tgz";
    clients
        .blobs
        .put(&clients.blobs.uri(key), bytes.clone())
        .await
        .unwrap();
    let compiled =
        updraft_engine::compile(&updraft_functions::launch::decode_package(key, &bytes).unwrap())
            .unwrap();
    for name in compiled
        .workflows
        .keys()
        .chain(compiled.launch_plans.keys())
    {
        clients.store.register(name, key, 0).await.unwrap();
    }

    let kube = Cluster::from_kubeconfig(Some(&work.join("kubeconfig-timed")))
        .await
        .unwrap();
    // As deployed by default: sweeps, the fallback for signals that never come, 8 s after a start and
    // then a minute apart, so that the pods' own signals are what this measures (with the bench's
    // 1 s, a sweep phase-locked to one-second tasks saw most ends first). The polls below keep 1 s.
    let mut deployed = settings.clone();
    deployed.max_check_delay = Duration::from_secs(60);
    let t = Transition::with_cluster(deployed, clients.clone(), Some((kube, eks.clone())));
    let packages = Packages::default();
    let runs: usize = std::env::var("UPDRAFT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    eprintln!("running {runs} executions of fixtures.branches.branch_wf through the queue …");

    let mut next_task = Vec::new();
    let mut submitted = Vec::new();
    let mut split: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    let mut all = Vec::new();
    let mut seen_pods: BTreeSet<String> = BTreeSet::new();
    let before: BTreeMap<String, u64> = counts.lock().unwrap().clone();
    let capacity = common::Capacity::of(&clients.store);
    let operations = clients.store.consumed().by_operation();
    let mut handled = 0u64;
    let mut tasks = 0u64;
    let mut wall = Duration::ZERO;
    for i in 0..runs {
        let name = format!("b{i}");
        let run_started = Instant::now();
        let req = branch_request(&name, i);
        launch(&settings, &watcher, &packages, &req, "")
            .await
            .unwrap();
        let limit = Instant::now() + Duration::from_secs(120);
        loop {
            let item = watcher.store.execution(&name).await.unwrap().unwrap();
            if is_final(&item.phase) {
                assert_eq!(item.phase, "SUCCEEDED", "{name}: {:?}", item.error);
                wall += run_started.elapsed();
                break;
            }
            assert!(Instant::now() < limit, "{name} did not finish");
            let got = sqs
                .receive_message()
                .queue_url(&settings.transitions_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in got.messages.unwrap_or_default() {
                let body = m.body.clone().unwrap_or_default();
                let is_check = updraft_functions::queue::decode(&body)
                    .ok()
                    .and_then(|q| q.kind)
                    .is_some_and(|k| {
                        matches!(k, updraft_proto::updraft::queue_message::Kind::Check(_))
                    });
                let waited = totals(&[&waits, &kube_waits]);
                let received = Instant::now();
                let failed = t
                    .handle(vec![Received {
                        id: m.message_id.clone().unwrap_or_default(),
                        body,
                        receive_count: 1,
                        dead_letter: false,
                    }])
                    .await;
                let took = received.elapsed();
                handled += 1;
                all.push(ms(took));
                let pods: BTreeSet<String> =
                    server.store.lock().unwrap().names().into_iter().collect();
                let new = pods.difference(&seen_pods).count();
                if new > 0 {
                    tasks += new as u64;
                    if is_check {
                        next_task.push(ms(took));
                        // The next task is submitted when its pod's creation reaches the cluster.
                        if let Some(at) = creations.lock().unwrap().iter().find(|t| **t >= received)
                        {
                            submitted.push(ms(at.duration_since(received)));
                        }
                        // Where its time went: waiting on each service, and the rest.
                        for (service, (n, t)) in totals(&[&waits, &kube_waits]) {
                            let (n0, t0) = waited.get(&service).copied().unwrap_or_default();
                            let e: &mut (usize, f64) = split.entry(service).or_default();
                            e.0 += n - n0;
                            e.1 += t - t0;
                        }
                    }
                }
                seen_pods.extend(pods);
                if failed.is_empty() {
                    sqs.delete_message()
                        .queue_url(&settings.transitions_url)
                        .receipt_handle(m.receipt_handle.unwrap())
                        .send()
                        .await
                        .unwrap();
                }
            }
        }
    }
    let after = counts.lock().unwrap().clone();
    next_task.sort_by(f64::total_cmp);
    submitted.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);

    // The SQS hop: send → receive (long polling), as the event source mapping would see it.
    let mut hop = Vec::new();
    for _ in 0..30 {
        let sent = Instant::now();
        sqs.send_message()
            .queue_url(&settings.transitions_url)
            .message_body("hop")
            .send()
            .await
            .unwrap();
        loop {
            let got = sqs
                .receive_message()
                .queue_url(&settings.transitions_url)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            if let Some(m) = got.messages.unwrap_or_default().into_iter().next() {
                hop.push(ms(sent.elapsed()));
                sqs.delete_message()
                    .queue_url(&settings.transitions_url)
                    .receipt_handle(m.receipt_handle.unwrap())
                    .send()
                    .await
                    .unwrap();
                break;
            }
        }
    }
    hop.sort_by(f64::total_cmp);

    println!("\n== node-to-node latency (LocalStack on this machine, transition logic in-process)");
    println!(
        "task done → next task submitted: median {:.1} ms, p99 {:.1} ms ({} transitions: the check \
         that saw a pod succeed received → the next pod's creation at the cluster)",
        percentile(&submitted, 0.5),
        percentile(&submitted, 0.99),
        submitted.len()
    );
    println!(
        "… to that transition's end:      median {:.1} ms, p99 {:.1} ms (its commit and cleanup too)",
        percentile(&next_task, 0.5),
        percentile(&next_task, 0.99),
    );
    println!(
        "every transition:                median {:.1} ms, p99 {:.1} ms ({} messages)",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.len()
    );
    println!(
        "SQS hop (send → receive):        median {:.1} ms, p99 {:.1} ms",
        percentile(&hop, 0.5),
        percentile(&hop, 0.99)
    );
    let n = next_task.len().max(1) as f64;
    let mean = next_task.iter().sum::<f64>() / n;
    println!(
        "\n== where a task done → next task transition waits (mean of {} transitions: {mean:.1} ms)",
        next_task.len()
    );
    let mut waited = 0.0;
    for (service, (count, t)) in &split {
        waited += t;
        println!(
            "{service:<10} {:>5.1} requests  {:>6.1} ms  ({:.1} ms each)",
            *count as f64 / n,
            t / n,
            t / (*count).max(1) as f64
        );
    }
    println!(
        "the rest (engine, encoding, SDK, the test server's clock) {:.1} ms",
        mean - waited / n
    );

    // Requests per transition, and their cost.
    let used = common::Capacity::of(&clients.store).since(capacity);
    let mut per: BTreeMap<String, f64> = BTreeMap::new();
    for (svc, n) in &after {
        let d = n - before.get(svc).copied().unwrap_or(0);
        per.insert(svc.clone(), d as f64 / handled as f64);
    }
    // Each pod sent its end signal itself (not through the proxy): one SQS request a task attempt.
    *per.entry("sqs".into()).or_default() += tasks as f64 / handled as f64;
    println!(
        "\n== AWS requests per transition ({handled} messages, {tasks} task attempts; SQS with the \
         pods' end signals)"
    );
    for (svc, n) in &per {
        println!("{svc:<10} {n:.2}");
    }
    let ddb = common::Capacity {
        read: used.read / handled as f64,
        write: used.write / handled as f64,
    };
    println!(
        "DynamoDB capacity consumed per transition: {:.2} read units, {:.2} write units",
        ddb.read, ddb.write
    );
    common::print_operations(&clients.store, &operations, handled, "transition");
    // The cost model: `common::cost_per_million`.
    let median_s = percentile(&all, 0.5) / 1000.0;
    println!(
        "(plus 2 SQS requests per transition by the event source mapping: receive and delete)"
    );
    let (lambda, sqs_cost, ddb_cost, s3_cost, total) =
        common::cost_per_million(&per, ddb, median_s);
    let per_task = handled as f64 / tasks.max(1) as f64;
    println!(
        "\n== cost per million transitions (upper bounds, 512 MB arm64 at the median duration)\n\
         Lambda ${lambda:.2}  SQS ${sqs_cost:.2}  DynamoDB ${ddb_cost:.2}  S3 ${s3_cost:.2}  \
         = ${total:.2}   (Step Functions Standard: $25.00 per million state transitions)\n\
         per million task attempts ({per_task:.2} transitions each): ${:.2}",
        total * per_task
    );
    // Step Functions Express for the same executions: one request each, billed by duration at 64 MB.
    let mean_s = wall.as_secs_f64() / runs as f64;
    let express = (1.0 + 0.064 * mean_s * 16.67) / (handled as f64 / runs as f64);
    println!(
        "Step Functions Express for these executions ({mean_s:.1} s each at 64 MB): ${express:.2} per \
         million transitions"
    );

    // A task's end (its pod's containers all exited) → the next task's pod created, with the pods'
    // end signals (the run above) and without them (polls, as when the wrapper is off).
    let signalled = end_to_next(&server, "b");
    let mut polled_eks = eks.clone();
    polled_eks.task_wrapper = false;
    let kube = Cluster::from_kubeconfig(Some(&work.join("kubeconfig-timed")))
        .await
        .unwrap();
    let t_polls =
        Transition::with_cluster(settings.clone(), clients.clone(), Some((kube, polled_eks)));
    // And with the end signals, the batches gathered for a second (`TransitionBatchWindowSeconds=1`).
    for (prefix, transition, batching) in [
        ("p", &t_polls, Batching::AT_ONCE),
        ("w", &t, Batching::window(1)),
    ] {
        for i in 0..runs.min(4) {
            let name = format!("{prefix}{i}");
            let req = branch_request(&name, i);
            launch(&settings, &watcher, &packages, &req, "")
                .await
                .unwrap();
            drive(
                transition,
                &watcher,
                &sqs,
                (&settings.transitions_url, batching),
                &name,
            )
            .await;
        }
    }
    let polled = end_to_next(&server, "p");
    let windowed = end_to_next(&server, "w");
    println!("\n== a task's end (its pod's containers exited) → the next task's pod created");
    for (how, d) in [
        ("with the pods' end signals", &signalled),
        ("polled (taskWrapper off)  ", &polled),
        ("signals, 1 s batching window", &windowed),
    ] {
        println!(
            "{how}: median {:.0} ms, p99 {:.0} ms ({} task ends)",
            percentile(d, 0.5),
            percentile(d, 0.99),
            d.len()
        );
    }

    // A map of raw containers, one pod each, through the test cluster.
    let width: usize = std::env::var("UPDRAFT_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    if width > 0 {
        let yaml = "version: 1
image: busybox
tasks:
  square:
    type: container
    inputs: {x: int}
    outputs: {y: int}
    command: [sh, -c, 'echo $(( {{.inputs.x}} * {{.inputs.x}} )) > /var/outputs/y']
workflows:
  pods:
    inputs: {xs: \"list[int]\"}
    outputs: {ys: \"${squares.y}\"}
    nodes:
      - id: squares
        map: {task: square}
        inputs: {x: \"${inputs.xs}\"}
";
        let key = "packages/pods.yaml";
        clients
            .blobs
            .put(&clients.blobs.uri(key), yaml.as_bytes().to_vec())
            .await
            .unwrap();
        clients.store.register("pods", key, 0).await.unwrap();
        // As deployed by default (batches of up to 10 at once), and with a batching window of a
        // second (`TransitionBatchWindowSeconds=1`: up to 100 a batch).
        for (name, batching, how) in [
            ("pods", Batching::AT_ONCE, "batches of up to 10 at once"),
            (
                "podw",
                Batching::window(1),
                "batches of up to 100 gathered for 1 s",
            ),
        ] {
            let req = Request {
                name: Some(name.into()),
                workflow: Some("pods".into()),
                inputs: serde_json::from_value(
                    serde_json::json!({ "xs": (0..width as i64).collect::<Vec<_>>() }),
                )
                .unwrap(),
                ..Default::default()
            };
            let before = counts.lock().unwrap().clone();
            let capacity = common::Capacity::of(&clients.store);
            let operations = clients.store.consumed().by_operation();
            let started = Instant::now();
            launch(&settings, &watcher, &packages, &req, "")
                .await
                .unwrap();
            let (messages, batches, busy) = drive_batches(
                &t,
                &watcher,
                &sqs,
                (&settings.transitions_url, batching),
                name,
                900,
            )
            .await;
            let took = started.elapsed();
            let after = counts.lock().unwrap().clone();
            let used = common::Capacity::of(&clients.store).since(capacity);
            let item = watcher.store.execution(name).await.unwrap().unwrap();
            let delta = |k: &str| {
                after.get(k).copied().unwrap_or(0) as f64
                    - before.get(k).copied().unwrap_or(0) as f64
            };
            let pods = server
                .store
                .lock()
                .unwrap()
                .created
                .keys()
                .filter(|k| k.name.starts_with(&format!("{name}-")))
                .count();
            let mut per: BTreeMap<String, f64> = BTreeMap::new();
            per.insert("sqs".into(), (delta("sqs") + pods as f64) / messages as f64);
            per.insert("s3 GET".into(), delta("s3 GET") / messages as f64);
            per.insert("s3 PUT".into(), delta("s3 PUT") / messages as f64);
            let ddb = common::Capacity {
                read: used.read / messages as f64,
                write: used.write / messages as f64,
            };
            let (_, _, _, _, total_per_m) = common::cost_per_million(&per, ddb, 0.05);
            // As delivered: each batch one invocation (its time as measured), the event source
            // mapping's receive and delete once a batch.
            let sends = delta("sqs") + pods as f64;
            let delivered = [
                batches as f64 * 0.20e-6 + busy.as_secs_f64() * 0.512 * 0.000_013_333_4,
                (sends + 2.0 * batches as f64) * 0.40e-6,
                used.read * 0.125e-6 + used.write * 0.625e-6,
                delta("s3 PUT") * 5e-6 + delta("s3 GET") * 0.40e-6,
            ];
            let delivered_total: f64 = delivered.iter().sum();
            // Step Functions Express for the same run: one request, billed by duration at 64 MB.
            let express = 1.0e-6 + 0.064 * took.as_secs_f64() * 0.000_016_67;
            let per_m = |dollars: f64, n: usize| dollars / n.max(1) as f64 * 1e6;
            println!(
                "\n== a map of {width} raw containers, a pod each, through the test cluster ({how})\n\
                 {} in {:.1} s: {pods} pods, {messages} messages in {batches} batches, {} commits; \
                 DynamoDB {:.1} read and {:.1} write units, {:.0} requests, S3 {:.0} GET and {:.0} PUT, \
                 SQS {sends:.0} sends (the pods' end signals included)\n\
                 cost as delivered ({batches} invocations, {:.1} s handling): Lambda ${:.2} SQS ${:.2} \
                 DynamoDB ${:.2} S3 ${:.2} per million pods = ${:.2} (${:.2} per million transitions); \
                 upper bound (each message its own invocation of 50 ms): ${:.2} per million pods\n\
                 Step Functions Standard: at least $25.00 per million pods (a state transition each); \
                 Express: ${:.2} per million pods (one request, {:.1} s at 64 MB)",
                item.phase,
                took.as_secs_f64(),
                item.version,
                used.read,
                used.write,
                delta("dynamodb"),
                delta("s3 GET"),
                delta("s3 PUT"),
                busy.as_secs_f64(),
                per_m(delivered[0], pods),
                per_m(delivered[1], pods),
                per_m(delivered[2], pods),
                per_m(delivered[3], pods),
                per_m(delivered_total, pods),
                per_m(delivered_total, messages),
                total_per_m * messages as f64 / pods.max(1) as f64,
                per_m(express, pods),
                took.as_secs_f64(),
            );
            common::print_operations(&clients.store, &operations, pods as u64, "pod");
        }
    }

    // Cold start, peak RSS.
    println!("\n== the functions' binaries (bench profile) on a stand-in Runtime API");
    let transition_bin = env!("CARGO_BIN_EXE_transition");
    let mut cold = Vec::new();
    for _ in 0..15 {
        let (ready, _, _) = run_function(
            transition_bin,
            &settings,
            &endpoint,
            "{}".into(),
            false,
            &[],
        );
        cold.push(ms(ready));
    }
    cold.sort_by(f64::total_cmp);
    println!(
        "cold start (process start → first `next`): median {:.1} ms, p99 {:.1} ms",
        percentile(&cold, 0.5),
        percentile(&cold, 0.99)
    );
    let launch_event = serde_json::json!({
        "name": "rss",
        "workflow": "fixtures.branches.branch_wf",
        "inputs": {"x": 1},
    })
    .to_string();
    let cluster_env = [
        (
            "UPDRAFT_EKS",
            serde_json::json!({"namespace": "flyte"}).to_string(),
        ),
        ("KUBECONFIG", work.join("kubeconfig").display().to_string()),
    ];
    let (_, r, rss) = run_function(
        env!("CARGO_BIN_EXE_launch"),
        &settings,
        &endpoint,
        launch_event,
        true,
        &cluster_env,
    );
    println!(
        "launch:     peak RSS {:>6} KiB  → {}",
        rss,
        r.unwrap_or_default()
    );
    // The start message the launch just sent, as an SQS batch.
    let got = sqs
        .receive_message()
        .queue_url(&settings.transitions_url)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let m = got.messages.unwrap_or_default().into_iter().next().unwrap();
    let batch = serde_json::json!({"Records": [{
        "messageId": m.message_id.clone().unwrap_or_default(),
        "receiptHandle": m.receipt_handle.clone().unwrap_or_default(),
        "body": m.body.clone().unwrap_or_default(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:bench",
        "awsRegion": "us-east-1",
    }]})
    .to_string();
    let (_, r, rss) = run_function(
        transition_bin,
        &settings,
        &endpoint,
        batch,
        true,
        &cluster_env,
    );
    println!(
        "transition: peak RSS {:>6} KiB  → {}",
        rss,
        r.unwrap_or_default()
    );
    let event = serde_json::json!({"Records": [{
        "messageId": "e1",
        "body": serde_json::json!({
            "source": "aws.batch",
            "detail-type": "Batch Job State Change",
            "detail": {"jobId": "no-such-job", "status": "SUCCEEDED"},
        }).to_string(),
    }]})
    .to_string();
    let (_, r, rss) = run_function(
        env!("CARGO_BIN_EXE_events"),
        &settings,
        &endpoint,
        event,
        true,
        &[],
    );
    println!(
        "events:     peak RSS {:>6} KiB  → {}",
        rss,
        r.unwrap_or_default()
    );

    println!("\n== bootstrap zips (scripts/bundle)");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let mut any = false;
    for arch in ["arm64", "x86_64"] {
        for f in ["launch", "transition", "events"] {
            let p = target.join("lambda").join(arch).join(format!("{f}.zip"));
            if let Ok(m) = std::fs::metadata(&p) {
                any = true;
                println!(
                    "{arch:<7} {f:<11} {:>5.1} MiB",
                    m.len() as f64 / (1024.0 * 1024.0)
                );
            }
        }
    }
    if !any {
        println!("(none yet: run scripts/bundle arm64 or x86_64)");
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&work);
}
