//! Events-queue bodies: EventBridge events (the state changes of SageMaker, AWS Batch, EMR Serverless
//! and Athena jobs), and the state a change reports. Which job an event is about is its connector's
//! to say (`updraft_connectors::job_of`).

use serde_json::Value;

use crate::WireError;

/// The EventBridge event in events-queue message `message_id`'s body: JSON with a `source` and a
/// `detail`.
pub fn event_of(body: &str, message_id: &str) -> Result<Value, WireError> {
    let event: Value = serde_json::from_str(body)
        .map_err(|e| WireError(format!("events message {message_id}: not JSON: {e}")))?;
    if event.get("detail").is_none() || event.get("source").is_none() {
        return Err(WireError(format!(
            "events message {message_id}: not an EventBridge event (no source or detail)"
        )));
    }
    Ok(event)
}

/// The state a job state change reports (`status`, `currentState`, `state`, or a `…Status` field of
/// its detail other than a secondary status); empty when it names none.
pub fn state_of(event: &Value) -> String {
    let d = &event["detail"];
    ["status", "currentState", "state"]
        .iter()
        .map(|k| &d[*k])
        .chain(
            d.as_object()
                .into_iter()
                .flat_map(|m| m.iter())
                .filter(|(k, _)| k.ends_with("Status") && !k.starts_with("Secondary"))
                .map(|(_, v)| v),
        )
        .find_map(|v| v.as_str().filter(|s| !s.is_empty()))
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_need_a_source_and_a_detail_and_report_their_state() {
        let e = event_of(
            r#"{"source": "aws.batch", "detail": {"jobId": "j", "status": "RUNNING"}}"#,
            "m",
        )
        .unwrap();
        assert_eq!(state_of(&e), "RUNNING");
        let tuning = event_of(
            r#"{"source": "aws.sagemaker", "detail": {"SecondaryStatus": "x", "HyperParameterTuningJobStatus": "Completed"}}"#,
            "m",
        )
        .unwrap();
        assert_eq!(state_of(&tuning), "Completed");
        assert!(
            event_of("{}", "m")
                .unwrap_err()
                .0
                .contains("no source or detail")
        );
        assert!(event_of("nope", "m").unwrap_err().0.contains("not JSON"));
    }
}
