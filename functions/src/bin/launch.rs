//! The launch Lambda function: execution requests from the launch queue (S3 event notifications of
//! objects dropped under `requests/`, or requests sent as messages) or from a direct invocation.
//! Messages from the launch dead-letter queue (`UPDRAFT_DEAD_LETTER_ARN`) end the requests they hold
//! (`launch_dead_letter`).

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use updraft_functions::launch::{
    Packages, Request, Source, launch_dead_letter, launch_from, requests_in,
};
use updraft_functions::{Error, Settings, logs};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    logs::init();
    let settings = Settings::load().await?;
    let clients = settings.clients().await;
    let packages = Packages::default();
    let (settings, clients, packages) = (&settings, &clients, &packages);
    let dead_letters = std::env::var("UPDRAFT_DEAD_LETTER_ARN").unwrap_or_default();
    let dead_letters = dead_letters.as_str();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let payload = event.payload;
        let Some(records) = payload
            .get("Records")
            .and_then(Value::as_array)
            .filter(|r| {
                r.first()
                    .and_then(|r| r.get("eventSource"))
                    .and_then(Value::as_str)
                    == Some("aws:sqs")
            })
        else {
            // A direct invocation: the request itself; the answer names the execution.
            let req: Request = serde_json::from_value(payload)
                .map_err(|e| Error::Invalid(format!("request: {e}")))?;
            let source = Source::Message {
                id: event.context.request_id.clone(),
            };
            let name = launch_from(settings, clients, packages, &source, Some(req)).await?;
            return Ok::<Value, lambda_runtime::Error>(json!({ "execution": name }));
        };
        let mut failures = Vec::new();
        for r in records {
            let id = r["messageId"].as_str().unwrap_or_default().to_string();
            let body = r["body"].as_str().unwrap_or_default();
            if !dead_letters.is_empty() && r["eventSourceARN"].as_str() == Some(dead_letters) {
                if let Err(e) = launch_dead_letter(clients, &id, body, settings.max_receives).await
                {
                    tracing::error!(message_id = %id, error = %e, "a launch dead letter could not be handled; it comes back");
                    failures.push(json!({ "itemIdentifier": id }));
                }
                continue;
            }
            let result = match requests_in(body, &id) {
                Ok(found) => {
                    let mut result = Ok(());
                    for (source, req) in found {
                        if let Err(e) = launch_from(settings, clients, packages, &source, req).await
                        {
                            result = Err(e);
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!(message_id = %id, error = %e, "launch failed");
                failures.push(json!({ "itemIdentifier": id }));
            }
        }
        Ok(json!({ "batchItemFailures": failures }))
    }))
    .await
}
