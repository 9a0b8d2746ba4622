//! Problems found while loading or compiling: each names the file, entity, node and field.

use std::fmt;

/// One thing wrong with a workflow, package or YAML file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file the problem is in (package, YAML file, or entry inside a package).
    pub file: String,
    /// The entity, e.g. `workflow my.wf` or `task my.task`; empty when the file itself is at fault.
    pub entity: String,
    /// The node id (renamed form for branch and subworkflow children), when the problem is in a node.
    pub node: Option<String>,
    /// The field path, e.g. `inputs.x` or `task_node.reference_id`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Problem {
    /// A problem with the file as a whole.
    pub fn file(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            entity: String::new(),
            node: None,
            field: String::new(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.entity.is_empty() {
            write!(f, ": {}", self.entity)?;
        }
        if let Some(node) = &self.node {
            write!(f, ": node {node}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every problem found; loading and compiling report all of them, not just the first.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Problems {
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok(value) when nothing is wrong, else Err(self).
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Problem> for Problems {
    fn from(p: Problem) -> Self {
        Self(vec![p])
    }
}
