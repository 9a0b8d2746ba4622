//! What a native attempt's objects say about it: pod phases and container states, Kubeflow job
//! conditions, Spark application states — mapped to pending, running, succeeded, or a failure with its
//! kind (user or system) and whether a retry can help, as Flyte's Kubernetes plugins map them.
//!
//! Success here means the containers finished well; the task's outputs (or its `error.pb`, or a dynamic
//! task's `futures.pb`) are then read from the output prefix, which has the last word.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde_json::Value;
use updraft_engine::exec::outcome::{OutputFiles, from_output_files};
use updraft_engine::exec::{ErrorKind, TaskStatus};

/// How long a pod may wait on an image pull before the wait is a failure: the default of [`crate::EksConfig::image_pull_grace_seconds`].
pub const IMAGE_PULL_GRACE: Duration = Duration::from_secs(180);

/// The state of an attempt's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Created, not running yet (scheduling, pulling images, starting containers).
    Pending {
        /// Why, when the cluster says.
        reason: String,
    },
    /// Running.
    Running,
    /// Finished well: read the outputs.
    Succeeded,
    /// Failed.
    Failed {
        /// Machine-readable code (`OOMKilled`, `Evicted`, …).
        code: String,
        /// What happened.
        message: String,
        /// User or system.
        kind: ErrorKind,
        /// False when a retry cannot help.
        recoverable: bool,
    },
}

/// A finished attempt's status: what its output files say (they have the last word), else what the
/// cluster observed.
pub fn ended(files: &OutputFiles, observed: Observed) -> TaskStatus {
    from_output_files(files).unwrap_or(match observed {
        Observed::Failed {
            code,
            message,
            kind,
            recoverable,
        } => TaskStatus::Failed {
            code,
            message,
            kind,
            recoverable,
        },
        _ => TaskStatus::Failed {
            code: "NoOutputs".into(),
            message: "the task finished but wrote neither outputs.pb nor error.pb".into(),
            kind: ErrorKind::System,
            recoverable: true,
        },
    })
}

fn failed(code: &str, message: impl Into<String>, kind: ErrorKind, recoverable: bool) -> Observed {
    Observed::Failed {
        code: code.into(),
        message: message.into(),
        kind,
        recoverable,
    }
}

/// The container whose end is the task's end, as the builders annotate it (else the first).
pub fn primary_container(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::pod::ANNOTATION_PRIMARY))
        .cloned()
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
        })
        .unwrap_or_default()
}

/// A pod's state. `primary` names the container whose end is the task's end (other containers of the pod
/// may still run); `pending_for` is how long the pod has been pending: past `grace`, an image that does
/// not pull fails the attempt.
pub fn pod(pod: &Pod, primary: &str, pending_for: Duration, grace: Duration) -> Observed {
    let Some(status) = &pod.status else {
        return Observed::Pending {
            reason: "created".into(),
        };
    };
    let statuses: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    // A waiting container can make the pod's wait a failure, whatever the phase.
    for c in &statuses {
        let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or("");
        let message = w.message.clone().unwrap_or_default();
        let what = format!("container `{}`: {reason}: {message}", c.name);
        match reason {
            "InvalidImageName" | "CreateContainerConfigError" => {
                return failed(reason, what, ErrorKind::User, false);
            }
            "ErrImagePull" | "ImagePullBackOff" if pending_for >= grace => {
                return failed(reason, what, ErrorKind::User, true);
            }
            "CrashLoopBackOff" => return failed(reason, what, ErrorKind::User, true),
            "CreateContainerError" if pending_for >= grace => {
                return failed(reason, what, ErrorKind::System, true);
            }
            _ => {}
        }
    }
    let terminated = |name: &str| {
        statuses
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
    };
    match phase {
        "Succeeded" => Observed::Succeeded,
        "Failed" => {
            let reason = status.reason.as_deref().unwrap_or("");
            let message = status.message.clone().unwrap_or_default();
            match reason {
                // The node went away or needed the room: not the task's fault.
                "Evicted"
                | "Preempting"
                | "Shutdown"
                | "NodeShutdown"
                | "Terminated"
                | "NodeLost"
                | "UnexpectedAdmissionError" => failed(reason, message, ErrorKind::System, true),
                "DeadlineExceeded" => failed(reason, message, ErrorKind::User, true),
                _ => match terminated(primary) {
                    Some(t) => container_end(
                        primary,
                        t.exit_code,
                        t.reason.as_deref(),
                        t.message.as_deref(),
                    ),
                    None => failed(
                        if reason.is_empty() {
                            "PodFailed"
                        } else {
                            reason
                        },
                        message,
                        ErrorKind::System,
                        true,
                    ),
                },
            }
        }
        // The primary container may end while sidecars run on: its end is the task's.
        _ => match terminated(primary) {
            Some(t) if t.exit_code == 0 => Observed::Succeeded,
            Some(t) => container_end(
                primary,
                t.exit_code,
                t.reason.as_deref(),
                t.message.as_deref(),
            ),
            None if phase == "Running" => Observed::Running,
            None => Observed::Pending {
                reason: pending_reason(pod),
            },
        },
    }
}

fn container_end(name: &str, code: i32, reason: Option<&str>, message: Option<&str>) -> Observed {
    match reason {
        Some("OOMKilled") => failed(
            "OOMKilled",
            format!("container `{name}` ran out of memory (exit code {code})"),
            ErrorKind::User,
            true,
        ),
        Some("Completed") | None if code == 0 => Observed::Succeeded,
        _ => failed(
            "ContainerFailed",
            format!(
                "container `{name}` exited with code {code}{}",
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
            // Without error.pb, a task's non-zero exit is not its own doing (the outputs decide first).
            ErrorKind::System,
            true,
        ),
    }
}

fn pending_reason(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let unscheduled = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        return format!(
            "{}: {}",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref().unwrap_or("")
        );
    }
    status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .unwrap_or_else(|| "Pending".into())
}

/// A Kubeflow job's state from its conditions (`status.conditions`: Created, Running, Restarting,
/// Succeeded, Failed; the latest true one counts).
pub fn kubeflow_job(job: &Value) -> Observed {
    let conditions = job["status"]["conditions"].as_array();
    let latest = conditions
        .into_iter()
        .flatten()
        .rfind(|c| c["status"] == "True");
    let Some(c) = latest else {
        return Observed::Pending {
            reason: "created".into(),
        };
    };
    let reason = c["reason"].as_str().unwrap_or("");
    let message = c["message"].as_str().unwrap_or("").to_string();
    match c["type"].as_str().unwrap_or("") {
        "Succeeded" => Observed::Succeeded,
        "Failed" => failed(
            if reason.is_empty() {
                "JobFailed"
            } else {
                reason
            },
            message,
            ErrorKind::User,
            true,
        ),
        "Running" | "Restarting" => Observed::Running,
        _ => Observed::Pending {
            reason: reason.to_string(),
        },
    }
}

/// A Spark application's state (`status.applicationState.state`).
pub fn spark_application(app: &Value) -> Observed {
    let state = &app["status"]["applicationState"];
    let message = state["errorMessage"].as_str().unwrap_or("").to_string();
    match state["state"].as_str().unwrap_or("") {
        "COMPLETED" => Observed::Succeeded,
        "FAILED" => failed("SparkFailed", message, ErrorKind::User, true),
        "SUBMISSION_FAILED" => failed("SparkSubmissionFailed", message, ErrorKind::System, true),
        "RUNNING" | "SUCCEEDING" | "FAILING" | "INVALIDATING" | "UNKNOWN" => Observed::Running,
        other => Observed::Pending {
            reason: if other.is_empty() { "created" } else { other }.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_of(status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "main"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(reason: &str) -> Pod {
        pod_of(json!({"phase": "Pending", "containerStatuses": [{
            "name": "main", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": "m"}}}]}))
    }

    fn ended(phase: &str, code: i32, reason: &str) -> Pod {
        pod_of(json!({"phase": phase, "containerStatuses": [{
            "name": "main", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": code, "reason": reason}}}]}))
    }

    fn kind_of(o: &Observed) -> (&str, ErrorKind, bool) {
        match o {
            Observed::Failed {
                code,
                kind,
                recoverable,
                ..
            } => (code.as_str(), *kind, *recoverable),
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn pending_pods_and_their_failures() {
        let short = Duration::from_secs(10);
        let long = IMAGE_PULL_GRACE;
        assert!(matches!(
            pod(
                &waiting("ContainerCreating"),
                "main",
                long,
                IMAGE_PULL_GRACE
            ),
            Observed::Pending { .. }
        ));
        assert!(matches!(
            pod(
                &waiting("ImagePullBackOff"),
                "main",
                short,
                IMAGE_PULL_GRACE
            ),
            Observed::Pending { .. }
        ));
        assert_eq!(
            kind_of(&pod(
                &waiting("ImagePullBackOff"),
                "main",
                long,
                IMAGE_PULL_GRACE
            )),
            ("ImagePullBackOff", ErrorKind::User, true)
        );
        assert_eq!(
            kind_of(&pod(
                &waiting("InvalidImageName"),
                "main",
                short,
                IMAGE_PULL_GRACE
            )),
            ("InvalidImageName", ErrorKind::User, false)
        );
        assert_eq!(
            kind_of(&pod(
                &waiting("CrashLoopBackOff"),
                "main",
                short,
                IMAGE_PULL_GRACE
            )),
            ("CrashLoopBackOff", ErrorKind::User, true)
        );
        let unschedulable = pod_of(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}]}));
        assert_eq!(
            pod(&unschedulable, "main", long, IMAGE_PULL_GRACE),
            Observed::Pending {
                reason: "Unschedulable: 0/3 nodes".into()
            }
        );
    }

    #[test]
    fn ended_pods() {
        let d = Duration::ZERO;
        assert_eq!(
            pod(
                &ended("Succeeded", 0, "Completed"),
                "main",
                d,
                IMAGE_PULL_GRACE
            ),
            Observed::Succeeded
        );
        assert_eq!(
            kind_of(&pod(
                &ended("Failed", 137, "OOMKilled"),
                "main",
                d,
                IMAGE_PULL_GRACE
            )),
            ("OOMKilled", ErrorKind::User, true)
        );
        assert_eq!(
            kind_of(&pod(
                &ended("Failed", 3, "Error"),
                "main",
                d,
                IMAGE_PULL_GRACE
            )),
            ("ContainerFailed", ErrorKind::System, true)
        );
        let evicted =
            pod_of(json!({"phase": "Failed", "reason": "Evicted", "message": "low memory"}));
        assert_eq!(
            kind_of(&pod(&evicted, "main", d, IMAGE_PULL_GRACE)),
            ("Evicted", ErrorKind::System, true)
        );
        let deadline = pod_of(json!({"phase": "Failed", "reason": "DeadlineExceeded"}));
        assert_eq!(
            kind_of(&pod(&deadline, "main", d, IMAGE_PULL_GRACE)),
            ("DeadlineExceeded", ErrorKind::User, true)
        );
        // The primary container ended while a sidecar runs on: the task is over.
        let sidecar = pod_of(json!({"phase": "Running", "containerStatuses": [
            {"name": "main", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "side", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"running": {}}}]}));
        assert_eq!(
            pod(&sidecar, "main", d, IMAGE_PULL_GRACE),
            Observed::Succeeded
        );
        assert_eq!(
            pod(&sidecar, "side", d, IMAGE_PULL_GRACE),
            Observed::Running
        );
    }

    #[test]
    fn kubeflow_conditions_and_spark_states() {
        let job = |conds: Value| json!({"status": {"conditions": conds}});
        assert!(matches!(kubeflow_job(&json!({})), Observed::Pending { .. }));
        assert_eq!(
            kubeflow_job(&job(json!([
                {"type": "Created", "status": "True"},
                {"type": "Running", "status": "True"}]))),
            Observed::Running
        );
        assert_eq!(
            kubeflow_job(&job(json!([
                {"type": "Running", "status": "False"},
                {"type": "Succeeded", "status": "True"}]))),
            Observed::Succeeded
        );
        assert_eq!(
            kind_of(&kubeflow_job(&job(json!([
                {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed", "message": "worker 1 failed"}])))),
            ("PyTorchJobFailed", ErrorKind::User, true)
        );
        let app =
            |s: &str| json!({"status": {"applicationState": {"state": s, "errorMessage": "boom"}}});
        assert!(matches!(
            spark_application(&app("SUBMITTED")),
            Observed::Pending { .. }
        ));
        assert_eq!(spark_application(&app("RUNNING")), Observed::Running);
        assert_eq!(spark_application(&app("COMPLETED")), Observed::Succeeded);
        assert_eq!(
            kind_of(&spark_application(&app("FAILED"))),
            ("SparkFailed", ErrorKind::User, true)
        );
        assert_eq!(
            kind_of(&spark_application(&app("SUBMISSION_FAILED"))),
            ("SparkSubmissionFailed", ErrorKind::System, true)
        );
    }
}
