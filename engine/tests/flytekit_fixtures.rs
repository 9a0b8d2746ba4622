//! The compiler against packages made by the real flytekit (tests/fixtures/flytekit).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use updraft_engine::compile::{BindingValue, NodeKind, Otherwise, Source, SuccessCriteria};
use updraft_engine::plugins::PluginKind;
use updraft_engine::{Limits, Package, compile};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/flytekit")
}

fn load(name: &str) -> Package {
    let path = fixture_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Package::from_tgz(name, &bytes, Limits::default()).unwrap_or_else(|p| panic!("{p}"))
}

fn load_all(names: &[&str]) -> Package {
    let mut pkg = Package::default();
    for n in names {
        pkg.merge(load(n)).unwrap();
    }
    pkg
}

#[test]
fn every_self_contained_fixture_compiles() {
    let mut count = 0;
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".tgz") || name == "references.tgz" {
            continue;
        }
        let pkg = load(&name);
        let compiled = compile(&pkg).unwrap_or_else(|p| panic!("{name}:\n{p}"));
        assert!(!compiled.workflows.is_empty(), "{name} has no workflow");
        count += 1;
    }
    assert!(count >= 14, "only {count} fixtures found");
}

#[test]
fn branch_children_are_renamed_and_their_bindings_make_dependencies() {
    let c = compile(&load("branches.tgz")).unwrap();
    let wf = &c.workflows["fixtures.branches.branch_wf"];
    let branch = wf
        .roots
        .iter()
        .copied()
        .find(|&i| matches!(wf.node(i).kind, NodeKind::Branch { .. }))
        .unwrap();
    let node = wf.node(branch);
    let NodeKind::Branch { cases, otherwise } = &node.kind else {
        unreachable!()
    };
    assert_eq!(cases.len(), 3);
    for (_, child) in cases {
        assert!(
            wf.node(*child).id.starts_with(&format!("{}-", node.id)),
            "{}",
            wf.node(*child).id
        );
        assert_eq!(wf.node(*child).parent, Some(branch));
    }
    assert_eq!(otherwise, &Otherwise::Fail("x must not be zero".into()));
    // `square(x=d)` inside the second case binds the top-level `double` node: the branch depends on it,
    // though flytekit's upstream_node_ids does not say so.
    let double = wf
        .roots
        .iter()
        .copied()
        .find(|&i| matches!(&wf.node(i).kind, NodeKind::Task { task } if task.ends_with(".double")))
        .unwrap();
    assert!(
        node.upstream.contains(&double),
        "branch upstream: {:?}",
        node.upstream
    );
    assert!(wf.node(double).downstream.contains(&branch));
    assert_eq!(node.outputs.len(), 1);
}

#[test]
fn subworkflows_are_inlined_with_prefixed_ids() {
    let c = compile(&load("subworkflows.tgz")).unwrap();
    let wf = &c.workflows["fixtures.subworkflows.outer"];
    let subs: Vec<_> = wf
        .roots
        .iter()
        .copied()
        .filter(|&i| matches!(wf.node(i).kind, NodeKind::Subworkflow { .. }))
        .collect();
    assert_eq!(subs.len(), 2);
    for s in &subs {
        let NodeKind::Subworkflow {
            children, outputs, ..
        } = &wf.node(*s).kind
        else {
            unreachable!()
        };
        assert_eq!(children.len(), 2);
        for ch in children {
            assert!(wf.node(*ch).id.starts_with(&format!("{}-", wf.node(*s).id)));
        }
        assert_eq!(outputs.len(), 2);
        // The inner first node reads the subworkflow's inputs.
        let first = wf.node(children[0]);
        assert!(first.inputs.iter().any(|(_, b)| matches!(b, BindingValue::Promise { source: Source::Inputs(Some(p)), .. } if p == s)));
    }
    assert!(wf.failure_node.is_some());
    assert_eq!(
        wf.failure_policy,
        updraft_engine::compile::FailurePolicy::FailAfterExecutableNodesComplete
    );
}

#[test]
fn map_tasks_compile_to_array_nodes() {
    let c = compile(&load("maps.tgz")).unwrap();
    let wf = &c.workflows["fixtures.maps.maps_wf"];
    let arrays: Vec<_> = wf
        .roots
        .iter()
        .map(|&i| wf.node(i))
        .filter(|n| matches!(n.kind, NodeKind::Array { .. }))
        .collect();
    assert_eq!(arrays.len(), 3);
    let mut saw_ratio = false;
    for a in arrays {
        let NodeKind::Array {
            mapped,
            success,
            parallelism,
            ..
        } = &a.kind
        else {
            unreachable!()
        };
        assert_eq!(
            mapped,
            &vec!["x".to_string()],
            "{}: factor is bound, x is mapped",
            a.id
        );
        if let SuccessCriteria::MinSuccessRatio(r) = success {
            assert!((r - 0.5).abs() < 1e-6);
            saw_ratio = true;
        }
        if a.metadata.name.contains("map_square") {
            assert_eq!(*parallelism, Some(2));
        }
    }
    assert!(saw_ratio);
}

#[test]
fn launch_plans_apply_defaults_and_fixed_inputs() {
    let c = compile(&load("launchplans.tgz")).unwrap();
    let lp = &c.launch_plans["greet_twice"];
    assert_eq!(lp.workflow, "fixtures.launchplans.greet_wf");
    assert!(lp.fixed.contains_key("times"));
    assert!(
        !lp.interface.inputs.contains_key("times"),
        "fixed inputs cannot be given"
    );
    assert!(lp.defaults.contains_key("name") && lp.defaults.contains_key("greeting"));
    assert!(lp.required.is_empty());
    let parent = &c.workflows["fixtures.launchplans.parent_wf"];
    assert!(parent.nodes.iter().any(
        |n| matches!(&n.kind, NodeKind::LaunchPlan { launch_plan } if launch_plan == "greet_twice")
    ));
}

#[test]
fn gates_have_typed_outputs_and_declared_ordering() {
    let c = compile(&load("gates.tgz")).unwrap();
    let wf = &c.workflows["fixtures.gates.gates_wf"];
    let sleep = wf.find("n1").unwrap();
    let report = wf.find("n0").unwrap();
    // The sleep gate has no bindings; `report >> pause` exists only in upstream_node_ids.
    assert_eq!(wf.node(sleep).upstream, vec![report]);
    let approve = wf.node(wf.find("n3").unwrap());
    assert_eq!(
        updraft_engine::types::display(&approve.outputs["o0"]),
        "str"
    );
    let signal = wf.node(wf.find("n2").unwrap());
    assert_eq!(updraft_engine::types::display(&signal.outputs["o0"]), "str");
}

#[test]
fn every_plugin_family_is_recognised() {
    let pkg = load_all(&[
        "containers.tgz",
        "training.tgz",
        "spark_tasks.tgz",
        "batch.tgz",
        "queries.tgz",
        "sagemaker.tgz",
        "literals.tgz",
    ]);
    let c = compile(&pkg).unwrap();
    let kinds: std::collections::BTreeSet<PluginKind> =
        c.tasks.values().map(|t| t.plugin).collect();
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
    ] {
        assert!(kinds.contains(&k), "no fixture task served by {k}");
    }
}

#[test]
fn reference_entities_resolve_only_with_the_packages_that_define_them() {
    let alone = compile(&load("references.tgz")).unwrap_err().to_string();
    assert!(
        alone.contains("task `fixtures.subworkflows.add` is not in the package"),
        "{alone}"
    );
    assert!(
        alone.contains("launch plan `greet_twice` is not in the package"),
        "{alone}"
    );
    assert!(alone.contains("node n0"), "{alone}");
    let with = load_all(&["references.tgz", "subworkflows.tgz", "launchplans.tgz"]);
    compile(&with).unwrap_or_else(|p| panic!("{p}"));
}

#[test]
fn a_workflow_needs_only_its_closure() {
    use updraft_engine::{EntityRef, compile_for};
    let pkg = load("references.tgz");
    // The whole package does not compile (its references resolve nowhere) …
    assert!(compile(&pkg).is_err());
    // … but a workflow that needs none of them does, by its launch plan.
    let roots = pkg.launch_roots(None, Some("fixtures.references.standalone_wf"));
    assert_eq!(
        roots,
        [
            EntityRef::workflow("fixtures.references.standalone_wf"),
            EntityRef::launch_plan("fixtures.references.standalone_wf"),
        ]
    );
    assert!(pkg.unresolved(Some(&roots)).is_empty());
    let closure = pkg.closure(&roots);
    assert_eq!(
        closure.tasks.keys().collect::<Vec<_>>(),
        ["fixtures.references.double"]
    );
    assert_eq!(closure.top_level, ["fixtures.references.standalone_wf"]);
    let compiled = compile_for(&pkg, &roots).unwrap_or_else(|p| panic!("{p}"));
    assert!(
        compiled
            .workflows
            .contains_key("fixtures.references.standalone_wf")
    );
    assert!(
        !compiled
            .workflows
            .contains_key("fixtures.references.references_wf")
    );
    // The other workflow's problems are still its own.
    let refs = pkg.launch_roots(None, Some("fixtures.references.references_wf"));
    let e = compile_for(&pkg, &refs).unwrap_err().to_string();
    assert!(
        e.contains("task `fixtures.subworkflows.add` is not in the package"),
        "{e}"
    );
}

#[test]
fn references_name_what_they_refer_to_and_resolve_from_a_lookup() {
    let mut pkg = load("references.tgz");
    let refs = pkg.unresolved(None);
    let described: Vec<(String, &str, &str, Option<&str>)> = refs
        .iter()
        .map(|r| {
            (
                r.describe(),
                r.project.as_str(),
                r.by.as_str(),
                r.node.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            (
                "task `fixtures.subworkflows.add` (version v1)".to_string(),
                "flytesnacks",
                "workflow fixtures.references.references_wf",
                Some("n0")
            ),
            (
                "launch plan `greet_twice` (version v1)".to_string(),
                "flytesnacks",
                "workflow fixtures.references.references_wf",
                Some("n1")
            ),
        ]
    );
    // Nothing registered: each reference is a problem naming its node and version.
    let (resolved, problems) = pkg.clone().resolve(None, |_| Ok(None));
    assert!(resolved.is_empty());
    let text = updraft_engine::Problems(problems).to_string();
    assert!(
        text.contains("node n0: task_node.reference_id: task `fixtures.subworkflows.add` (version v1) is not in the package"),
        "{text}"
    );
    assert!(text.contains("nothing registered has it"), "{text}");
    // A registry holding the packages that define them: each found entity comes with its closure
    // (the launch plan with its workflow and that workflow's tasks).
    let registry = [load("subworkflows.tgz"), load("launchplans.tgz")];
    let mut asked = Vec::new();
    let (resolved, problems) = pkg.resolve(None, |r| {
        asked.push(r.entity.clone());
        Ok(registry.iter().find(|p| p.holds(&r.entity)).cloned())
    });
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(resolved.len(), 2);
    assert_eq!(asked.len(), 2, "each reference looked up once: {asked:?}");
    assert!(!pkg.holds(&updraft_engine::EntityRef::workflow(
        "fixtures.subworkflows.outer_wf"
    )));
    compile(&pkg).unwrap_or_else(|p| panic!("{p}"));
    // A lookup that fails says why.
    let (_, problems) = load("references.tgz").resolve(None, |r| {
        Err(format!("{} is registered only at version v2", r.entity))
    });
    assert!(
        problems[0].reason.contains("only at version v2"),
        "{problems:?}"
    );
}

#[test]
fn a_package_written_back_as_an_archive_is_the_same_package() {
    for names in [
        &["subworkflows.tgz"][..],
        &["references.tgz", "subworkflows.tgz", "launchplans.tgz"],
        &["literals_fast.tgz"],
    ] {
        let pkg = load_all(names);
        let bytes = pkg.to_archive().unwrap();
        let back = Package::from_tgz("again.tgz", &bytes, Limits::default())
            .unwrap_or_else(|p| panic!("{names:?}: {p}"));
        assert_eq!(back.top_level, pkg.top_level, "{names:?}");
        for (name, t) in &pkg.tasks {
            assert_eq!(back.tasks[name].template, t.template, "{name}");
        }
        for (name, w) in &pkg.workflows {
            assert_eq!(back.workflows[name].template, w.template, "{name}");
        }
        for (name, l) in &pkg.launch_plans {
            assert_eq!(back.launch_plans[name].launch_plan, l.launch_plan, "{name}");
        }
        assert_eq!(back.code_bundles, pkg.code_bundles);
        assert_eq!(
            (
                back.tasks.len(),
                back.workflows.len(),
                back.launch_plans.len()
            ),
            (pkg.tasks.len(), pkg.workflows.len(), pkg.launch_plans.len())
        );
    }
}

#[test]
fn a_registered_entity_that_differs_from_the_packages_own_is_refused() {
    let lps = load("launchplans.tgz");
    let mut pkg = load("references.tgz");
    // The package holds its own, different, copy of a task the registered launch plan's workflow runs.
    let mut own = lps.tasks["fixtures.launchplans.greet"].clone();
    own.template.metadata.get_or_insert_default().retries = Some(Default::default());
    own.template
        .metadata
        .as_mut()
        .unwrap()
        .retries
        .as_mut()
        .unwrap()
        .retries = 7;
    pkg.tasks.insert("fixtures.launchplans.greet".into(), own);
    let registry = [load("subworkflows.tgz"), lps];
    let (_, problems) = pkg.resolve(None, |r| {
        Ok(registry.iter().find(|p| p.holds(&r.entity)).cloned())
    });
    let text = updraft_engine::Problems(problems).to_string();
    assert!(
        text.contains("task fixtures.launchplans.greet: the registered task differs from the one of the same name in the package"),
        "{text}"
    );
}
