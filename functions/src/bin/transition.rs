//! The transition Lambda function: SQS batches of transitions-queue messages drive the engine; failed
//! messages are reported one by one (`ReportBatchItemFailures`).

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use updraft_functions::transition::{Received, Transition};
use updraft_functions::{Settings, logs};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    logs::init();
    let settings = Settings::load().await?;
    let clients = settings.clients().await;
    let transition = Transition::new(settings, clients).await?;
    let transition = &transition;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let batch = records(&event.payload);
        let failures = transition.handle(batch).await;
        Ok::<Value, lambda_runtime::Error>(json!({
            "batchItemFailures": failures
                .iter()
                .map(|id| json!({ "itemIdentifier": id }))
                .collect::<Vec<_>>()
        }))
    }))
    .await
}

/// The SQS records of an event.
fn records(event: &Value) -> Vec<Received> {
    event["Records"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| Received {
                    id: r["messageId"].as_str().unwrap_or_default().to_string(),
                    body: r["body"].as_str().unwrap_or_default().to_string(),
                    receive_count: r["attributes"]["ApproximateReceiveCount"]
                        .as_str()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1),
                })
                .collect()
        })
        .unwrap_or_default()
}
