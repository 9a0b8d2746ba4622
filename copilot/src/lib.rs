//! A raw container's data: its inputs written as files into its input folder, its outputs read back from
//! the files of its output folder, and the attempt's outcome written where the runtime reads it.
//!
//! The conventions are flytekit's `ContainerTask`'s: one file per input, named after it (primitives as
//! text, a blob as the file or folder itself), plus `inputs.pb` with all of them; one file per declared
//! output; `_ERROR` in the output folder fails the task with its contents.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use updraft_engine::exec::outcome::error_document;
use updraft_engine::exec::{ErrorKind, TaskStatus};
use updraft_engine::{literal, template, types};
use updraft_proto::Message;
use updraft_proto::core::{
    Literal, LiteralMap, LiteralType, VariableMap, literal::Value as LitValue, literal_type::Type,
    scalar,
};

/// Why the outputs could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// The container wrote `_ERROR`.
    #[error("{0}")]
    Reported(String),
    /// A declared output has no file.
    #[error("output `{0}` was not written")]
    Missing(String),
    /// A file does not hold a value of its output's type.
    #[error("output `{name}`: {reason}")]
    Bad {
        /// The output.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Errors of moving data.
#[derive(Debug, thiserror::Error)]
pub enum CopilotError {
    /// A location this copilot cannot read or write.
    #[error(
        "`{0}`: only local paths are data locations of this copilot (s3:// comes with the S3 store)"
    )]
    Unsupported(String),
    /// A file that does not decode.
    #[error("{path}: {reason}")]
    Decode {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// File system trouble, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CopilotError + '_ {
    move |source| CopilotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A data location (`file://` or a plain path) as a local path.
pub fn local_path(uri: &str) -> Result<PathBuf, CopilotError> {
    let p = uri.strip_prefix("file://").unwrap_or(uri);
    if p.contains("://") {
        return Err(CopilotError::Unsupported(uri.into()));
    }
    Ok(PathBuf::from(p))
}

/// Copies a file, or a folder with everything in it.
fn copy_tree(from: &Path, to: &Path) -> Result<(), CopilotError> {
    if from.is_dir() {
        std::fs::create_dir_all(to).map_err(io_at(to))?;
        for entry in std::fs::read_dir(from).map_err(io_at(from))? {
            let entry = entry.map_err(io_at(from))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ()).map_err(io_at(from))
    }
}

fn blob_uri(l: &Literal) -> Option<&str> {
    match &l.value {
        Some(LitValue::Scalar(s)) => match &s.value {
            Some(scalar::Value::Blob(b)) => Some(&b.uri),
            _ => None,
        },
        _ => None,
    }
}

/// Writes `inputs` into `dir`: `inputs.pb`, and one file per input — a blob's file or folder copied from
/// its (local) location, any other value as text.
pub fn write_inputs(inputs: &LiteralMap, dir: &Path) -> Result<(), CopilotError> {
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let pb = dir.join("inputs.pb");
    std::fs::write(&pb, inputs.encode_to_vec()).map_err(io_at(&pb))?;
    for (name, value) in &inputs.literals {
        let to = dir.join(name);
        match blob_uri(value) {
            Some(uri) => copy_tree(&local_path(uri)?, &to)?,
            None => std::fs::write(&to, template::literal_text(value)).map_err(io_at(&to))?,
        }
    }
    Ok(())
}

/// Reads the declared `outputs` from the files in `dir`. A blob output's file or folder is copied under
/// `blobs_to` when given (the attempt's raw output prefix) and referenced where it is otherwise.
pub fn read_outputs(
    dir: &Path,
    outputs: &BTreeMap<String, LiteralType>,
    blobs_to: Option<&Path>,
) -> Result<Result<LiteralMap, OutputError>, CopilotError> {
    if let Ok(msg) = std::fs::read_to_string(dir.join("_ERROR")) {
        return Ok(Err(OutputError::Reported(msg.trim().to_string())));
    }
    let mut literals = BTreeMap::new();
    for (name, t) in outputs {
        let path = dir.join(name);
        let value = if matches!(t.r#type, Some(Type::Blob(_))) {
            if !path.exists() {
                return Ok(Err(OutputError::Missing(name.clone())));
            }
            let at = match blobs_to {
                Some(base) => {
                    let to = base.join(name);
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
                    }
                    copy_tree(&path, &to)?;
                    to
                }
                None => path,
            };
            Value::String(at.display().to_string())
        } else {
            let Ok(text) = std::fs::read_to_string(&path) else {
                return Ok(Err(OutputError::Missing(name.clone())));
            };
            let text = text.trim();
            let structured =
                types::element(t).is_some() || matches!(t.r#type, Some(Type::MapValueType(_)));
            if structured {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
            } else {
                Value::String(text.to_string())
            }
        };
        match literal::from_json(&value, t) {
            Ok(l) => {
                literals.insert(name.clone(), l);
            }
            Err(reason) => {
                return Ok(Err(OutputError::Bad {
                    name: name.clone(),
                    reason,
                }));
            }
        }
    }
    Ok(Ok(LiteralMap { literals }))
}

/// The outcome of a raw container that ended with `code` (`None`: killed), from its output folder.
pub fn outcome(
    dir: &Path,
    outputs: &BTreeMap<String, LiteralType>,
    blobs_to: Option<&Path>,
    code: Option<i32>,
    stderr_tail: &str,
) -> Result<TaskStatus, CopilotError> {
    let read = read_outputs(dir, outputs, blobs_to)?;
    let failed = |code: &str, message: String, recoverable: bool| TaskStatus::Failed {
        code: code.into(),
        message,
        kind: ErrorKind::User,
        recoverable,
    };
    Ok(match (read, code) {
        (Err(OutputError::Reported(msg)), _) => failed("ContainerError", msg, true),
        (_, c) if c != Some(0) => failed(
            "ExitCode",
            format!(
                "exit code {}: {stderr_tail}",
                c.map_or("none".into(), |c| c.to_string())
            ),
            true,
        ),
        (Ok(outputs), _) => TaskStatus::Succeeded {
            outputs,
            cached: false,
        },
        (Err(e), _) => failed("BadOutput", e.to_string(), false),
    })
}

/// Writes what a finished attempt leaves at its output prefix: `outputs.pb` when it succeeded, `error.pb`
/// when it failed.
pub fn write_outcome(status: &TaskStatus, prefix: &Path) -> Result<(), CopilotError> {
    std::fs::create_dir_all(prefix).map_err(io_at(prefix))?;
    let (file, bytes) = match status {
        TaskStatus::Succeeded { outputs, .. } => ("outputs.pb", outputs.encode_to_vec()),
        TaskStatus::Failed {
            code,
            message,
            kind,
            recoverable,
        } => (
            "error.pb",
            error_document(code, message, *kind, *recoverable).encode_to_vec(),
        ),
        _ => return Ok(()),
    };
    let path = prefix.join(file);
    std::fs::write(&path, bytes).map_err(io_at(&path))
}

/// The output types of an interface as the copilot is given it (a base64 `VariableMap`, as on its command
/// line).
pub fn decode_interface(b64: &str) -> Result<BTreeMap<String, LiteralType>, CopilotError> {
    use base64::Engine;
    let bad = |reason: String| CopilotError::Decode {
        path: "--interface".into(),
        reason,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| bad(format!("not base64: {e}")))?;
    let vars =
        VariableMap::decode(&bytes[..]).map_err(|e| bad(format!("not a VariableMap: {e}")))?;
    Ok(vars
        .variables
        .into_iter()
        .map(|(k, v)| (k, v.r#type.unwrap_or_default()))
        .collect())
}

/// The `--interface` argument for `outputs`.
pub fn encode_interface(outputs: &VariableMap) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(outputs.encode_to_vec())
}

/// Reads `inputs.pb` (a `LiteralMap`) from a data location.
pub fn read_inputs(uri: &str) -> Result<LiteralMap, CopilotError> {
    let path = local_path(uri)?;
    let bytes = std::fs::read(&path).map_err(io_at(&path))?;
    LiteralMap::decode(&bytes[..]).map_err(|e| CopilotError::Decode {
        path: path.display().to_string(),
        reason: format!("not a LiteralMap: {e}"),
    })
}
