//! A raw container's data: its inputs written as files into its input folder, its outputs read back from
//! the files of its output folder, and the attempt's outcome written where the runtime reads it.
//!
//! The conventions are flytekit's `ContainerTask`'s: one file per input, named after it (primitives as
//! text, a blob as the file or folder itself), plus `inputs.pb` with all of them; one file per declared
//! output; `_ERROR` in the output folder fails the task with its contents.
//!
//! Data locations are URIs read and written through a [`Store`]: [`LocalFiles`] for local paths (the
//! local runner); the copilot program (`updraft-copilot`) adds S3. This crate calls no AWS service, so
//! the runtimes that share its conventions link no AWS SDK through it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use updraft_engine::exec::outcome::error_document;
use updraft_engine::exec::{ErrorKind, TaskStatus};
use updraft_engine::{literal, template, types};
use updraft_proto::Message;
use updraft_proto::core::{
    Literal, LiteralMap, LiteralType, VariableMap, blob_type::BlobDimensionality,
    literal::Value as LitValue, literal_type::Type, scalar,
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
    /// A location this store cannot read or write.
    #[error("`{0}`: {1}")]
    Unsupported(String, &'static str),
    /// A data store's call failed.
    #[error("{uri}: {reason}")]
    Remote {
        /// The location.
        uri: String,
        /// What the store said.
        reason: String,
    },
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

/// The error of an I/O failure at `path`.
pub fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CopilotError + '_ {
    move |source| CopilotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A data location (`file://` or a plain path) as a local path.
pub fn local_path(uri: &str) -> Result<PathBuf, CopilotError> {
    let p = uri.strip_prefix("file://").unwrap_or(uri);
    if p.contains("://") {
        return Err(CopilotError::Unsupported(
            uri.into(),
            "not a local path (s3:// is read and written by the copilot program)",
        ));
    }
    Ok(PathBuf::from(p))
}

/// Where a raw container's data lives: objects by URI, and blobs (a file, or a folder of files) moved
/// between a URI and this machine.
pub trait Store {
    /// The object at `uri`.
    fn read(&self, uri: &str) -> Result<Vec<u8>, CopilotError>;
    /// Writes `bytes` as the object at `uri`.
    fn write(&self, uri: &str, bytes: &[u8]) -> Result<(), CopilotError>;
    /// Copies the blob at `uri` — a folder of files when `multipart` — to `to`.
    fn download(&self, uri: &str, multipart: bool, to: &Path) -> Result<(), CopilotError>;
    /// Copies the file or folder `from` to `uri`.
    fn upload(&self, from: &Path, uri: &str) -> Result<(), CopilotError>;
}

/// Local paths and `file://` URIs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFiles;

impl Store for LocalFiles {
    fn read(&self, uri: &str) -> Result<Vec<u8>, CopilotError> {
        let path = local_path(uri)?;
        std::fs::read(&path).map_err(io_at(&path))
    }

    fn write(&self, uri: &str, bytes: &[u8]) -> Result<(), CopilotError> {
        let path = local_path(uri)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io_at(&path))
    }

    fn download(&self, uri: &str, _multipart: bool, to: &Path) -> Result<(), CopilotError> {
        copy_tree(&local_path(uri)?, to)
    }

    fn upload(&self, from: &Path, uri: &str) -> Result<(), CopilotError> {
        let to = local_path(uri)?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        copy_tree(from, &to)
    }
}

/// `name` under the location `prefix` (a URI or a local path).
pub fn join_uri(prefix: &str, name: &str) -> String {
    format!("{}/{name}", prefix.trim_end_matches('/'))
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

/// A blob's location, and whether it is a folder (multipart).
fn blob_of(l: &Literal) -> Option<(&str, bool)> {
    match &l.value {
        Some(LitValue::Scalar(s)) => match &s.value {
            Some(scalar::Value::Blob(b)) => {
                let multipart = b
                    .metadata
                    .as_ref()
                    .and_then(|m| m.r#type.as_ref())
                    .is_some_and(|t| t.dimensionality == BlobDimensionality::Multipart as i32);
                Some((&b.uri, multipart))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Writes `inputs` into `dir`: `inputs.pb`, and one file per input — a blob's file or folder copied from
/// its location in `store`, any other value as text.
pub fn write_inputs(
    inputs: &LiteralMap,
    dir: &Path,
    store: &dyn Store,
) -> Result<(), CopilotError> {
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let pb = dir.join("inputs.pb");
    std::fs::write(&pb, inputs.encode_to_vec()).map_err(io_at(&pb))?;
    for (name, value) in &inputs.literals {
        let to = dir.join(name);
        match blob_of(value) {
            Some((uri, multipart)) => store.download(uri, multipart, &to)?,
            None => std::fs::write(&to, template::literal_text(value)).map_err(io_at(&to))?,
        }
    }
    Ok(())
}

/// Reads the declared `outputs` from the files in `dir`. A blob output's file or folder is copied to
/// `<blobs_to>/<name>` in `store` when `blobs_to` is given (the attempt's raw output prefix) and
/// referenced there; otherwise it is referenced where it is.
pub fn read_outputs(
    dir: &Path,
    outputs: &BTreeMap<String, LiteralType>,
    blobs_to: Option<&str>,
    store: &dyn Store,
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
                    let to = join_uri(base, name);
                    store.upload(&path, &to)?;
                    to
                }
                None => path.display().to_string(),
            };
            Value::String(at)
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
    blobs_to: Option<&str>,
    store: &dyn Store,
    code: Option<i32>,
    stderr_tail: &str,
) -> Result<TaskStatus, CopilotError> {
    // The outputs of a failed command are not worth copying.
    let blobs_to = blobs_to.filter(|_| code == Some(0));
    let read = read_outputs(dir, outputs, blobs_to, store)?;
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

/// Writes what a finished attempt leaves at its output prefix in `store`: `outputs.pb` when it
/// succeeded, `error.pb` when it failed.
pub fn write_outcome(
    status: &TaskStatus,
    prefix: &str,
    store: &dyn Store,
) -> Result<(), CopilotError> {
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
    store.write(&join_uri(prefix, file), &bytes)
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

/// Reads `inputs.pb` (a `LiteralMap`) from a data location in `store`.
pub fn read_inputs(uri: &str, store: &dyn Store) -> Result<LiteralMap, CopilotError> {
    let bytes = store.read(uri)?;
    LiteralMap::decode(&bytes[..]).map_err(|e| CopilotError::Decode {
        path: uri.to_string(),
        reason: format!("not a LiteralMap: {e}"),
    })
}
