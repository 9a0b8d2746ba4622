//! `updraft plan`: the Kubernetes objects native tasks would create, printed as YAML (read back the same by
//! YAML 1.1 and 1.2 readers; see `updraft_connector_eks::to_yaml`) or JSON, without a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use updraft_connector_eks::{AttemptPaths, EksConfig, build, plan_launch};
use updraft_engine::EntityRef;
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
    /// The settings (`--settings`; its `eks` section and `data.prefix`).
    pub settings: updraft_settings::Settings,
    /// Base URI of execution data.
    pub data_prefix: String,
    /// How the objects are printed.
    pub format: Format,
}

/// How `updraft plan` prints the objects.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// YAML documents, each after a comment naming its task, separated by `---`.
    Yaml,
    /// One JSON array of every object.
    Json,
}

/// The cluster settings of `settings` (its `eks` section; the defaults without one).
pub fn eks_config(settings: &updraft_settings::Settings) -> anyhow::Result<EksConfig> {
    match &settings.eks {
        None => Ok(EksConfig::default()),
        Some(section) => Ok(EksConfig::from_settings("settings", section)?),
    }
}

/// Prints the objects of every native task (or the one named) as YAML documents.
pub fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let pkg = match crate::load::load(&args.files) {
        Ok(p) => p,
        Err(p) => return Ok(crate::report(&p)),
    };
    // Only the tasks shown must compile (a workflow's unresolved references do not matter here).
    let roots: Vec<EntityRef> = match &args.task {
        Some(t) => vec![EntityRef::task(t)],
        None => pkg.tasks.keys().map(EntityRef::task).collect(),
    };
    let compiled = match updraft_engine::compile_for(&pkg, &roots) {
        Ok(c) => c,
        Err(p) => return Ok(crate::report(&p)),
    };
    let config = eks_config(&args.settings)?;
    // The tasks the cluster's connector serves.
    let eks = updraft_connector_eks::EksConnector::checking(config.clone());
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
            .filter(|t| updraft_connector::Connector::serves(&eks, t))
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
    let mut all = Vec::new();
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
            let json = o.to_json();
            out.push_str(&format!("# task {} ({})\n", task.name, task.plugin));
            out.push_str(&updraft_connector_eks::to_yaml(&json));
            out.push_str("---\n");
            all.push(json);
        }
    }
    match args.format {
        Format::Yaml => out_raw!("{out}"),
        Format::Json => out!("{}", serde_json::to_string_pretty(&all)?),
    }
    Ok(ExitCode::SUCCESS)
}
