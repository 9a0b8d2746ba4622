//! The serverless runtime at scale, against LocalStack (prints figures; asserts nothing about speed).
//!
//! ```sh
//! bash localstack/up && UPDRAFT_TEST_LOCALSTACK=http://127.0.0.1:4566 \
//!   cargo bench -p updraft-functions --bench scale
//! ```
//!
//! Each case launches one execution and drives the transitions queue with the transition logic
//! in-process (batches of up to 10 messages, as the event source mapping delivers them) until it
//! ends, every AWS request through a counting proxy:
//!
//! - `fanout10k`: 10,000 echo nodes at once;
//! - `map100k`: an echo task mapped over a 100,000-element list (its inputs, 600 KB, in the bucket).
//!
//! Echo tasks run inside the engine, so the figures are the runtime's own: transitions, time,
//! requests per transition and what they cost, with `MaxStartsPerTransition` (default 100;
//! `UPDRAFT_BENCH_MAX_STARTS` to change) bounding each transition's starts. `UPDRAFT_BENCH_CASES`
//! picks cases (comma-separated).

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use updraft_functions::launch::{Packages, Request, launch};
use updraft_functions::transition::{Transition, is_final};
use updraft_test_faults::{FaultProxy, Faults};

mod common;
use common::{Capacity, cost_of_traffic, env, ms, percentile, resources, sdk};

fn fanout_yaml(width: usize) -> String {
    let mut y = String::from(
        "version: 1\nimage: ghcr.io/updraft-run/fixtures:1\ntasks:\n  echo: {type: echo, inputs: {x: int}, outputs: {x: int}}\nworkflows:\n  fanout:\n    inputs: {x: int}\n    outputs: {o: \"${e0.x}\"}\n    nodes:\n",
    );
    for i in 0..width {
        y.push_str(&format!(
            "      - {{id: e{i}, task: echo, inputs: {{x: \"${{inputs.x}}\"}}}}\n"
        ));
    }
    y
}

const MAP_YAML: &str = "version: 1
image: ghcr.io/updraft-run/fixtures:1
tasks:
  echo: {type: echo, inputs: {x: int}, outputs: {x: int}}
workflows:
  map:
    inputs: {xs: \"list[int]\"}
    outputs: {ys: \"${m.x}\"}
    nodes:
      - {id: m, map: {task: echo}, inputs: {x: \"${inputs.xs}\"}}
";

struct Case {
    name: &'static str,
    /// Task attempts it runs (nodes or elements).
    units: u64,
    yaml: String,
    workflow: &'static str,
    inputs: serde_json::Value,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let localstack = env("UPDRAFT_TEST_LOCALSTACK");
    let max_starts: u32 = std::env::var("UPDRAFT_BENCH_MAX_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let wanted: Option<Vec<String>> = std::env::var("UPDRAFT_BENCH_CASES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let cases = [
        Case {
            name: "fanout10k",
            units: 10_000,
            yaml: fanout_yaml(10_000),
            workflow: "fanout",
            inputs: serde_json::json!({"x": 7}),
        },
        Case {
            name: "map100k",
            units: 100_000,
            yaml: MAP_YAML.into(),
            workflow: "map",
            inputs: serde_json::json!({"xs": (0..100_000).collect::<Vec<i64>>()}),
        },
    ];
    println!("MaxStartsPerTransition {max_starts}");
    for case in cases {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.iter().any(|c| c == case.name))
        {
            continue;
        }
        run(&localstack, &case, max_starts).await;
    }
}

async fn run(localstack: &str, case: &Case, max_starts: u32) {
    let direct = sdk(localstack).await;
    let id = format!(
        "scale-{}-{}-{}",
        case.name,
        std::process::id(),
        updraft_functions::now_ms() % 100_000
    );
    let mut settings = resources(&direct, &id).await;
    settings.max_starts = max_starts;
    settings.lease = Duration::from_secs(120);
    // The transition's requests go through a counting proxy; the bench's own do not.
    let proxy = FaultProxy::start(localstack, Faults::default()).unwrap();
    let counted = settings.clients_with(sdk(&proxy.url).await);
    let clients = settings.clients_with(direct.clone());
    let key = format!("packages/{}.yaml", case.name);
    clients
        .blobs
        .put(&clients.blobs.uri(&key), case.yaml.clone().into_bytes())
        .await
        .unwrap();
    let pkg = updraft_functions::launch::decode_package(&key, case.yaml.as_bytes()).unwrap();
    let compiled = updraft_engine::compile(&pkg).unwrap();
    for name in compiled.workflows.keys() {
        clients.store.register(name, &key, 0).await.unwrap();
    }
    let t = Transition::with_cluster(settings.clone(), counted.clone(), None);
    let req: Request = serde_json::from_value(serde_json::json!({
        "name": case.name,
        "workflow": case.workflow,
        "inputs": case.inputs,
    }))
    .unwrap();
    let started = Instant::now();
    launch(&settings, &clients, &Packages::default(), &req, "")
        .await
        .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&direct);
    let before = proxy.traffic();
    let capacity = Capacity::of(&counted.store);
    let mut handled = 0u64;
    let mut transitions = Vec::new();
    let limit = Instant::now() + Duration::from_secs(3600);
    loop {
        let item = clients.store.execution(case.name).await.unwrap().unwrap();
        if is_final(&item.phase) {
            assert_eq!(item.phase, "SUCCEEDED", "{}: {:?}", case.name, item.error);
            break;
        }
        assert!(Instant::now() < limit, "{} did not finish", case.name);
        let msgs = common::receive(&sqs, &settings.transitions_url).await;
        if msgs.is_empty() {
            continue;
        }
        handled += msgs.len() as u64;
        let (_, took) = common::hand(&t, &sqs, &settings.transitions_url, &msgs).await;
        transitions.push(ms(took));
    }
    let took = started.elapsed();
    let item = clients.store.execution(case.name).await.unwrap().unwrap();
    let traffic: BTreeMap<String, updraft_test_faults::Traffic> = proxy
        .traffic()
        .into_iter()
        .map(|(op, t)| {
            let b = before.get(&op).copied().unwrap_or_default();
            (
                op,
                updraft_test_faults::Traffic {
                    requests: t.requests - b.requests,
                    sent: t.sent - b.sent,
                    received: t.received - b.received,
                },
            )
        })
        .collect();
    transitions.sort_by(f64::total_cmp);
    let batches = transitions.len() as u64;
    let lambda_seconds = transitions.iter().sum::<f64>() / 1000.0;
    let used = Capacity::of(&counted.store).since(capacity);
    let (lambda, sqs_cost, ddb, s3, total) =
        cost_of_traffic(&traffic, used, 0, batches, lambda_seconds);
    println!(
        "\n== {}: SUCCEEDED in {:.1} s; {} messages in {} batches, {} commits",
        case.name,
        took.as_secs_f64(),
        handled,
        batches,
        item.version
    );
    println!(
        "batch handling: median {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&transitions, 0.5),
        percentile(&transitions, 0.99),
        transitions.last().copied().unwrap_or(0.0)
    );
    let requests: u64 = traffic.values().map(|t| t.requests).sum();
    let line: Vec<String> = traffic
        .iter()
        .map(|(op, t)| {
            format!(
                "{op} {} ({:.1} MB out, {:.1} MB in)",
                t.requests,
                t.sent as f64 / 1e6,
                t.received as f64 / 1e6
            )
        })
        .collect();
    println!("AWS requests ({requests}): {}", line.join("; "));
    println!(
        "DynamoDB capacity consumed: {:.0} read units, {:.0} write units ({:.1} and {:.1} per \
         message)",
        used.read,
        used.write,
        used.read / handled.max(1) as f64,
        used.write / handled.max(1) as f64
    );
    let per_m = |x: f64| x / handled.max(1) as f64 * 1e6;
    println!(
        "cost: this execution ${total:.4} (Lambda ${lambda:.4}, SQS ${sqs_cost:.4}, DynamoDB \
         ${ddb:.4}, S3 ${s3:.4}); per million messages ${:.2}; per million task attempts ${:.3} \
         ({} attempts; Step Functions Standard: $25.00 per million state transitions, at least \
         one a task; Express: $1.00 per million requests plus $0.00001667 per GB-s)",
        per_m(total),
        total / case.units as f64 * 1e6,
        case.units
    );
}
