//! Helpers of the copilot's tests.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use updraft_proto::core::{LiteralType, Variable, VariableMap};

/// A new, empty folder for the test `tag`.
pub fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("updraft-copilot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A type written as in YAML (`int`, `file`, `dir`, …).
pub fn ty(text: &str) -> LiteralType {
    updraft_engine::types::parse(text).unwrap()
}

/// An interface's variables, by name and type text.
pub fn variables(vars: &[(&str, &str)]) -> VariableMap {
    VariableMap {
        variables: vars
            .iter()
            .map(|(n, t)| {
                (
                    n.to_string(),
                    Variable {
                        r#type: Some(ty(t)),
                        ..Default::default()
                    },
                )
            })
            .collect(),
    }
}
