//! Draws an execution's history ([`ExecutionView`], as both runtimes record it): its graph coloured by
//! phase, a timeline of every attempt, and each node's outcome. [`report`] makes one self-contained
//! HTML file of it (no script, no stylesheet or font from elsewhere) to attach to a ticket; the pieces
//! are the console's too. Pure: no I/O.

mod graph;
mod html;
pub mod pages;
mod timeline;

use std::fmt::Write;

use updraft_engine::exec::history::{AttemptView, ErrorView, ExecutionView, NodeView};

pub use graph::graph_svg;
pub use html::escape;
pub use timeline::timeline_svg;

/// The colour of a phase (fill, text).
pub fn phase_colour(phase: &str) -> (&'static str, &'static str) {
    match phase {
        "Succeeded" => ("#2e7d32", "#fff"),
        "Failed" | "Failing" => ("#c62828", "#fff"),
        "Running" => ("#1565c0", "#fff"),
        "Queued" => ("#90a4ae", "#fff"),
        "Aborted" | "TimedOut" => ("#ef6c00", "#fff"),
        "Skipped" => ("#e0e0e0", "#555"),
        _ => ("#f5f5f5", "#555"),
    }
}

/// The CSS of the report and the console's pages.
pub const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:16px 24px;background:#263238;color:#eceff1}
header h1{margin:0 0 4px;font-size:20px}
header .meta{color:#b0bec5}
main{padding:8px 24px 32px}
section.execution{margin-top:16px;background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 16px 16px}
h2{font-size:16px;margin:16px 0 8px}
h3{font-size:15px;margin:8px 0}
.phase{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.error{background:#ffebee;border-left:4px solid #c62828;padding:8px 12px;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f5f5f5}
td.mono,span.mono{font-family:ui-monospace,monospace;font-size:12px}
.scroll{overflow-x:auto}
svg text{font-family:system-ui,sans-serif}
.muted{color:#757575}
a{color:#1565c0}
"#;

/// A phase as a coloured label.
pub fn phase_badge(phase: &str) -> String {
    let (bg, fg) = phase_colour(phase);
    format!(
        r#"<span class="phase" style="background:{bg};color:{fg}">{}</span>"#,
        escape(phase)
    )
}

/// Milliseconds as a short duration (`850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`).
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Milliseconds since the Unix epoch as a UTC date and time (`2026-12-01 13:55:07 UTC`).
pub fn timestamp(ms: u64) -> String {
    let t = updraft_proto::wkt::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: 0,
    };
    updraft_engine::template::datetime_text(&t)
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

fn error_text(e: &ErrorView) -> String {
    let node = if e.node.is_empty() {
        String::new()
    } else {
        format!("node {}: ", e.node)
    };
    format!("{node}{} [{}, {}]", e.message, e.code, e.kind)
}

/// The anchor of node `id` of execution `exec` in a page.
pub fn node_anchor(exec: &str, id: &str) -> String {
    format!("node-{}-{}", exec, id).replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
}

/// One self-contained HTML page of execution `view` (and its children): graph, timeline, nodes.
pub fn report(view: &ExecutionView, made_ms: u64) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{name} ({phase}) · Updraft</title><style>{STYLE}</style></head><body><header><h1>{name} {badge}</h1><div class="meta">{meta}</div></header><main>"#,
        name = escape(&view.name),
        phase = escape(&view.phase),
        badge = phase_badge(&view.phase),
        meta = summary_line(view),
    );
    execution_section(&mut out, view, 0);
    let _ = write!(
        out,
        r#"<p class="muted">Made by <code>updraft report</code> on {}.</p></main></body></html>"#,
        timestamp(made_ms)
    );
    out.push('\n');
    out
}

/// Workflow, start, end and duration of `view`, as one line of HTML.
pub fn summary_line(view: &ExecutionView) -> String {
    let mut parts = vec![format!("workflow {}", escape(&view.workflow))];
    if let Some(s) = view.started_ms {
        parts.push(format!("started {}", timestamp(s)));
        match view.ended_ms {
            Some(e) => parts.push(format!(
                "ended {} (took {})",
                timestamp(e),
                duration(e.saturating_sub(s))
            )),
            None => parts.push("running".into()),
        }
    }
    parts.join(" · ")
}

fn execution_section(out: &mut String, view: &ExecutionView, depth: usize) {
    let _ = write!(
        out,
        r#"<section class="execution" id="{id}">"#,
        id = escape(&node_anchor(&view.name, ""))
    );
    if depth > 0 {
        let _ = write!(
            out,
            "<h2>{} {}</h2><div class=\"muted\">{}</div>",
            escape(&view.name),
            phase_badge(&view.phase),
            summary_line(view)
        );
    }
    if let Some(e) = &view.error {
        let _ = write!(
            out,
            r#"<div class="error">{}</div>"#,
            escape(&error_text(e))
        );
    }
    let _ = write!(
        out,
        r#"<h2>Graph</h2><div class="scroll">{}</div><h2>Timeline</h2><div class="scroll">{}</div><h2>Nodes</h2>"#,
        graph_svg(view),
        timeline_svg(view)
    );
    nodes_table(out, view);
    if let Some(o) = &view.outputs {
        let _ = write!(
            out,
            r#"<h2>Outputs</h2><pre class="mono">{}</pre>"#,
            escape(&serde_json::to_string_pretty(o).unwrap_or_default())
        );
    }
    for c in &view.children {
        let _ = write!(
            out,
            r##"<h3>Child of node <a href="#{}">{}</a></h3>"##,
            escape(&node_anchor(&view.name, &c.node)),
            escape(&c.node)
        );
        execution_section(out, &c.execution, depth + 1);
    }
    out.push_str("</section>");
}

fn attempt_cell(a: &AttemptView) -> String {
    let mut s = format!(
        "#{} {}",
        a.attempt,
        a.phase
            .as_deref()
            .map_or_else(|| phase_badge("Running"), phase_badge)
    );
    if let (Some(e), q) = (a.ended_ms, a.queued_ms) {
        let _ = write!(s, " {}", duration(e.saturating_sub(q)));
    }
    if a.cache != "off" {
        let _ = write!(
            s,
            " <span class=\"muted\">cache {}</span>",
            escape(&a.cache)
        );
    }
    let _ = write!(
        s,
        " <span class=\"mono\">{}</span>",
        escape(a.external.as_deref().unwrap_or(&a.name))
    );
    if let Some(e) = &a.error {
        let _ = write!(s, r#"<div class="error">{}</div>"#, escape(&error_text(e)));
    }
    for l in &a.logs {
        if l.starts_with("https://") {
            let _ = write!(
                s,
                r#"<div><a href="{0}" rel="noreferrer">logs</a></div>"#,
                escape(l)
            );
        } else {
            let _ = write!(s, r#"<div class="mono">{}</div>"#, escape(l));
        }
    }
    s
}

fn node_kind(view: &ExecutionView, n: &NodeView) -> String {
    view.graph
        .as_ref()
        .and_then(|g| g.nodes.get(n.index as usize))
        .map(|g| {
            if g.runs.is_empty() {
                g.kind.to_string()
            } else {
                format!("{} {}", g.kind, g.runs)
            }
        })
        .unwrap_or_default()
}

fn nodes_table(out: &mut String, view: &ExecutionView) {
    out.push_str(
        "<table><tr><th>node</th><th>kind</th><th>phase</th><th>took</th><th>attempts</th></tr>",
    );
    for n in graph::shown(view) {
        let took = match (n.phases.first(), n.phases.last()) {
            (Some(a), Some(b)) if b.at_ms >= a.at_ms => duration(b.at_ms - a.at_ms),
            _ => String::new(),
        };
        let mut attempts: Vec<String> = n.attempts.iter().map(attempt_cell).collect();
        if let Some(a) = &n.array {
            attempts.insert(
                0,
                format!(
                    "{} elements: {} succeeded, {} failed, {} running",
                    a.size, a.succeeded, a.failed, a.running
                ),
            );
            const SHOWN: usize = 50;
            for e in a
                .elements
                .iter()
                .filter(|e| e.phase == "Failed")
                .take(SHOWN)
            {
                if let Some(last) = e.attempts.last() {
                    attempts.push(format!("element {}: {}", e.index, attempt_cell(last)));
                }
            }
        }
        if let Some(d) = &n.dynamic {
            attempts.push(format!(
                "dynamic sub-workflow <span class=\"mono\">{}</span>",
                escape(d)
            ));
        }
        if let Some(e) = &n.error {
            attempts.push(format!(
                r#"<div class="error">{}</div>"#,
                escape(&error_text(e))
            ));
        }
        let _ = write!(
            out,
            r#"<tr id="{anchor}"><td class="mono">{id}</td><td>{kind}</td><td>{phase}</td><td>{took}</td><td>{attempts}</td></tr>"#,
            anchor = escape(&node_anchor(&view.name, &n.id)),
            id = escape(&n.id),
            kind = escape(&node_kind(view, n)),
            phase = phase_badge(&n.phase),
            attempts = attempts.join("<br>"),
        );
    }
    out.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_timestamps_read_as_people_write_them() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_340), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(7_380_000), "2 h 03 min");
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_764_597_307_000), "2025-12-01 13:55:07 UTC");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
