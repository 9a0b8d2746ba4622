//! The events Lambda function: job state changes (EventBridge → the events queue) become immediate
//! checks of the task attempts that wait on those jobs.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use updraft_functions::{Settings, events, logs};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    logs::init();
    let settings = Settings::load().await?;
    let clients = settings.clients().await;
    let clients = &clients;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let mut failures = Vec::new();
        let records = event.payload["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for r in records {
            let id = r["messageId"].as_str().unwrap_or_default().to_string();
            let body = r["body"].as_str().unwrap_or_default();
            if let Err(e) = events::handle(clients, body, &id).await {
                tracing::error!(message_id = %id, error = %e, "event failed");
                failures.push(json!({ "itemIdentifier": id }));
            }
        }
        Ok::<Value, lambda_runtime::Error>(json!({ "batchItemFailures": failures }))
    }))
    .await
}
