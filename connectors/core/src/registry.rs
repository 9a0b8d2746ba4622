//! The registry: which connector runs which task.

use std::sync::Arc;

use updraft_engine::compile::CompiledTask;

use crate::Connector;

/// The connectors of one runtime, asked in the order they were added.
#[derive(Clone, Default)]
pub struct Registry {
    connectors: Vec<Arc<dyn Connector>>,
}

/// Why a task cannot run on this runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No connector of this runtime serves the task's type.
    #[error("task `{task}` ({task_type}): no connector here runs this task type")]
    Unserved {
        /// The task.
        task: String,
        /// Its type.
        task_type: String,
    },
    /// The connector found the task's configuration wrong.
    #[error("task `{task}`: {field}: {reason}")]
    Invalid {
        /// The task.
        task: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl Registry {
    /// No connectors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a connector; earlier ones win where two serve a task.
    pub fn with(mut self, c: Arc<dyn Connector>) -> Self {
        self.connectors.push(c);
        self
    }

    /// The connector that runs `task`.
    pub fn for_task(&self, task: &CompiledTask) -> Option<&Arc<dyn Connector>> {
        self.connectors.iter().find(|c| c.serves(task))
    }

    /// The connector named `name` (a [`crate::Handle`]'s maker).
    pub fn named(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.iter().find(|c| c.name() == name)
    }

    /// The job a service's state-change event is about, as the connector that makes such jobs names it.
    pub fn job_of(&self, event: &serde_json::Value) -> Option<crate::JobKey> {
        self.connectors.iter().find_map(|c| c.job_of(event))
    }

    /// Everything that stops `tasks` from running here, one entry per problem, before anything starts.
    pub fn preflight<'a>(
        &self,
        tasks: impl IntoIterator<Item = &'a CompiledTask>,
    ) -> Vec<RegistryError> {
        let mut problems = Vec::new();
        for t in tasks {
            match self.for_task(t) {
                None => problems.push(RegistryError::Unserved {
                    task: t.name.clone(),
                    task_type: t.template.r#type.clone(),
                }),
                Some(c) => {
                    problems.extend(c.preflight(t).into_iter().map(|p| RegistryError::Invalid {
                        task: t.name.clone(),
                        field: p.field,
                        reason: p.reason,
                    }))
                }
            }
        }
        problems
    }
}
