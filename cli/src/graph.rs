//! Draws a compiled workflow as Mermaid or Graphviz DOT: branches and subworkflows as clusters, maps as
//! stacked nodes, gates as hexagons; edges are the derived dependencies.

use std::fmt::Write;

use clap::ValueEnum;
use updraft_engine::CompiledWorkflow;
use updraft_engine::compile::{
    CompiledPackage, Gate, NodeIdx, NodeKind, Otherwise, SuccessCriteria,
};

/// Output format of `updraft graph`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// Mermaid flowchart (renders on GitHub).
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

/// Renders `wf` in `format`.
pub fn render(wf: &CompiledWorkflow, pkg: &CompiledPackage, format: Format) -> String {
    let mut g = Graph {
        wf,
        pkg,
        out: String::new(),
        format,
    };
    g.begin();
    for &r in &wf.roots {
        g.node(r, 1);
    }
    if let Some(f) = wf.failure_node {
        g.node(f, 1);
    }
    for (i, n) in wf.nodes.iter().enumerate() {
        for &u in &n.upstream {
            g.edge(u, i as NodeIdx, None);
        }
    }
    g.end();
    g.out
}

struct Graph<'a> {
    wf: &'a CompiledWorkflow,
    pkg: &'a CompiledPackage,
    out: String,
    format: Format,
}

fn key(idx: NodeIdx) -> String {
    format!("node{idx}")
}

fn escape(s: &str) -> String {
    s.replace('"', "'")
}

impl Graph<'_> {
    fn begin(&mut self) {
        let name = escape(&self.wf.name);
        match self.format {
            Format::Mermaid => {
                let _ = writeln!(self.out, "---\ntitle: {name}\n---\nflowchart TD");
            }
            Format::Dot => {
                let _ = writeln!(
                    self.out,
                    "digraph \"{name}\" {{\n  rankdir=TB;\n  node [fontname=\"Helvetica\"];"
                );
            }
        }
    }

    fn end(&mut self) {
        if let Format::Dot = self.format {
            self.out.push_str("}\n");
        }
    }

    /// `name (plugin)` for a task.
    fn task_label(&self, task: &str) -> String {
        let plugin = self.pkg.tasks.get(task).map_or("?", |t| t.plugin.name());
        format!("{} ({plugin})", short(task))
    }

    fn label(&self, idx: NodeIdx) -> String {
        let n = self.wf.node(idx);
        let what = match &n.kind {
            NodeKind::Task { task } => self.task_label(task),
            NodeKind::Array {
                sub,
                parallelism,
                success,
                ..
            } => {
                let inner = match &self.wf.node(*sub).kind {
                    NodeKind::Task { task } => self.task_label(task),
                    _ => "?".into(),
                };
                let mut s = format!("{}: map {inner}", n.id);
                if let Some(p) = parallelism {
                    let _ = write!(s, ", parallelism {p}");
                }
                match success {
                    SuccessCriteria::All => {}
                    SuccessCriteria::MinSuccesses(m) => {
                        let _ = write!(s, ", min {m} ok");
                    }
                    SuccessCriteria::MinSuccessRatio(r) => {
                        let _ = write!(s, ", min {:.0}% ok", r * 100.0);
                    }
                }
                return s;
            }
            NodeKind::Branch { .. } => "branch".into(),
            NodeKind::Subworkflow { workflow, .. } => format!("subworkflow {}", short(workflow)),
            NodeKind::LaunchPlan { launch_plan } => format!("launch plan {launch_plan}"),
            NodeKind::Gate(Gate::Sleep(d)) => format!("sleep {}s", d.as_secs()),
            NodeKind::Gate(Gate::Approve { signal_id }) => format!("approve {signal_id}"),
            NodeKind::Gate(Gate::Signal { signal_id, .. }) => format!("signal {signal_id}"),
        };
        format!("{}: {what}", n.id)
    }

    fn node(&mut self, idx: NodeIdx, depth: usize) {
        let n = self.wf.node(idx);
        let pad = "  ".repeat(depth);
        let label = escape(&self.label(idx));
        match &n.kind {
            NodeKind::Branch { cases, otherwise } => {
                self.open_cluster(idx, &label, &pad);
                for (i, (_, child)) in cases.iter().enumerate() {
                    self.node(*child, depth + 1);
                    self.edge(
                        idx,
                        *child,
                        Some(if i == 0 {
                            "if".into()
                        } else {
                            format!("elif {i}")
                        }),
                    );
                }
                match otherwise {
                    Otherwise::Node(child) => {
                        self.node(*child, depth + 1);
                        self.edge(idx, *child, Some("else".into()));
                    }
                    Otherwise::Fail(msg) => {
                        let fail = format!("{}_fail", key(idx));
                        let msg = escape(msg);
                        match self.format {
                            Format::Mermaid => {
                                let _ = writeln!(self.out, "{pad}  {fail}{{{{\"fail: {msg}\"}}}}");
                                let _ =
                                    writeln!(self.out, "{pad}  {} -- else --> {fail}", key(idx));
                            }
                            Format::Dot => {
                                let _ = writeln!(
                                    self.out,
                                    "{pad}  {fail} [label=\"fail: {msg}\", shape=octagon, color=red];"
                                );
                                let _ = writeln!(
                                    self.out,
                                    "{pad}  {} -> {fail} [label=\"else\"];",
                                    key(idx)
                                );
                            }
                        }
                    }
                    Otherwise::Nothing => {}
                }
                self.close_cluster(&pad);
            }
            NodeKind::Subworkflow { children, .. } => {
                self.open_cluster(idx, &label, &pad);
                for c in children.clone() {
                    self.node(c, depth + 1);
                }
                self.close_cluster(&pad);
            }
            _ => self.leaf(idx, &label, &pad),
        }
    }

    fn open_cluster(&mut self, idx: NodeIdx, label: &str, pad: &str) {
        match self.format {
            Format::Mermaid => {
                let _ = writeln!(self.out, "{pad}subgraph {}_group [\"{label}\"]", key(idx));
                let _ = writeln!(self.out, "{pad}  {}{{\"{label}\"}}", key(idx));
            }
            Format::Dot => {
                let _ = writeln!(
                    self.out,
                    "{pad}subgraph cluster_{} {{\n{pad}  label=\"{label}\";",
                    key(idx)
                );
                let _ = writeln!(
                    self.out,
                    "{pad}  {} [label=\"{label}\", shape=diamond];",
                    key(idx)
                );
            }
        }
    }

    fn close_cluster(&mut self, pad: &str) {
        let close = match self.format {
            Format::Mermaid => "end",
            Format::Dot => "}",
        };
        let _ = writeln!(self.out, "{pad}{close}");
    }

    fn leaf(&mut self, idx: NodeIdx, label: &str, pad: &str) {
        let n = self.wf.node(idx);
        let (open, close, shape) = match &n.kind {
            NodeKind::Array { .. } => ("[[", "]]", "box3d"),
            NodeKind::Gate(_) => ("{{", "}}", "hexagon"),
            NodeKind::LaunchPlan { .. } => ("[/", "/]", "parallelogram"),
            _ => ("[", "]", "box"),
        };
        let failure = Some(idx) == self.wf.failure_node;
        match self.format {
            Format::Mermaid => {
                let label = if failure {
                    format!("on failure: {label}")
                } else {
                    label.to_string()
                };
                let _ = writeln!(self.out, "{pad}{}{open}\"{label}\"{close}", key(idx));
            }
            Format::Dot => {
                let extra = if failure {
                    ", color=red, style=dashed"
                } else {
                    ""
                };
                let _ = writeln!(
                    self.out,
                    "{pad}{} [label=\"{label}\", shape={shape}{extra}];",
                    key(idx)
                );
            }
        }
    }

    fn edge(&mut self, from: NodeIdx, to: NodeIdx, label: Option<String>) {
        match (self.format, label) {
            (Format::Mermaid, None) => {
                let _ = writeln!(self.out, "  {} --> {}", key(from), key(to));
            }
            (Format::Mermaid, Some(l)) => {
                let _ = writeln!(self.out, "  {} -- {l} --> {}", key(from), key(to));
            }
            (Format::Dot, None) => {
                let _ = writeln!(self.out, "  {} -> {};", key(from), key(to));
            }
            (Format::Dot, Some(l)) => {
                let _ = writeln!(
                    self.out,
                    "  {} -> {} [label=\"{l}\", style=dashed];",
                    key(from),
                    key(to)
                );
            }
        }
    }
}

/// The last dotted segment of an entity name (`fixtures.maps.square` → `square`); flytekit's generated
/// map-task names (`map_square_<digest>-arraynode`) show as the mapped function (`square`).
fn short(name: &str) -> &str {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.strip_prefix("map_")
        .and_then(|r| r.strip_suffix("-arraynode"))
        .and_then(|r| r.rsplit_once('_'))
        .filter(|(_, digest)| digest.len() == 32 && digest.chars().all(|c| c.is_ascii_hexdigit()))
        .map_or(last, |(function, _)| function)
}
