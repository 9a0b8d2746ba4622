//! Job state changes: EventBridge delivers the state changes of SageMaker jobs and endpoints, AWS Batch,
//! EMR Serverless and Athena jobs to the events queue; the connectors name the job each is about
//! (`updraft_connectors::job_of`), and when a task attempt waits on that job (a `watch#` item written
//! when its connector started the job), its check message is sent at once instead of waiting for the
//! next scheduled check.
//!
//! A check is idempotent (it reads the job's state and changes nothing when the attempt has moved on),
//! so duplicate, late and reordered state changes are harmless; scheduled checks go on regardless, so
//! a lost event only delays a task.

use std::time::Duration;

use serde_json::Value;
use updraft_proto::Message;
use updraft_proto::updraft::QueueMessage;

use crate::{Clients, Error};

/// The job a state-change event is about, as the connector that started it names it (the key of its
/// `watch#` item; `updraft_connectors::job_of`), and the state it reports (for the log). `None` for
/// events of jobs no connector makes.
pub fn job_of(event: &Value) -> Option<(String, String)> {
    let job = updraft_connectors::job_of(event)?;
    Some((job.0, updraft_wire::events::state_of(event)))
}

/// Handles one events-queue message (an EventBridge event as JSON): sends the check of the task that
/// waits on the job it names. Returns that job's key when a check was sent. A body that is not an
/// event is an error (the message goes to the dead-letter queue after its retries).
pub async fn handle(
    clients: &Clients,
    body: &str,
    message_id: &str,
) -> Result<Option<String>, Error> {
    let event =
        updraft_wire::events::event_of(body, message_id).map_err(|e| Error::Invalid(e.0))?;
    let Some((job, state)) = job_of(&event) else {
        tracing::debug!(message_id, "an event about no job");
        return Ok(None);
    };
    let Some(bytes) = clients.store.watcher(&job).await? else {
        tracing::debug!(job = %job, state = %state, "no task waits on this job");
        return Ok(None);
    };
    let check = QueueMessage::decode(bytes.as_slice())
        .map_err(|e| Error::Invalid(format!("watch {job}: a bad check message: {e}")))?;
    clients.queue.send(&check, Duration::ZERO).await?;
    tracing::info!(job = %job, state = %state, execution = %check.execution, "check sent");
    Ok(Some(job))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_name_the_job_their_connector_watches() {
        let batch = json!({"source": "aws.batch", "detail-type": "Batch Job State Change",
            "detail": {"jobId": "j-1", "status": "RUNNING"}});
        assert_eq!(job_of(&batch), Some(("batch:j-1".into(), "RUNNING".into())));
        let endpoint = json!({"source": "aws.sagemaker", "detail-type": "SageMaker Endpoint State Change",
            "detail": {"EndpointName": "xgb", "EndpointStatus": "InService"}});
        assert_eq!(
            job_of(&endpoint),
            Some(("sagemaker:endpoint:xgb".into(), "InService".into()))
        );
        let training = json!({"source": "aws.sagemaker", "detail-type": "SageMaker Training Job State Change",
            "detail": {"TrainingJobName": "t", "SecondaryStatus": "Training", "TrainingJobStatus": "InProgress"}});
        assert_eq!(
            job_of(&training),
            Some(("sagemaker:training:t".into(), "InProgress".into()))
        );
        let other = json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "detail": {"state": "running"}});
        assert_eq!(job_of(&other), None);
    }
}
