//! The transition Lambda function: SQS batches of transitions-queue messages drive the engine; failed
//! messages are reported one by one (`ReportBatchItemFailures`). Batches from the dead-letter queue
//! (`UPDRAFT_DEAD_LETTER_ARN`) fail their executions (`Transition::dead_letter`).

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
    let dead_letters = std::env::var("UPDRAFT_DEAD_LETTER_ARN").unwrap_or_default();
    let dead_letters = dead_letters.as_str();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let batch = records(&event.payload, dead_letters);
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

/// The SQS records of an event; those from queue `dead_letters` (an ARN) are dead letters.
fn records(event: &Value, dead_letters: &str) -> Vec<Received> {
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
                    dead_letter: !dead_letters.is_empty()
                        && r["eventSourceARN"].as_str() == Some(dead_letters),
                })
                .collect()
        })
        .unwrap_or_default()
}
