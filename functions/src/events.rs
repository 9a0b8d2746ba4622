//! Job state changes: EventBridge delivers the state changes of SageMaker, AWS Batch, EMR Serverless and
//! Athena jobs to the events queue; each names a job, and when a task attempt waits on that job (a
//! `watch#` item its connector wrote when it started the job), its check message is sent at once instead
//! of waiting for the next scheduled check.
//!
//! A check is idempotent (it reads the job's state and changes nothing when the attempt has moved on),
//! so duplicate, late and reordered state changes are harmless; scheduled checks go on regardless, so
//! a lost event only delays a task.

use std::time::Duration;

use serde_json::Value;
use updraft_proto::Message;
use updraft_proto::updraft::QueueMessage;

use crate::{Clients, Error};

/// The job a state-change event is about, as `<service>:<id>` (the key a connector watches), and the
/// state it reports. `None` for events of other kinds.
pub fn job_of(event: &Value) -> Option<(String, String)> {
    let d = &event["detail"];
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let source = event["source"].as_str()?;
    let kind = event["detail-type"].as_str().unwrap_or_default();
    match source {
        "aws.sagemaker" => {
            let (field, status, what) = match kind {
                "SageMaker Training Job State Change" => {
                    ("TrainingJobName", "TrainingJobStatus", "training")
                }
                "SageMaker Processing Job State Change" => {
                    ("ProcessingJobName", "ProcessingJobStatus", "processing")
                }
                "SageMaker Transform Job State Change" => {
                    ("TransformJobName", "TransformJobStatus", "transform")
                }
                "SageMaker HyperParameter Tuning Job State Change" => (
                    "HyperParameterTuningJobName",
                    "HyperParameterTuningJobStatus",
                    "tuning",
                ),
                _ => return None,
            };
            Some((
                format!("sagemaker:{what}:{}", text(&d[field])?),
                text(&d[status]).unwrap_or_default(),
            ))
        }
        "aws.batch" => Some((
            format!("batch:{}", text(&d["jobId"])?),
            text(&d["status"]).unwrap_or_default(),
        )),
        "aws.emr-serverless" => Some((
            format!(
                "emr-serverless:{}/{}",
                text(&d["applicationId"])?,
                text(&d["jobRunId"])?
            ),
            text(&d["state"]).unwrap_or_default(),
        )),
        "aws.athena" => Some((
            format!("athena:{}", text(&d["queryExecutionId"])?),
            text(&d["currentState"]).unwrap_or_default(),
        )),
        _ => None,
    }
}

/// Handles one events-queue message (an EventBridge event as JSON): sends the check of the task that
/// waits on the job it names. Returns that job's key when a check was sent. A body that is not an
/// event is an error (the message goes to the dead-letter queue after its retries).
pub async fn handle(
    clients: &Clients,
    body: &str,
    message_id: &str,
) -> Result<Option<String>, Error> {
    let event: Value = serde_json::from_str(body)
        .map_err(|e| Error::Invalid(format!("events message {message_id}: not JSON: {e}")))?;
    if event.get("detail").is_none() || event.get("source").is_none() {
        return Err(Error::Invalid(format!(
            "events message {message_id}: not an EventBridge event (no source or detail)"
        )));
    }
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
