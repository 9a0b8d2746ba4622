//! Updraft YAML compiles to the same protos and the same compiled form as flytekit packages.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use updraft_engine::compile::{CompiledWorkflow, NodeKind};
use updraft_engine::plugins::PluginKind;
use updraft_engine::{Limits, Package, compile, types, yaml};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load_yaml(rel: &str) -> Package {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    yaml::load(rel, &text).unwrap_or_else(|p| panic!("{p}"))
}

fn load_tgz(rel: &str) -> Package {
    let bytes = std::fs::read(root().join(rel)).unwrap();
    Package::from_tgz(rel, &bytes, Limits::default()).unwrap()
}

fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap()
}

/// A description of a compiled graph that ignores task name prefixes.
fn shape(wf: &CompiledWorkflow) -> Vec<String> {
    let mut out: Vec<String> = wf
        .nodes
        .iter()
        .map(|n| {
            let kind = match &n.kind {
                NodeKind::Task { task } => format!("task {}", short(task)),
                NodeKind::Branch { cases, otherwise } => {
                    format!("branch {} cases, {otherwise:?}", cases.len())
                }
                other => format!("{other:?}"),
            };
            let ups: BTreeSet<&str> = n.upstream.iter().map(|&u| wf.node(u).id.as_str()).collect();
            let ins: Vec<String> = n
                .input_types
                .iter()
                .map(|(k, t)| format!("{k}:{}", types::display(t)))
                .collect();
            let outs: Vec<String> = n
                .outputs
                .iter()
                .map(|(k, t)| format!("{k}:{}", types::display(t)))
                .collect();
            format!("{} [{kind}] after {ups:?} in {ins:?} out {outs:?}", n.id)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_example_compiles() {
    let c = compile(&load_yaml("examples/hello.yaml")).unwrap_or_else(|p| panic!("{p}"));
    let wf = &c.workflows["hello"];
    assert_eq!(wf.roots.len(), 3);
    assert!(c.launch_plans["hello"].defaults.contains_key("numbers"));
    assert_eq!(c.tasks["pass"].plugin, PluginKind::Echo);
}

#[test]
fn yaml_and_flytekit_compile_to_the_same_graph() {
    let from_yaml =
        compile(&load_yaml("tests/fixtures/yaml/branches.yaml")).unwrap_or_else(|p| panic!("{p}"));
    let from_flytekit = compile(&load_tgz("tests/fixtures/flytekit/branches.tgz")).unwrap();
    let a = shape(&from_yaml.workflows["branch_wf"]);
    let b = shape(&from_flytekit.workflows["fixtures.branches.branch_wf"]);
    assert_eq!(a.len(), 6, "n0, n1 and its three children, n2: {a:#?}");
    assert_eq!(a, b);
    assert_eq!(
        from_yaml.workflows["branch_wf"].interface,
        from_flytekit.workflows["fixtures.branches.branch_wf"].interface
    );
    let (ya, fa) = (
        &from_yaml.tasks["double"],
        &from_flytekit.tasks["fixtures.branches.double"],
    );
    assert_eq!(ya.template.r#type, fa.template.r#type);
    assert_eq!(ya.interface, fa.interface);
    let args = |t: &updraft_engine::compile::CompiledTask| match &t.template.target {
        Some(updraft_proto::core::task_template::Target::Container(c)) => c.args.clone(),
        _ => vec![],
    };
    assert_eq!(
        args(ya),
        args(fa),
        "python task entrypoints match flytekit's"
    );
}

#[test]
fn every_kind_compiles_with_its_plugin() {
    let c = compile(&load_yaml("tests/fixtures/yaml/everything.yaml"))
        .unwrap_or_else(|p| panic!("{p}"));
    let kinds: BTreeSet<PluginKind> = c.tasks.values().map(|t| t.plugin).collect();
    for k in [
        PluginKind::Container,
        PluginKind::Pod,
        PluginKind::PyTorch,
        PluginKind::TensorFlow,
        PluginKind::Mpi,
        PluginKind::Spark,
        PluginKind::Batch,
        PluginKind::Hive,
        PluginKind::Athena,
        PluginKind::EmrServerless,
        PluginKind::SageMaker,
        PluginKind::Echo,
    ] {
        assert!(kinds.contains(&k), "no task served by {k}");
    }
    let wf = &c.workflows["pipeline"];
    let kinds: BTreeSet<&str> = wf
        .nodes
        .iter()
        .map(|n| match n.kind {
            NodeKind::Task { .. } => "task",
            NodeKind::Array { .. } => "array",
            NodeKind::Branch { .. } => "branch",
            NodeKind::Subworkflow { .. } => "subworkflow",
            NodeKind::LaunchPlan { .. } => "launch plan",
            NodeKind::Gate(_) => "gate",
        })
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    assert!(wf.failure_node.is_some());
    assert!(wf.interruptible);
    // The map with min_success_ratio gathers optionals.
    let videos = wf.node(wf.find("videos").unwrap());
    assert_eq!(
        types::display(&videos.outputs["out"]),
        "list[optional[str]]"
    );
    // `after:` orders nodes without data.
    let wait = wf.node(wf.find("wait").unwrap());
    assert_eq!(wait.upstream, vec![wf.find("report").unwrap()]);
    let lp = &c.launch_plans["train_fast"];
    assert!(lp.fixed.contains_key("epochs"));
    // Task metadata made it through.
    let prep = &c.tasks["prep"].template;
    let md = prep.metadata.as_ref().unwrap();
    assert_eq!(
        (
            md.retries.unwrap().retries,
            md.discoverable,
            md.discovery_version.as_str()
        ),
        (3, true, "2")
    );
    assert_eq!(md.cache_ignore_input_vars, vec!["note".to_string()]);
    assert_eq!(md.timeout.unwrap().seconds, 1800);
}

/// The keys of a task's `custom` Struct.
fn custom_keys(pkg: &updraft_engine::CompiledPackage, task: &str) -> BTreeSet<String> {
    pkg.tasks[task]
        .template
        .custom
        .as_ref()
        .map(|s| s.fields.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn plugin_settings_take_flytekits_shape() {
    let y = compile(&load_yaml("tests/fixtures/yaml/everything.yaml")).unwrap();
    let mut f = Package::default();
    for p in [
        "queries.tgz",
        "batch.tgz",
        "training.tgz",
        "spark_tasks.tgz",
        "sagemaker.tgz",
    ] {
        f.merge(load_tgz(&format!("tests/fixtures/flytekit/{p}")))
            .unwrap();
    }
    let f = compile(&f).unwrap();
    for (ours, theirs) in [
        ("hive_daily", "hive_daily"),
        ("count_events", "athena_count"),
        ("transcode", "fixtures.batch.transcode"),
        ("train_tf", "fixtures.training.tf_train"),
        ("train_mpi", "fixtures.training.mpi_train"),
        ("xgb", "xgboost_training"),
        (
            "train_in_sagemaker",
            "fixtures.sagemaker.train_in_sagemaker",
        ),
        ("describe_endpoint", "describe_endpoint"),
    ] {
        let (a, b) = (custom_keys(&y, ours), custom_keys(&f, theirs));
        assert!(
            a.is_subset(&b) && !a.is_empty(),
            "{ours}: {a:?} is not a subset of flytekit's {b:?}"
        );
        assert_eq!(
            y.tasks[ours].template.r#type,
            f.tasks[theirs].template.r#type
        );
    }
    // Every emr key we write is one flytekit writes too.
    let emr = custom_keys(&y, "emr_job");
    let theirs = custom_keys(&f, "fixtures.queries.emr_spark_script");
    let extra: Vec<_> = emr
        .difference(&theirs)
        .filter(|k| {
            ![
                "spark_submit_parameters",
                "configuration_overrides",
                "application_name",
            ]
            .contains(&k.as_str())
        })
        .collect();
    assert!(extra.is_empty(), "{extra:?}");
    let torch = &y.tasks["train_elastic"]
        .template
        .custom
        .as_ref()
        .unwrap()
        .fields;
    assert!(torch.contains_key("elasticConfig"));
    assert_eq!(y.tasks["in_pod"].plugin, PluginKind::Pod);
}
