//! Broken input is rejected with a problem naming file, entity, node and field — never a panic.

#![allow(clippy::unwrap_used)]

use std::io::Read;

use updraft_engine::{Limits, Package, compile, yaml};
use updraft_proto::Message;
use updraft_proto::admin::{TaskSpec, WorkflowSpec};
use updraft_proto::core::{binding_data, node::Target};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/fixtures/flytekit/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn entries(tgz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).unwrap();
            (name, buf)
        })
        .collect()
}

fn tgz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    updraft_engine::package::write_archive(entries).unwrap()
}

fn errors_of(name: &str, bytes: &[u8]) -> String {
    match Package::from_tgz(name, bytes, Limits::default()) {
        Err(p) => p.to_string(),
        Ok(pkg) => compile(&pkg)
            .err()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    }
}

/// Rewrites the workflow entry of a fixture with `f` and returns the errors of the result.
fn with_workflow(fixture_name: &str, f: impl Fn(&mut WorkflowSpec)) -> String {
    let mut es = entries(&fixture(fixture_name));
    for (name, data) in &mut es {
        if name.ends_with("_2.pb") {
            let mut spec = WorkflowSpec::decode(&data[..]).unwrap();
            if spec.template.as_ref().is_some_and(|t| t.nodes.len() >= 3) {
                f(&mut spec);
                *data = spec.encode_to_vec();
            }
        }
    }
    errors_of("bad.tgz", &tgz(&es))
}

#[test]
fn not_a_tgz() {
    let e = errors_of("x.tgz", b"hello, I am not an archive");
    assert!(e.contains("x.tgz: not a .tgz package"), "{e}");
    let e = errors_of("empty.tgz", &[]);
    assert!(e.contains("not a .tgz package"), "{e}");
}

#[test]
fn truncated_archive() {
    let good = fixture("maps.tgz");
    for cut in [10, good.len() / 2, good.len() - 8] {
        let e = errors_of("cut.tgz", &good[..cut]);
        assert!(!e.is_empty(), "cut at {cut} accepted");
        assert!(e.starts_with("cut.tgz"), "{e}");
    }
}

#[test]
fn truncated_and_corrupt_protobuf() {
    let mut es = entries(&fixture("maps.tgz"));
    let (name, data) = es.iter_mut().find(|(n, _)| n.ends_with("_1.pb")).unwrap();
    let entry = name.clone();
    data.truncate(data.len() / 2);
    let e = errors_of("t.tgz", &tgz(&es));
    assert!(
        e.contains(&format!(
            "t.tgz!{entry}: not a valid flyteidl.admin.TaskSpec"
        )),
        "{e}"
    );

    let mut es = entries(&fixture("maps.tgz"));
    let (name, data) = es.iter_mut().find(|(n, _)| n.ends_with("_2.pb")).unwrap();
    let entry = name.clone();
    *data = vec![0xff; 40];
    let e = errors_of("c.tgz", &tgz(&es));
    assert!(
        e.contains(&format!(
            "c.tgz!{entry}: not a valid flyteidl.admin.WorkflowSpec"
        )),
        "{e}"
    );
}

#[test]
fn unexpected_entry_and_empty_package() {
    let mut es = entries(&fixture("batch.tgz"));
    es.push(("notes.txt".into(), b"hi".to_vec()));
    let e = errors_of("n.tgz", &tgz(&es));
    assert!(e.contains("n.tgz!notes.txt: unexpected entry"), "{e}");
    let e = errors_of("none.tgz", &tgz(&[]));
    assert!(e.contains("none.tgz: the package has no entries"), "{e}");
}

#[test]
fn missing_referenced_task() {
    let mut es = entries(&fixture("gates.tgz"));
    es.retain(|(n, _)| !n.contains("make_report_1"));
    let e = errors_of("m.tgz", &tgz(&es));
    assert!(
        e.contains("workflow fixtures.gates.gates_wf: node n0: task_node.reference_id: task `fixtures.gates.make_report` is not in the package"),
        "{e}"
    );
}

#[test]
fn unknown_task_type() {
    let mut es = entries(&fixture("batch.tgz"));
    let (name, data) = es
        .iter_mut()
        .find(|(n, _)| n.ends_with("transcode_1.pb"))
        .unwrap();
    let entry = name.clone();
    let mut spec = TaskSpec::decode(&data[..]).unwrap();
    spec.template.as_mut().unwrap().r#type = "dask".into();
    *data = spec.encode_to_vec();
    let e = errors_of("u.tgz", &tgz(&es));
    assert!(
        e.contains(&format!(
            "u.tgz!{entry}: task fixtures.batch.transcode: type: unknown task type `dask`"
        )),
        "{e}"
    );
}

#[test]
fn cycles() {
    // subworkflows.outer: n0 → n1 → n2; make n0 read n2's output.
    let e = with_workflow("subworkflows.tgz", |spec| {
        let t = spec.template.as_mut().unwrap();
        let last = t.nodes.last().unwrap().id.clone();
        let first = &mut t.nodes[0];
        if let Some(binding_data::Value::Promise(p)) =
            first.inputs[0].binding.as_mut().unwrap().value.as_mut()
        {
            p.node_id = last;
            p.var = "o0".into();
        }
    });
    assert!(e.contains("dependency cycle among nodes n0, n1, n2"), "{e}");
}

#[test]
fn dangling_promise() {
    let e = with_workflow("branches.tgz", |spec| {
        let t = spec.template.as_mut().unwrap();
        let last = t.nodes.last_mut().unwrap();
        if let Some(binding_data::Value::Promise(p)) =
            last.inputs[0].binding.as_mut().unwrap().value.as_mut()
        {
            p.node_id = "n9".into();
        }
    });
    assert!(
        e.contains("node n2: inputs.base: refers to node `n9`, which does not exist"),
        "{e}"
    );
}

#[test]
fn promise_to_missing_output_and_input() {
    let e = with_workflow("branches.tgz", |spec| {
        let t = spec.template.as_mut().unwrap();
        let last = t.nodes.last_mut().unwrap();
        for b in &mut last.inputs {
            if let Some(binding_data::Value::Promise(p)) =
                b.binding.as_mut().unwrap().value.as_mut()
            {
                if p.node_id.is_empty() {
                    p.var = "nope".into();
                } else {
                    p.var = "o7".into();
                }
            }
        }
    });
    assert!(
        e.contains("node n2: inputs.base: the workflow has no input `nope`"),
        "{e}"
    );
    assert!(
        e.contains("node n2: inputs.y: node `n1` has no output `o7`"),
        "{e}"
    );
}

#[test]
fn type_mismatch() {
    // describe(y: int, base: int): bind y to a string constant.
    let e = with_workflow("branches.tgz", |spec| {
        let t = spec.template.as_mut().unwrap();
        let last = t.nodes.last_mut().unwrap();
        let y = last.inputs.iter_mut().find(|b| b.var == "y").unwrap();
        y.binding = Some(updraft_proto::core::BindingData {
            value: Some(binding_data::Value::Scalar(updraft_proto::core::Scalar {
                value: Some(updraft_proto::core::scalar::Value::Primitive(
                    updraft_proto::core::Primitive {
                        value: Some(updraft_proto::core::primitive::Value::StringValue(
                            "seven".into(),
                        )),
                    },
                )),
            })),
            union: None,
        });
    });
    assert!(
        e.contains("node n2: inputs.y: expected int, got str"),
        "{e}"
    );
}

#[test]
fn duplicate_node_ids_and_missing_target() {
    let e = with_workflow("subworkflows.tgz", |spec| {
        let t = spec.template.as_mut().unwrap();
        let first_id = t.nodes[0].id.clone();
        t.nodes[1].id = first_id;
        t.nodes[2].target = None;
    });
    assert!(e.contains("node n0: id: duplicate node id"), "{e}");
    assert!(e.contains("node n2: target: the node has no target"), "{e}");
}

#[test]
fn unbound_input() {
    let e = with_workflow("branches.tgz", |spec| {
        let t = spec.template.as_mut().unwrap();
        t.nodes
            .last_mut()
            .unwrap()
            .inputs
            .retain(|b| b.var != "base");
    });
    assert!(
        e.contains("node n2: inputs.base: input `base` (int) is not bound"),
        "{e}"
    );
}

#[test]
fn recursive_subworkflow() {
    let e = with_workflow("subworkflows.tgz", |spec| {
        // Make the subworkflow `inner` call itself.
        let outer_name = spec
            .template
            .as_ref()
            .unwrap()
            .id
            .as_ref()
            .unwrap()
            .name
            .clone();
        for sub in &mut spec.sub_workflows {
            let me = sub.id.as_ref().unwrap().name.clone();
            if me != outer_name {
                let mut n = sub.nodes[0].clone();
                n.id = "self".into();
                n.inputs.clear();
                n.target = Some(Target::WorkflowNode(updraft_proto::core::WorkflowNode {
                    reference: Some(
                        updraft_proto::core::workflow_node::Reference::SubWorkflowRef(
                            sub.id.clone().unwrap(),
                        ),
                    ),
                }));
                sub.nodes.push(n);
            }
        }
    });
    assert!(e.contains("differs from the copy in"), "{e}");
}

#[test]
fn absurd_sizes() {
    // An entry whose header claims more than the limit.
    let limits = Limits {
        max_entry_bytes: 1024,
        ..Limits::default()
    };
    let es = vec![("0_big_1.pb".to_string(), vec![0u8; 4096])];
    let e = Package::from_tgz("big.tgz", &tgz(&es), limits)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("big.tgz!0_big_1.pb: entry is 4096 bytes, over the 1024 byte limit"),
        "{e}"
    );
    // A gzip bomb: a small archive that inflates past the total limit.
    let limits = Limits {
        max_total_bytes: 1 << 20,
        max_entry_bytes: 1 << 20,
        ..Limits::default()
    };
    let es: Vec<_> = (0..8)
        .map(|i| (format!("{i}_x_1.pb"), vec![0u8; 512 << 10]))
        .collect();
    let bomb = tgz(&es);
    assert!(bomb.len() < 64 << 10);
    let e = Package::from_tgz("bomb.tgz", &bomb, limits)
        .unwrap_err()
        .to_string();
    assert!(e.contains("over the 1048576 byte limit"), "{e}");
    // An archive over the compressed limit.
    let limits = Limits {
        max_archive_bytes: 100,
        ..Limits::default()
    };
    let e = Package::from_tgz("huge.tgz", &fixture("maps.tgz"), limits)
        .unwrap_err()
        .to_string();
    assert!(e.contains("huge.tgz: archive is"), "{e}");
}

fn yaml_errors(text: &str) -> String {
    match yaml::load("w.yaml", text) {
        Err(p) => p.to_string(),
        Ok(pkg) => compile(&pkg)
            .err()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    }
}

const GOOD: &str = r#"
version: 1
image: img:1
tasks:
  inc: {type: python, module: m, function: inc, inputs: {x: int}, outputs: {y: int}}
workflows:
  wf:
    inputs: {x: int}
    outputs: {y: "${b.y}"}
    nodes:
      - id: a
        task: inc
        inputs: {x: "${inputs.x}"}
      - id: b
        task: inc
        inputs: {x: "${a.y}"}
"#;

#[test]
fn good_yaml_compiles() {
    assert_eq!(yaml_errors(GOOD), "");
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let e = yaml_errors("version: 1\ntasks:\n  inc: {type: python\n  bad: [\n");
    assert!(e.starts_with("w.yaml: YAML:"), "{e}");
    assert!(e.contains("line 4 column"), "{e}");
}

#[test]
fn yaml_unknown_keys() {
    let e = yaml_errors(&GOOD.replace("module: m,", "modul: m,"));
    assert!(e.contains("unknown field `modul`"), "{e}");
    assert!(e.contains("line 5 column"), "{e}");
    let e = yaml_errors(&GOOD.replace("version: 1", "version: 1\nextra: true"));
    assert!(e.contains("unknown field `extra`"), "{e}");
}

#[test]
fn yaml_semantic_errors_name_entity_node_and_field() {
    let e = yaml_errors(&GOOD.replace("${a.y}", "${a.z}"));
    assert!(
        e.contains("w.yaml: workflow wf: node b: inputs.x: node `a` has no output `z`"),
        "{e}"
    );
    let e = yaml_errors(&GOOD.replace("x: \"${a.y}\"", "x: \"${c.y}\""));
    assert!(
        e.contains("node b: inputs.x: refers to node `c`, which does not exist"),
        "{e}"
    );
    let e = yaml_errors(&GOOD.replace("x: \"${a.y}\"", "x: seven"));
    assert!(
        e.contains("node b: inputs.x: expected int, got a string"),
        "{e}"
    );
    let e = yaml_errors(&GOOD.replace("type: python", "type: pythn"));
    assert!(
        e.contains("task inc: type: unknown task type `pythn`"),
        "{e}"
    );
    let e = yaml_errors(&GOOD.replace("{x: int}, outputs", "{x: \"lst[int]\"}, outputs"));
    assert!(
        e.contains("task inc: inputs.x: bad type `lst[int]`: unknown type `lst`"),
        "{e}"
    );
    let e = yaml_errors(&GOOD.replace("id: b", "id: a"));
    assert!(e.contains("node a: id: duplicate node id"), "{e}");
    let e = yaml_errors(&GOOD.replace("x: \"${inputs.x}\"", "x: \"${b.y}\""));
    assert!(e.contains("dependency cycle among nodes a, b"), "{e}");
    let e = yaml_errors(&GOOD.replace("version: 1", "version: 2"));
    assert!(e.contains("version 2 is not supported"), "{e}");
}

#[test]
fn absurd_yaml_does_not_overflow() {
    let deep = format!(
        "version: 1\ntasks:\n  t: {{type: python, module: m, function: f, inputs: {{x: \"{}int{}\"}}}}\n",
        "list[".repeat(5000),
        "]".repeat(5000)
    );
    let e = yaml_errors(&deep);
    assert!(e.contains("nested deeper"), "{e}");
    let nested = "[".repeat(100_000);
    let e = yaml_errors(&format!("version: 1\ntasks: {nested}"));
    assert!(
        e.contains("w.yaml: YAML: nested deeper than 128 levels at line 2 column 136"),
        "{e}"
    );
    // Brackets inside quotes and comments do not count.
    let quoted = format!("version: 1\n# {nested}\nimage: \"{nested}\"\ntasks: {{}}\n");
    assert!(
        yaml_errors(&quoted).contains("defines no tasks"),
        "{}",
        yaml_errors(&quoted)
    );
}

#[test]
fn recursive_workflows_are_rejected() {
    let e = yaml_errors(
        r#"
version: 1
tasks:
  t: {type: echo, inputs: {x: int}, outputs: {x: int}}
workflows:
  a:
    inputs: {x: int}
    nodes:
      - {id: call_b, workflow: b, inputs: {x: "${inputs.x}"}}
  b:
    inputs: {x: int}
    nodes:
      - {id: call_a, workflow: a, inputs: {x: "${inputs.x}"}}
"#,
    );
    assert!(
        e.contains("workflow `a` calls itself (through a → b)"),
        "{e}"
    );
}
