//! What the serverless benchmarks share: the SDK against LocalStack, a deployment's resources made
//! for one run, percentiles and the cost model.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use updraft_functions::Settings;

/// An environment variable the benchmark needs.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: see the top of the benchmark's file (functions/benches/)")
    })
}

/// The SDK's configuration for `endpoint`, with LocalStack's test credentials.
pub async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(updraft_aws::timeouts())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await
}

/// A table, a bucket and a transitions queue named `id`, and the functions' settings for them.
pub async fn resources(sdk: &aws_config::SdkConfig, id: &str) -> Settings {
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    aws_sdk_dynamodb::Client::new(sdk)
        .create_table()
        .table_name(id)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    updraft_aws::s3_client(sdk)
        .create_bucket()
        .bucket(id)
        .send()
        .await
        .unwrap();
    let url = aws_sdk_sqs::Client::new(sdk)
        .create_queue()
        .queue_name(id)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    Settings {
        table: id.into(),
        bucket: id.into(),
        transitions_url: url,
        eks: None,
        services: Default::default(),
        max_check_delay: Duration::from_secs(1),
        lease: Duration::from_secs(30),
        max_receives: 5,
        max_starts: 100,
        fault: None,
    }
}

/// The `p` quantile (0–1) of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// DynamoDB capacity consumed, in units, as the service reported it (`Store::consumed`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Capacity {
    /// Read units.
    pub read: f64,
    /// Write units.
    pub write: f64,
}

impl Capacity {
    /// What `store` has consumed so far.
    pub fn of(store: &updraft_functions::store::Store) -> Self {
        let c = store.consumed();
        Self {
            read: c.read_units(),
            write: c.write_units(),
        }
    }

    /// What was consumed since `before`.
    pub fn since(self, before: Capacity) -> Capacity {
        Capacity {
            read: self.read - before.read,
            write: self.write - before.write,
        }
    }
}

/// DynamoDB requests and capacity units by operation so far (`Consumed::by_operation`).
pub type Operations = Vec<(&'static str, u64, f64)>;

/// Prints what DynamoDB operations `store` made since `before` (its `by_operation` then), per one of
/// `per` (`what` names it): requests and units.
pub fn print_operations(
    store: &updraft_functions::store::Store,
    before: &Operations,
    per: u64,
    what: &str,
) {
    let per = per.max(1) as f64;
    let parts: Vec<String> = store
        .consumed()
        .by_operation()
        .into_iter()
        .filter_map(|(op, n, units)| {
            let (n0, u0) = before
                .iter()
                .find(|b| b.0 == op)
                .map_or((0, 0.0), |b| (b.1, b.2));
            (n > n0).then(|| {
                format!(
                    "{op} {:.2} ({:.2} units)",
                    (n - n0) as f64 / per,
                    (units - u0) / per
                )
            })
        })
        .collect();
    println!("DynamoDB per {what}: {}", parts.join(", "));
}

/// What a run's AWS requests cost in all, by service: DynamoDB from the capacity its requests
/// consumed (`ddb`, as DynamoDB reported it), SQS and S3 from the proxy's traffic by operation
/// (`updraft_test_faults::FaultProxy::traffic`; SQS one request per 64 KB) plus `other_sqs` requests
/// made elsewhere (the pods' end signals) and the event source mapping's receive and delete per batch,
/// Lambda from the invocations (`batches`, each handling one batch of messages) and their total
/// duration in seconds. Prices as [`cost_per_million`]'s. Returns (Lambda, SQS, DynamoDB, S3, total) in
/// dollars.
pub fn cost_of_traffic(
    traffic: &BTreeMap<String, updraft_test_faults::Traffic>,
    ddb: Capacity,
    other_sqs: u64,
    batches: u64,
    lambda_seconds: f64,
) -> (f64, f64, f64, f64, f64) {
    let mut sqs = 2.0 * batches as f64 + other_sqs as f64;
    let mut s3 = 0.0;
    for (op, t) in traffic {
        let (requests, sent) = (t.requests as f64, t.sent as f64);
        match op.as_str() {
            o if o.starts_with("sqs ") => sqs += requests.max(sent / 65536.0),
            "s3 PUT" => s3 += requests * 5.0e-6,
            "s3 GET" => s3 += requests * 0.4e-6,
            _ => {}
        }
    }
    let lambda = batches as f64 * 0.20e-6 + lambda_seconds * 0.512 * 0.000_013_333_4;
    let sqs = sqs * 0.40e-6;
    let ddb = ddb.read * 0.125e-6 + ddb.write * 0.625e-6;
    (lambda, sqs, ddb, s3, lambda + sqs + ddb + s3)
}

/// Cost per million transitions by service, from requests per transition (`per`: `sqs`, `s3 GET`,
/// `s3 PUT`), DynamoDB capacity units per transition (`ddb`) and a transition's median duration in
/// seconds.
///
/// Prices (us-east-1, on demand): Lambda $0.20 per million requests plus $0.0000133334 per GB-s on
/// arm64 (512 MB), each transition its own invocation (an upper bound: the event source mapping
/// hands a function up to 10 messages at once); SQS $0.40 per million requests, plus the event source
/// mapping's receive and delete (counted as one each per transition: an upper bound, it batches up to
/// 10); DynamoDB $0.625 per million write units and $0.125 per million read units, as DynamoDB
/// reported them consumed; S3 $5 per million PUTs and $0.40 per million GETs. Returns (Lambda, SQS,
/// DynamoDB, S3, total).
pub fn cost_per_million(
    per: &BTreeMap<String, f64>,
    ddb: Capacity,
    median_s: f64,
) -> (f64, f64, f64, f64, f64) {
    let get = |k: &str| per.get(k).copied().unwrap_or(0.0);
    let lambda = 0.20 + 0.512 * median_s.max(0.001) * 13.3334;
    let sqs = (get("sqs") + 2.0) * 0.40;
    let ddb = ddb.read * 0.125 + ddb.write * 0.625;
    let s3 = get("s3 PUT") * 5.0 + get("s3 GET") * 0.40;
    (lambda, sqs, ddb, s3, lambda + sqs + ddb + s3)
}

/// Up to 10 messages from the queue at `url` (waiting a second at most), as the event source mapping
/// receives them.
pub async fn receive(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

/// How the transitions queue's event source mapping gathers a batch: up to `size` messages, waiting
/// up to `window` after the first (the stack's `TransitionBatchWindowSeconds`; zero: one receive of
/// up to 10).
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most messages a batch.
    pub size: usize,
    /// How long a batch is gathered after its first message.
    pub window: std::time::Duration,
}

impl Batching {
    /// As deployed by default: at once, up to 10.
    pub const AT_ONCE: Batching = Batching {
        size: 10,
        window: std::time::Duration::ZERO,
    };

    /// A batching window of `seconds` (1 to 5), up to 100 messages a batch, as the stack deploys it.
    pub fn window(seconds: u64) -> Batching {
        Batching {
            size: 100,
            window: std::time::Duration::from_secs(seconds),
        }
    }
}

/// A batch from the queue at `url` as the event source mapping gathers it with `b`: empty when no
/// message came within a second.
pub async fn receive_batch(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    b: Batching,
) -> Vec<aws_sdk_sqs::types::Message> {
    let mut batch = receive(sqs, url).await;
    if batch.is_empty() || b.window.is_zero() {
        return batch;
    }
    let until = std::time::Instant::now() + b.window;
    while batch.len() < b.size && std::time::Instant::now() < until {
        let more = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages((b.size - batch.len()).min(10) as i32)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if more.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        batch.extend(more);
    }
    batch
}

/// Hands `msgs` to `t` as one batch (each a first delivery) and deletes those it handled, as the
/// event source mapping does; returns how many failed and how long `t` took.
pub async fn hand(
    t: &updraft_functions::transition::Transition,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    msgs: &[aws_sdk_sqs::types::Message],
) -> (usize, Duration) {
    let batch = msgs
        .iter()
        .map(|m| updraft_functions::transition::Received {
            id: m.message_id.clone().unwrap_or_default(),
            body: m.body.clone().unwrap_or_default(),
            receive_count: 1,
            dead_letter: false,
        })
        .collect();
    let at = std::time::Instant::now();
    let failed = t.handle(batch).await;
    let took = at.elapsed();
    for m in msgs {
        if !failed.contains(m.message_id.as_ref().unwrap()) {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    (failed.len(), took)
}
