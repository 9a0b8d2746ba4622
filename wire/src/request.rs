//! The execution request: what is dropped into the bucket under `requests/`, sent to the launch queue or
//! given to the launch function directly.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A request to start an execution (JSON): dropped into the bucket under `requests/`, sent to the launch
/// queue, or given to the launch function directly.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Request {
    /// Execution name (lowercase letters, digits and `-`, at most 40); requests with the same name start
    /// one execution. Made up when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The workflow to run (its default launch plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The launch plan to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_plan: Option<String>,
    /// The package (its key in the bucket); the one the workflow or launch plan was last registered in
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Inputs as JSON values; launch-plan defaults fill the rest.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    /// Ignore cached outputs and overwrite them.
    #[serde(default)]
    pub overwrite_cache: bool,
    /// Most task attempts running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallelism: Option<u32>,
}

/// A made-up execution name: `x` and 15 hex digits of a digest of `seed`.
pub fn made_up_name(seed: &str) -> String {
    format!("x{}", &crate::short_digest(seed.as_bytes())[..15])
}

/// Whether `name` may name an execution: 1 to 40 lowercase letters, digits and `-`, not at either end.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
