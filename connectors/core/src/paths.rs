//! The attempt data layout: where one task attempt's inputs, outputs, raw data and checkpoints live,
//! the same under a local folder and under an `s3://` prefix, and the template variables a task's
//! arguments are rendered with.

use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::TaskLaunch;
use updraft_engine::template::Vars;
use updraft_proto::Message;
use updraft_proto::core::{TaskTemplate, task_template::Target};

use crate::{DataStore, Transient};

/// Where an attempt reads and writes: paths under a local folder, or URIs under `s3://…`.
///
/// The layout under an execution's base: `<node>[-<index>]/<attempt>/` holding `inputs.pb`, the output
/// prefix `out/` (`outputs.pb`, `error.pb`, `futures.pb`), the raw output data `raw/` and `checkpoint/`,
/// and `task.pb` (the task template) for a task whose arguments name `{{.taskTemplatePath}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptPaths {
    /// The execution's base (a folder, or a prefix such as `s3://bucket/executions/<exec>`), which
    /// every attempt's folder is under.
    pub base: String,
    /// The attempt's folder (`{{.inputPrefix}}`).
    pub dir: String,
    /// `inputs.pb` of the attempt.
    pub input: String,
    /// The output prefix (outputs.pb / error.pb / futures.pb are written under it).
    pub output_prefix: String,
    /// The raw output data prefix, unique per attempt.
    pub raw_output_prefix: String,
    /// Where this attempt writes checkpoints.
    pub checkpoint_prefix: String,
    /// The previous attempt's checkpoints, after the first attempt.
    pub prev_checkpoint_prefix: Option<String>,
    /// The task template (`{{.taskTemplatePath}}`), written only for a task that reads it.
    pub task_template: String,
}

impl AttemptPaths {
    /// The layout of `launch`'s attempt under `base` (a folder, or a prefix such as
    /// `s3://bucket/executions/<exec>`).
    pub fn under(base: &str, launch: &TaskLaunch) -> Self {
        let node = match launch.index {
            Some(i) => format!("{}-{i}", launch.node_id),
            None => launch.node_id.clone(),
        };
        let base = base.trim_end_matches('/');
        let dir = |a: u32| format!("{base}/{node}/{a}");
        let here = dir(launch.attempt);
        Self {
            input: format!("{here}/inputs.pb"),
            output_prefix: format!("{here}/out"),
            raw_output_prefix: format!("{here}/raw"),
            checkpoint_prefix: format!("{here}/checkpoint"),
            task_template: format!("{here}/task.pb"),
            prev_checkpoint_prefix: (launch.attempt > 0)
                .then(|| format!("{}/checkpoint", dir(launch.attempt - 1))),
            dir: here,
            base: base.to_string(),
        }
    }

    /// The variables `launch`'s container arguments (or query) are rendered with, in `namespace`.
    pub fn vars<'a>(&'a self, launch: &'a TaskLaunch, namespace: &'a str) -> Vars<'a> {
        Vars {
            input: &self.input,
            input_prefix: &self.dir,
            output_prefix: &self.output_prefix,
            raw_output_prefix: &self.raw_output_prefix,
            checkpoint_prefix: &self.checkpoint_prefix,
            prev_checkpoint_prefix: self.prev_checkpoint_prefix.as_deref(),
            per_retry_key: &launch.name,
            task_template_path: &self.task_template,
            namespace,
            inputs: Some(&launch.inputs),
        }
    }
}

impl AttemptPaths {
    /// Writes what the attempt reads before it starts: its inputs (unless `inline`: the connector
    /// passes them with the start) and, when its arguments name `{{.taskTemplatePath}}` (flytekit's
    /// `SQLite3Task` and other tasks whose code ships in their image, run by
    /// `default_task_template_resolver`), its task template.
    pub async fn write_inputs(
        &self,
        data: &dyn DataStore,
        launch: &TaskLaunch,
        task: &CompiledTask,
        inline: bool,
    ) -> Result<(), Transient> {
        if !inline {
            data.put(&self.input, launch.inputs.encode_to_vec()).await?;
        }
        if reads_template(&task.template) {
            data.put(&self.task_template, task.template.encode_to_vec())
                .await?;
        }
        Ok(())
    }
}

/// Whether a task's container (or pod) arguments name `{{.taskTemplatePath}}`.
fn reads_template(t: &TaskTemplate) -> bool {
    let text = match &t.target {
        Some(Target::Container(c)) => c.command.iter().chain(&c.args).cloned().collect(),
        Some(Target::K8sPod(p)) => p
            .pod_spec
            .as_ref()
            .map(|s| updraft_engine::literal::struct_json(s).to_string())
            .unwrap_or_default(),
        _ => String::new(),
    };
    text.to_ascii_lowercase()
        .replace(' ', "")
        .contains("{{.tasktemplatepath}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn launch(index: Option<u32>, attempt: u32) -> TaskLaunch {
        TaskLaunch {
            execution: "e".into(),
            node: 0,
            node_id: "n0".into(),
            index,
            attempt,
            task: "t".into(),
            inputs: Arc::default(),
            name: "e-n0-0".into(),
            interruptible: false,
            cache_key: None,
            cache_serializable: false,
            array_size: None,
        }
    }

    #[test]
    fn one_folder_per_node_element_and_attempt() {
        let p = AttemptPaths::under("s3://b/executions/e/", &launch(None, 0));
        assert_eq!(p.dir, "s3://b/executions/e/n0/0");
        assert_eq!(p.input, "s3://b/executions/e/n0/0/inputs.pb");
        assert_eq!(p.output_prefix, "s3://b/executions/e/n0/0/out");
        assert_eq!(p.raw_output_prefix, "s3://b/executions/e/n0/0/raw");
        assert_eq!(p.prev_checkpoint_prefix, None);
        let p = AttemptPaths::under("/tmp/x", &launch(Some(3), 2));
        assert_eq!(p.dir, "/tmp/x/n0-3/2");
        assert_eq!(p.checkpoint_prefix, "/tmp/x/n0-3/2/checkpoint");
        assert_eq!(
            p.prev_checkpoint_prefix.as_deref(),
            Some("/tmp/x/n0-3/1/checkpoint")
        );
    }

    #[test]
    fn only_a_task_naming_its_template_path_reads_it() {
        use updraft_proto::core::Container;
        let with = |args: &[&str]| TaskTemplate {
            target: Some(Target::Container(Container {
                args: args.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            })),
            ..Default::default()
        };
        // flytekit's SQLite3Task, as `pyflyte package` writes it.
        assert!(reads_template(&with(&[
            "pyflyte-execute",
            "--resolver",
            "flytekit.core.python_customized_container_task.default_task_template_resolver",
            "--",
            "{{.taskTemplatePath}}",
            "flytekit.extras.sqlite3.task.SQLite3TaskExecutor",
        ])));
        assert!(reads_template(&with(&["{{ .TaskTemplatePath }}"])));
        assert!(!reads_template(&with(&["pyflyte-execute", "{{.input}}"])));
        assert!(!reads_template(&TaskTemplate::default()));
        let l = launch(None, 0);
        let p = AttemptPaths::under("/s", &l);
        assert_eq!(p.vars(&l, "ns").task_template_path, "/s/n0/0/task.pb");
    }

    #[test]
    fn variables_come_from_the_layout() {
        let l = launch(None, 1);
        let p = AttemptPaths::under("/s", &l);
        let v = p.vars(&l, "ns");
        assert_eq!(v.input_prefix, "/s/n0/1");
        assert_eq!(v.output_prefix, "/s/n0/1/out");
        assert_eq!(v.prev_checkpoint_prefix, Some("/s/n0/0/checkpoint"));
        assert_eq!((v.per_retry_key, v.namespace), ("e-n0-0", "ns"));
    }
}
