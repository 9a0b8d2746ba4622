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

/// What a run's AWS requests cost in all, by service, from the proxy's traffic by operation
/// (`updraft_test_faults::FaultProxy::traffic`), the Lambda invocations (`batches`, each handling one
/// batch of messages) and their total duration in seconds. Capacity units are estimated from bytes:
/// DynamoDB reads (strongly consistent `getitem`, `query`) one unit per 4 KB of answer, writes one per
/// KB of request (two in a transaction), each request rounded up by half a unit; SQS one request per
/// 64 KB, plus the event source mapping's receive and delete per batch. Prices as
/// [`cost_per_million`]'s. Returns (Lambda, SQS, DynamoDB, S3, total) in dollars.
pub fn cost_of_traffic(
    traffic: &BTreeMap<String, updraft_test_faults::Traffic>,
    batches: u64,
    lambda_seconds: f64,
) -> (f64, f64, f64, f64, f64) {
    let mut ddb_read = 0.0;
    let mut ddb_write = 0.0;
    let mut sqs = 2.0 * batches as f64;
    let mut s3 = 0.0;
    for (op, t) in traffic {
        let (requests, sent, received) = (t.requests as f64, t.sent as f64, t.received as f64);
        match op.as_str() {
            "dynamodb getitem" | "dynamodb query" | "dynamodb scan" => {
                ddb_read += received / 4096.0 + requests * 0.5;
            }
            "dynamodb transactwriteitems" => ddb_write += 2.0 * (sent / 1024.0 + requests * 0.5),
            o if o.starts_with("dynamodb ") => ddb_write += sent / 1024.0 + requests * 0.5,
            o if o.starts_with("sqs ") => sqs += requests.max(sent / 65536.0),
            "s3 PUT" => s3 += requests * 5.0e-6,
            "s3 GET" => s3 += requests * 0.4e-6,
            _ => {}
        }
    }
    let lambda = batches as f64 * 0.20e-6 + lambda_seconds * 0.512 * 0.000_013_333_4;
    let sqs = sqs * 0.40e-6;
    let ddb = ddb_read * 0.125e-6 + ddb_write * 0.625e-6;
    (lambda, sqs, ddb, s3, lambda + sqs + ddb + s3)
}

/// Cost per million transitions by service, from requests per transition (`per`: `dynamodb`, `sqs`,
/// `s3 GET`, `s3 PUT`) and a transition's median duration in seconds.
///
/// Prices (us-east-1, on demand): Lambda $0.20 per million requests plus $0.0000133334 per GB-s on
/// arm64 (512 MB); SQS $0.40 per million requests (64 KB chunks), plus the event source mapping's
/// receive and delete (counted as one each per transition: an upper bound, it batches up to 10);
/// DynamoDB $0.625 per million write units and $0.125 per million read units (a transactional write
/// is 2 units; each call counted as 2 write units, an upper bound for items under 1 KB); S3 $5 per
/// million PUTs and $0.40 per million GETs. Returns (Lambda, SQS, DynamoDB, S3, total).
pub fn cost_per_million(per: &BTreeMap<String, f64>, median_s: f64) -> (f64, f64, f64, f64, f64) {
    let get = |k: &str| per.get(k).copied().unwrap_or(0.0);
    let lambda = 0.20 + 0.512 * median_s.max(0.001) * 13.3334;
    let sqs = (get("sqs") + 2.0) * 0.40;
    let ddb = get("dynamodb") * 2.0 * 0.625;
    let s3 = get("s3 PUT") * 5.0 + get("s3 GET") * 0.40;
    (lambda, sqs, ddb, s3, lambda + sqs + ddb + s3)
}
