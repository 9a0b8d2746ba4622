//! The workflow's graph as SVG, coloured by phase: nodes in layers by what they wait for, a branch's
//! cases and a subworkflow's nodes below it (dashed), maps drawn as stacked boxes, gates as hexagons.

use std::collections::BTreeMap;
use std::fmt::Write;

use updraft_engine::exec::history::{ExecutionView, GraphNode, NodeView};

use crate::{escape, node_anchor, phase_colour};

const W: i64 = 170;
const H: i64 = 40;
const GAP_X: i64 = 30;
const GAP_Y: i64 = 46;
const PAD: i64 = 12;

/// The nodes a page shows: all but a map's own sub-node (its elements are the map's).
pub fn shown(view: &ExecutionView) -> Vec<&NodeView> {
    let hidden = |i: u32| -> bool {
        view.graph.as_ref().is_some_and(|g| {
            g.nodes
                .get(i as usize)
                .and_then(|n| n.parent)
                .and_then(|p| g.nodes.get(p as usize))
                .is_some_and(|p| p.kind == "map")
        })
    };
    let mut nodes: Vec<&NodeView> = view.nodes.iter().filter(|n| !hidden(n.index)).collect();
    nodes.sort_by_key(|n| n.index);
    nodes
}

/// Each shown node's layer: one past the deepest node it waits for, and a scope's nodes below their
/// scope node.
fn layers(graph: &[GraphNode], shown: &[u32]) -> BTreeMap<u32, usize> {
    fn depth(
        i: u32,
        graph: &[GraphNode],
        memo: &mut BTreeMap<u32, usize>,
        visiting: &mut Vec<u32>,
    ) -> usize {
        if let Some(&d) = memo.get(&i) {
            return d;
        }
        if visiting.contains(&i) || visiting.len() > 10_000 {
            return 0;
        }
        visiting.push(i);
        let Some(n) = graph.get(i as usize) else {
            visiting.pop();
            return 0;
        };
        let mut d = n.parent.map_or(0, |p| depth(p, graph, memo, visiting) + 1);
        for &u in &n.upstream {
            d = d.max(depth(u, graph, memo, visiting) + 1);
        }
        visiting.pop();
        memo.insert(i, d);
        d
    }
    let mut memo = BTreeMap::new();
    shown
        .iter()
        .map(|&i| (i, depth(i, graph, &mut memo, &mut Vec::new())))
        .collect()
}

/// The graph of `view` as an SVG element (nodes link to their rows in the page's table).
pub fn graph_svg(view: &ExecutionView) -> String {
    let shown = shown(view);
    let phase_of: BTreeMap<u32, &str> = shown.iter().map(|n| (n.index, n.phase.as_str())).collect();
    let empty = Vec::new();
    let graph = view.graph.as_ref().map_or(&empty, |g| &g.nodes);
    let indices: Vec<u32> = shown.iter().map(|n| n.index).collect();
    let layer = layers(graph, &indices);
    let mut rows: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for &i in &indices {
        rows.entry(layer.get(&i).copied().unwrap_or(0))
            .or_default()
            .push(i);
    }
    let widest = rows.values().map(Vec::len).max().unwrap_or(1) as i64;
    let width = PAD * 2 + widest * (W + GAP_X) - GAP_X;
    let height = PAD * 2 + rows.len() as i64 * (H + GAP_Y) - GAP_Y;
    let mut at: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
    for (r, (_, row)) in rows.iter().enumerate() {
        // Each row centred.
        let offset = (widest - row.len() as i64) * (W + GAP_X) / 2;
        for (c, &i) in row.iter().enumerate() {
            at.insert(
                i,
                (
                    PAD + offset + c as i64 * (W + GAP_X),
                    PAD + r as i64 * (H + GAP_Y),
                ),
            );
        }
    }
    let mut out = format!(
        r##"<svg class="graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="graph of {}"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#78909c"/></marker></defs>"##,
        escape(&view.name)
    );
    // Edges first, under the nodes.
    for &i in &indices {
        let Some(n) = graph.get(i as usize) else {
            continue;
        };
        let Some(&(x, y)) = at.get(&i) else { continue };
        let mut from: Vec<(u32, bool)> = n.upstream.iter().map(|&u| (u, false)).collect();
        if let Some(p) = n.parent {
            from.push((p, true));
        }
        for (u, dashed) in from {
            if let Some(&(ux, uy)) = at.get(&u) {
                let _ = write!(
                    out,
                    r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#78909c" stroke-width="1.5"{} marker-end="url(#arrow)"/>"##,
                    ux + W / 2,
                    uy + H,
                    x + W / 2,
                    y,
                    if dashed {
                        r#" stroke-dasharray="5 4""#
                    } else {
                        ""
                    }
                );
            }
        }
    }
    for n in &shown {
        let Some(&(x, y)) = at.get(&n.index) else {
            continue;
        };
        let g = graph.get(n.index as usize);
        let kind = g.map_or("", |g| g.kind.as_str());
        let (fill, text) = phase_colour(phase_of.get(&n.index).copied().unwrap_or(""));
        let _ = write!(
            out,
            r##"<a href="#{}"><g class="node" data-node="{}" data-phase="{}"><title>{} ({}): {}</title>"##,
            escape(&node_anchor(&view.name, &n.id)),
            escape(&n.id),
            escape(&n.phase),
            escape(&n.id),
            escape(&g.map_or(String::new(), |g| {
                if g.runs.is_empty() {
                    g.kind.to_string()
                } else {
                    format!("{} {}", g.kind, g.runs)
                }
            })),
            escape(&n.phase)
        );
        match kind {
            "map" => {
                for k in [2, 1] {
                    let _ = write!(
                        out,
                        r##"<rect x="{}" y="{}" width="{W}" height="{H}" rx="6" fill="{fill}" opacity="0.45" stroke="#455a64"/>"##,
                        x + 4 * k,
                        y - 4 * k
                    );
                }
                let _ = write!(
                    out,
                    r##"<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6" fill="{fill}" stroke="#455a64"/>"##
                );
            }
            "sleep" | "approve" | "signal" => {
                let _ = write!(
                    out,
                    r##"<polygon points="{},{y} {},{y} {},{} {},{} {},{} {x},{}" fill="{fill}" stroke="#455a64"/>"##,
                    x + 12,
                    x + W - 12,
                    x + W,
                    y + H / 2,
                    x + W - 12,
                    y + H,
                    x + 12,
                    y + H,
                    y + H / 2
                );
            }
            "branch" | "subworkflow" => {
                let _ = write!(
                    out,
                    r##"<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="14" fill="{fill}" stroke="#455a64" stroke-dasharray="4 3"/>"##
                );
            }
            _ => {
                let _ = write!(
                    out,
                    r##"<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6" fill="{fill}" stroke="#455a64"/>"##
                );
            }
        }
        let label: String = n.id.chars().take(22).collect();
        // A definition's nodes (no phase) show their kind alone.
        let sub = match (&n.array, kind) {
            (Some(a), _) => format!("{}/{} · {}", a.succeeded, a.size, n.phase),
            (None, "") => n.phase.clone(),
            (None, k) if n.phase.is_empty() => k.to_string(),
            (None, k) => format!("{k} · {}", n.phase),
        };
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="13" font-weight="600" text-anchor="middle" fill="{text}">{}</text><text x="{}" y="{}" font-size="11" text-anchor="middle" fill="{text}">{}</text></g></a>"#,
            x + W / 2,
            y + 17,
            escape(&label),
            x + W / 2,
            y + 32,
            escape(&sub)
        );
    }
    out.push_str("</svg>");
    out
}
