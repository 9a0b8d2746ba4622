//! `updraft plan`: the Kubernetes objects native tasks would create, printed as YAML, without a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use updraft_connector_eks::{AttemptPaths, EksConfig, build, plan_launch};
use updraft_engine::literal::from_json;
use updraft_proto::core::LiteralMap;

/// What to plan.
pub struct PlanArgs {
    /// Packages and YAML files.
    pub files: Vec<PathBuf>,
    /// Only this task.
    pub task: Option<String>,
    /// `name=value` task inputs.
    pub inputs: Vec<String>,
    /// The array element to show.
    pub index: Option<u32>,
    /// Cluster settings file.
    pub config: Option<PathBuf>,
    /// Base URI of execution data.
    pub data_prefix: String,
}

/// Reads the cluster settings (YAML or JSON; every field optional).
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<EksConfig> {
    let Some(path) = path else {
        return Ok(EksConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_norway::from_str(&text)
        .with_context(|| format!("{}: not cluster settings", path.display()))
}

/// Prints the objects of every native task (or the one named) as YAML documents.
pub fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let pkg = match crate::load::load(&args.files) {
        Ok(p) => p,
        Err(p) => return Ok(crate::report(&p)),
    };
    let compiled = match updraft_engine::compile(&pkg) {
        Ok(c) => c,
        Err(p) => return Ok(crate::report(&p)),
    };
    let config = load_config(args.config.as_ref())?;
    let tasks: Vec<_> = match &args.task {
        Some(t) => vec![compiled.tasks.get(t).with_context(|| {
            format!(
                "no task `{t}`; the files define: {:?}",
                compiled.tasks.keys().collect::<Vec<_>>()
            )
        })?],
        None => compiled
            .tasks
            .values()
            .filter(|t| t.plugin.is_native())
            .collect(),
    };
    if tasks.is_empty() {
        eprintln!("updraft: no native (Kubernetes) tasks in the given files");
    }
    let mut given: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for kv in &args.inputs {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--input `{kv}`: write name=value"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        given.insert(k.into(), value);
    }
    let mut out = String::new();
    for task in tasks {
        let mut inputs = LiteralMap::default();
        for (k, v) in &given {
            if let Some(t) = task.interface.inputs.get(k) {
                let lit = from_json(v, t).map_err(|e| anyhow::anyhow!("input `{k}`: {e}"))?;
                inputs.literals.insert(k.clone(), lit);
            }
        }
        let launch = plan_launch(task, inputs, args.index);
        let base = format!(
            "{}/{}",
            args.data_prefix.trim_end_matches('/'),
            launch.execution
        );
        let paths = AttemptPaths::under(&base, &launch);
        let objects = match build(task, &launch, &paths, &config) {
            Ok(o) => o,
            Err(e) => bail!("{e}"),
        };
        for o in objects {
            out.push_str(&format!("# task {} ({})\n", task.name, task.plugin));
            out.push_str(&serde_norway::to_string(&o.to_json())?);
            out.push_str("---\n");
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
