//! A task's outcome from the files it leaves at its output prefix (flytekit's contract): `outputs.pb`
//! (success), `error.pb` (a failure, with its kind and whether it is recoverable), `futures.pb` (a dynamic
//! task's sub-workflow). Runtimes read the files (from a folder, S3, …); this decides what they mean.

use updraft_proto::Message;
use updraft_proto::core::{
    ContainerError, DynamicJobSpec, ErrorDocument, LiteralMap, container_error, execution_error,
};

use super::{ErrorKind, TaskStatus};

/// The files found at an output prefix.
#[derive(Debug, Clone, Default)]
pub struct OutputFiles {
    /// `outputs.pb`.
    pub outputs: Option<Vec<u8>>,
    /// `error.pb`.
    pub error: Option<Vec<u8>>,
    /// `futures.pb`.
    pub futures: Option<Vec<u8>>,
}

impl OutputFiles {
    /// The files' names, as read from an output prefix.
    pub const NAMES: [&str; 3] = ["outputs.pb", "error.pb", "futures.pb"];

    /// Collects the files with `read`, which returns a file's bytes by name (`outputs.pb`, …) or `None`
    /// when it is not there: from a folder, a bucket, ….
    pub fn read_with(mut read: impl FnMut(&str) -> Option<Vec<u8>>) -> Self {
        let [outputs, error, futures] = Self::NAMES;
        Self {
            outputs: read(outputs),
            error: read(error),
            futures: read(futures),
        }
    }
}

fn failed(kind: ErrorKind, recoverable: bool, code: &str, message: String) -> TaskStatus {
    TaskStatus::Failed {
        code: code.into(),
        message,
        kind,
        recoverable,
    }
}

/// What the files say, in the order flytekit's contract gives them weight; `None` when there are none
/// (the runtime then decides from how the process ended).
pub fn from_output_files(files: &OutputFiles) -> Option<TaskStatus> {
    if let Some(bytes) = &files.outputs {
        return Some(match LiteralMap::decode(&bytes[..]) {
            Ok(outputs) => TaskStatus::Succeeded {
                outputs,
                cached: false,
            },
            Err(e) => failed(
                ErrorKind::System,
                true,
                "BadOutputs",
                format!("outputs.pb is not a LiteralMap: {e}"),
            ),
        });
    }
    if let Some(bytes) = &files.error {
        return Some(match ErrorDocument::decode(&bytes[..]) {
            Ok(ErrorDocument { error: Some(e) }) => container_failure(&e),
            _ => failed(
                ErrorKind::System,
                true,
                "BadError",
                "error.pb is not an ErrorDocument".into(),
            ),
        });
    }
    if let Some(bytes) = &files.futures {
        return Some(match DynamicJobSpec::decode(&bytes[..]) {
            Ok(spec) => TaskStatus::Dynamic {
                spec: Box::new(spec),
            },
            Err(e) => failed(
                ErrorKind::System,
                true,
                "BadFutures",
                format!("futures.pb is not a DynamicJobSpec: {e}"),
            ),
        });
    }
    None
}

fn container_failure(e: &ContainerError) -> TaskStatus {
    let kind = if e.origin == execution_error::ErrorKind::System as i32 {
        ErrorKind::System
    } else {
        ErrorKind::User
    };
    let recoverable = e.kind == container_error::Kind::Recoverable as i32;
    let code = if e.code.is_empty() {
        "TaskError"
    } else {
        &e.code
    };
    failed(kind, recoverable, code, e.message.clone())
}

/// The `error.pb` a task leaves for a failure: what [`from_output_files`] reads back as the same failure.
pub fn error_document(
    code: &str,
    message: &str,
    kind: ErrorKind,
    recoverable: bool,
) -> ErrorDocument {
    ErrorDocument {
        error: Some(ContainerError {
            code: code.into(),
            message: message.into(),
            kind: if recoverable {
                container_error::Kind::Recoverable
            } else {
                container_error::Kind::NonRecoverable
            } as i32,
            origin: match kind {
                ErrorKind::System => execution_error::ErrorKind::System,
                ErrorKind::User => execution_error::ErrorKind::User,
            } as i32,
            ..Default::default()
        }),
    }
}
