//! Compile benchmark: prints figures, asserts nothing on time.
//!
//! `cargo run --release -p updraft-engine --example compile_bench` runs each case in its own process
//! (so peak memory is per case):
//! - `dag10k`: a generated 10,000-node workflow (100 layers of 100 tasks, each reading two nodes of the
//!   layer before), packaged as a .tgz, decoded and compiled;
//! - `yaml10k`: the same workflow written as Updraft YAML, parsed, converted and compiled;
//! - `map100k`: a map node over a 100,000-element list bound as a constant, packaged and compiled.

#![allow(clippy::unwrap_used)]

mod common;

use common::peak_rss_mb;

use std::time::Instant;

use updraft_engine::{Limits, Package, compile, yaml};
use updraft_proto::Message;
use updraft_proto::admin::{TaskSpec, WorkflowSpec};
use updraft_proto::core::{
    ArrayNode, Binding, BindingData, BindingDataCollection, Container, Identifier, LiteralType,
    Node, OutputReference, Primitive, ResourceType, Scalar, SimpleType, TaskNode, TaskTemplate,
    TypedInterface, Variable, VariableMap, WorkflowTemplate, binding_data, literal_type, node,
    primitive, scalar, task_node, task_template,
};

const LAYERS: usize = 100;
const WIDTH: usize = 100;
const MAP_SIZE: usize = 100_000;

fn int() -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::Simple(SimpleType::Integer as i32)),
        ..Default::default()
    }
}

fn vars(names: &[&str], t: &LiteralType) -> Option<VariableMap> {
    Some(VariableMap {
        variables: names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Variable {
                        r#type: Some(t.clone()),
                        ..Default::default()
                    },
                )
            })
            .collect(),
    })
}

fn id(kind: ResourceType, name: &str) -> Option<Identifier> {
    Some(Identifier {
        resource_type: kind as i32,
        name: name.into(),
        ..Default::default()
    })
}

fn task(name: &str, inputs: &[&str], t: &LiteralType, out: &LiteralType) -> TaskTemplate {
    TaskTemplate {
        id: id(ResourceType::Task, name),
        r#type: "python-task".into(),
        interface: Some(TypedInterface {
            inputs: vars(inputs, t),
            outputs: vars(&["o0"], out),
        }),
        target: Some(task_template::Target::Container(Container {
            image: "img:1".into(),
            args: vec!["pyflyte-execute".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn promise(node: &str, var: &str) -> Option<BindingData> {
    Some(BindingData {
        value: Some(binding_data::Value::Promise(OutputReference {
            node_id: node.into(),
            var: var.into(),
            attr_path: vec![],
        })),
        union: None,
    })
}

fn task_node(id_: String, task: &str, inputs: Vec<Binding>) -> Node {
    Node {
        id: id_,
        inputs,
        target: Some(node::Target::TaskNode(TaskNode {
            reference: Some(task_node::Reference::ReferenceId(
                id(ResourceType::Task, task).unwrap(),
            )),
            overrides: None,
        })),
        ..Default::default()
    }
}

fn tgz(entries: Vec<(String, Vec<u8>)>) -> Vec<u8> {
    updraft_engine::package::write_archive(&entries).unwrap()
}

fn package(task: TaskTemplate, wf: WorkflowTemplate) -> Vec<u8> {
    tgz(vec![
        (
            "0_task_1.pb".into(),
            TaskSpec {
                template: Some(task),
                description: None,
            }
            .encode_to_vec(),
        ),
        (
            "1_wf_2.pb".into(),
            WorkflowSpec {
                template: Some(wf),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ])
}

fn dag_package() -> Vec<u8> {
    let t = int();
    let mut nodes = Vec::with_capacity(LAYERS * WIDTH);
    for l in 0..LAYERS {
        for w in 0..WIDTH {
            let inputs = if l == 0 {
                vec![
                    Binding {
                        var: "a".into(),
                        binding: promise("", "x"),
                    },
                    Binding {
                        var: "b".into(),
                        binding: promise("", "x"),
                    },
                ]
            } else {
                vec![
                    Binding {
                        var: "a".into(),
                        binding: promise(&format!("n{}_{w}", l - 1), "o0"),
                    },
                    Binding {
                        var: "b".into(),
                        binding: promise(&format!("n{}_{}", l - 1, (w + 1) % WIDTH), "o0"),
                    },
                ]
            };
            nodes.push(task_node(format!("n{l}_{w}"), "add", inputs));
        }
    }
    let wf = WorkflowTemplate {
        id: id(ResourceType::Workflow, "dag"),
        interface: Some(TypedInterface {
            inputs: vars(&["x"], &t),
            outputs: vars(&["o0"], &t),
        }),
        nodes,
        outputs: vec![Binding {
            var: "o0".into(),
            binding: promise(&format!("n{}_0", LAYERS - 1), "o0"),
        }],
        ..Default::default()
    };
    package(task("add", &["a", "b"], &t, &t), wf)
}

fn dag_yaml() -> String {
    let mut s = String::from(
        "version: 1\nimage: img:1\ntasks:\n  add: {type: python, module: m, function: add, inputs: {a: int, b: int}, outputs: {o0: int}}\nworkflows:\n  dag:\n    inputs: {x: int}\n    outputs: {o0: \"${n99_0.o0}\"}\n    nodes:\n",
    );
    for l in 0..LAYERS {
        for w in 0..WIDTH {
            let (a, b) = if l == 0 {
                ("${inputs.x}".to_string(), "${inputs.x}".to_string())
            } else {
                (
                    format!("${{n{}_{w}.o0}}", l - 1),
                    format!("${{n{}_{}.o0}}", l - 1, (w + 1) % WIDTH),
                )
            };
            s.push_str(&format!(
                "      - {{id: n{l}_{w}, task: add, inputs: {{a: \"{a}\", b: \"{b}\"}}}}\n"
            ));
        }
    }
    s
}

fn map_package() -> Vec<u8> {
    let list = LiteralType {
        r#type: Some(literal_type::Type::CollectionType(Box::new(int()))),
        ..Default::default()
    };
    let items = (0..MAP_SIZE as i64)
        .map(|i| BindingData {
            value: Some(binding_data::Value::Scalar(Scalar {
                value: Some(scalar::Value::Primitive(Primitive {
                    value: Some(primitive::Value::Integer(i)),
                })),
            })),
            union: None,
        })
        .collect();
    let inputs = vec![Binding {
        var: "x".into(),
        binding: Some(BindingData {
            value: Some(binding_data::Value::Collection(BindingDataCollection {
                bindings: items,
            })),
            union: None,
        }),
    }];
    let sub = task_node("n0-item".into(), "square", inputs.clone());
    let map = Node {
        id: "n0".into(),
        inputs,
        target: Some(node::Target::ArrayNode(Box::new(ArrayNode {
            node: Some(Box::new(sub)),
            ..Default::default()
        }))),
        ..Default::default()
    };
    let wf = WorkflowTemplate {
        id: id(ResourceType::Workflow, "map"),
        interface: Some(TypedInterface {
            inputs: None,
            outputs: vars(&["o0"], &list),
        }),
        nodes: vec![map],
        outputs: vec![Binding {
            var: "o0".into(),
            binding: promise("n0", "o0"),
        }],
        ..Default::default()
    };
    package(task("square", &["x"], &list, &list), wf)
}

fn run_case(case: &str) {
    let t0 = Instant::now();
    let (label, pkg, input_bytes) = match case {
        "dag10k" | "map100k" => {
            let bytes = if case == "dag10k" {
                dag_package()
            } else {
                map_package()
            };
            let made = t0.elapsed();
            let t1 = Instant::now();
            let pkg = Package::from_tgz("bench.tgz", &bytes, Limits::default()).unwrap();
            println!(
                "{case}: generated in {made:.2?}; decoded {} KiB package in {:.2?}",
                bytes.len() / 1024,
                t1.elapsed()
            );
            (case, pkg, bytes.len())
        }
        "yaml10k" => {
            let text = dag_yaml();
            let t1 = Instant::now();
            let pkg = yaml::load("bench.yaml", &text).unwrap();
            println!(
                "{case}: parsed and converted {} KiB of YAML in {:.2?}",
                text.len() / 1024,
                t1.elapsed()
            );
            (case, pkg, text.len())
        }
        other => panic!("unknown case {other}"),
    };
    let t2 = Instant::now();
    let compiled = compile(&pkg).unwrap_or_else(|p| panic!("{p}"));
    let took = t2.elapsed();
    let nodes: usize = compiled.workflows.values().map(|w| w.nodes.len()).sum();
    println!(
        "{label}: compiled {nodes} nodes in {took:.2?} ({:.2} µs/node); input {} KiB; peak RSS {:.1} MiB",
        took.as_secs_f64() * 1e6 / nodes as f64,
        input_bytes / 1024,
        peak_rss_mb()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(case) = args.first() {
        run_case(case);
        return;
    }
    let me = std::env::current_exe().unwrap();
    for case in ["dag10k", "yaml10k", "map100k"] {
        let status = std::process::Command::new(&me).arg(case).status().unwrap();
        assert!(status.success(), "{case} failed");
    }
}
