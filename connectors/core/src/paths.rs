//! The attempt data layout: where one task attempt's inputs, outputs, raw data and checkpoints live,
//! the same under a local folder and under an `s3://` prefix, and the template variables a task's
//! arguments are rendered with.

use updraft_engine::exec::TaskLaunch;
use updraft_engine::template::Vars;

/// Where an attempt reads and writes: paths under a local folder, or URIs under `s3://…`.
///
/// The layout under an execution's base: `<node>[-<index>]/<attempt>/` holding `inputs.pb`, the output
/// prefix `out/` (`outputs.pb`, `error.pb`, `futures.pb`), the raw output data `raw/` and `checkpoint/`.
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
            task_template_path: "",
            namespace,
            inputs: Some(&launch.inputs),
        }
    }
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
