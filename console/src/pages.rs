//! The console's pages (`updraft ui`): executions, one execution (live while it runs), one node, and
//! errors. Server-rendered HTML; the one script (inline) refreshes a running execution's page and
//! follows a running attempt's logs. Forms post the console's actions: abort, approve or reject a
//! gate, send a signal, relaunch.

use std::fmt::Write;

use serde_json::Value;
use updraft_engine::exec::history::{ExecutionView, NodeView};

use crate::graph::shown;
use crate::{
    STYLE, duration, escape, graph_svg, node_anchor, phase_badge, summary_line, timeline_svg,
    timestamp,
};

/// One row of the executions page.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRow {
    /// Execution name.
    pub name: String,
    /// The workflow it runs.
    pub workflow: String,
    /// Its phase, as the engine names it.
    pub phase: String,
    /// When it was made or started.
    pub started_ms: Option<u64>,
    /// Its parent execution, for a child.
    pub parent: Option<String>,
}

/// What the executions page shows: rows whose workflow contains `workflow`, whose phase is `phase`,
/// started in the last `within_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Part of the workflow's name.
    pub workflow: String,
    /// A phase (empty: any).
    pub phase: String,
    /// Started at most this long ago (None: any time).
    pub within_ms: Option<u64>,
}

impl Filter {
    /// Whether `row` passes, `now` being the time.
    pub fn passes(&self, row: &ExecutionRow, now: u64) -> bool {
        row.workflow.contains(&self.workflow)
            && (self.phase.is_empty() || row.phase.eq_ignore_ascii_case(&self.phase))
            && self
                .within_ms
                .is_none_or(|w| row.started_ms.is_some_and(|s| s.saturating_add(w) >= now))
    }
}

/// The phases an execution can be in, for the filter.
const PHASES: [&str; 6] = [
    "Queued",
    "Running",
    "Failing",
    "Succeeded",
    "Failed",
    "Aborted",
];

/// The ranges of time the filter offers: (value, label, milliseconds).
pub const WITHIN: [(&str, &str, u64); 3] = [
    ("1h", "the last hour", 3_600_000),
    ("1d", "the last day", 86_400_000),
    ("7d", "the last week", 604_800_000),
];

const SCRIPT: &str = r#"
(function(){
  var live=document.getElementById('live');
  if(live&&live.dataset.running==='1'){
    // Not while someone types in it (a signal's value, an abort's reason).
    var busy=function(){
      var a=document.activeElement;
      if(a&&live.contains(a)&&(a.tagName==='INPUT'||a.tagName==='TEXTAREA')){return true;}
      return Array.prototype.some.call(live.querySelectorAll('input:not([type=hidden])'),function(i){return i.value!==i.defaultValue;});
    };
    var tick=function(){
      if(busy()){setTimeout(tick,1000);return;}
      fetch(location.pathname+(location.search?location.search+'&':'?')+'fragment=1',{cache:'no-store'}).then(function(r){return r.text();}).then(function(t){
        live.outerHTML=t; live=document.getElementById('live');
        if(live&&live.dataset.running==='1'){setTimeout(tick,1000);}
      }).catch(function(){setTimeout(tick,3000);});
    };
    setTimeout(tick,1000);
  }
  document.querySelectorAll('pre.log[data-src]').forEach(function(pre){
    var offset=0;
    var follow=function(){
      fetch(pre.dataset.src+'&offset='+offset,{cache:'no-store'}).then(function(r){
        var more=r.headers.get('X-Running')==='1';
        var next=parseInt(r.headers.get('X-Offset')||'0',10);
        return r.text().then(function(t){pre.textContent+=t;offset=next;if(more){setTimeout(follow,1000);}});
      }).catch(function(){setTimeout(follow,3000);});
    };
    follow();
  });
})();
"#;

/// A page with `title`, a header line `meta` and `body`, of the console `source` (`local` or a stack).
pub fn page(title: &str, source: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{t} · Updraft</title><style>{STYLE}{EXTRA}</style></head><body><header><h1><a href="/" style="color:inherit;text-decoration:none">Updraft</a> <span class="muted">{s}</span></h1><nav><a href="/">executions</a> <a href="/workflows">workflows</a></nav></header><main>{body}</main><script>{SCRIPT}</script></body></html>"#,
        t = escape(title),
        s = escape(source),
    )
}

const EXTRA: &str = r#"
header nav a{color:#b0bec5;margin-right:12px}
form.inline{display:inline}
button{font:inherit;padding:3px 10px;border-radius:4px;border:1px solid #90a4ae;background:#fff;cursor:pointer}
button.danger{border-color:#c62828;color:#c62828}
input,select,textarea{font:inherit;padding:3px 6px}
textarea{width:100%;font-family:ui-monospace,monospace;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:3px;max-width:900px}
.grid a{display:block;width:16px;height:16px;border-radius:2px}
pre.log{background:#263238;color:#eceff1;padding:8px;max-height:480px;overflow:auto;font-size:12px}
.notice{background:#e3f2fd;border-left:4px solid #1565c0;padding:8px 12px}
"#;

/// The page of an error: what was asked for could not be shown or done, and why.
pub fn error_page(source: &str, title: &str, message: &str) -> String {
    page(
        title,
        source,
        &format!(
            r#"<h2>{}</h2><div class="error" id="message">{}</div><p><a href="/">Back to the executions</a></p>"#,
            escape(title),
            escape(message)
        ),
    )
}

/// The executions page: the filter, then a row per execution passing it, newest first.
pub fn executions_page(source: &str, rows: &[ExecutionRow], filter: &Filter, now: u64) -> String {
    let mut body = String::from(r#"<h2>Executions</h2><form method="get" action="/">"#);
    let _ = write!(
        body,
        r#"workflow <input name="workflow" value="{}" placeholder="any"> phase <select name="phase"><option value="">any</option>"#,
        escape(&filter.workflow)
    );
    for p in PHASES {
        let _ = write!(
            body,
            r#"<option{}>{p}</option>"#,
            if filter.phase.eq_ignore_ascii_case(p) {
                " selected"
            } else {
                ""
            }
        );
    }
    body.push_str(r#"</select> started <select name="within"><option value="">any time</option>"#);
    for (v, label, ms) in WITHIN {
        let _ = write!(
            body,
            r#"<option value="{v}"{}>{label}</option>"#,
            if filter.within_ms == Some(ms) {
                " selected"
            } else {
                ""
            }
        );
    }
    body.push_str(r#"</select> <button>Show</button></form>"#);
    let mut shown_rows: Vec<&ExecutionRow> =
        rows.iter().filter(|r| filter.passes(r, now)).collect();
    shown_rows.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(a.name.cmp(&b.name)));
    if shown_rows.is_empty() {
        body.push_str(r#"<p class="muted" id="none">No execution matches.</p>"#);
    } else {
        body.push_str(
            r#"<table id="executions"><tr><th>execution</th><th>workflow</th><th>phase</th><th>started</th><th>parent</th></tr>"#,
        );
        for r in shown_rows {
            let _ = write!(
                body,
                r#"<tr data-execution="{n}" data-phase="{p}"><td class="mono"><a href="/executions/{n}">{n}</a></td><td>{w}</td><td>{badge}</td><td>{s}</td><td class="mono">{parent}</td></tr>"#,
                n = escape(&r.name),
                p = escape(&r.phase),
                w = escape(&r.workflow),
                badge = phase_badge(&r.phase),
                s = r.started_ms.map(timestamp).unwrap_or_default(),
                parent = r
                    .parent
                    .as_deref()
                    .map(|p| format!(r#"<a href="/executions/{0}">{0}</a>"#, escape(p)))
                    .unwrap_or_default(),
            );
        }
        body.push_str("</table>");
    }
    page("Executions", source, &body)
}

/// What the execution page offers to do.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Actions {
    /// Abort, approve, reject and signal (the execution runs).
    pub steer: bool,
    /// Relaunch with the same or edited inputs.
    pub relaunch: bool,
}

fn running(phase: &str) -> bool {
    matches!(phase, "Queued" | "Running" | "Failing")
}

/// The live part of an execution's page (what its script fetches again while it runs).
pub fn execution_fragment(view: &ExecutionView, actions: Actions, notice: Option<&str>) -> String {
    let name = escape(&view.name);
    let mut out = format!(
        r#"<div id="live" data-running="{}" data-phase="{}">"#,
        u8::from(running(&view.phase)),
        escape(&view.phase)
    );
    if let Some(n) = notice {
        let _ = write!(
            out,
            r#"<div class="notice" id="notice">{}</div>"#,
            escape(n)
        );
    }
    let _ = write!(
        out,
        r#"<h2>{name} <span id="phase">{}</span></h2><div class="muted">{}</div>"#,
        phase_badge(&view.phase),
        summary_line(view)
    );
    if actions.steer && running(&view.phase) {
        let _ = write!(
            out,
            r#"<p><form class="inline" method="post" action="/executions/{name}/abort"><input name="reason" value="aborted from the console" size="28"> <button class="danger" id="abort">Abort</button></form></p>"#
        );
    }
    if let Some(e) = &view.error {
        let _ = write!(
            out,
            r#"<div class="error" id="error">{}</div>"#,
            escape(&format!("{} [{}]", e.message, e.code))
        );
    }
    gates(&mut out, view, actions.steer);
    let _ = write!(
        out,
        r#"<h3>Graph</h3><div class="scroll">{}</div><h3>Timeline</h3><div class="scroll">{}</div>"#,
        graph_svg(view),
        timeline_svg(view)
    );
    for n in shown(view) {
        if let Some(a) = &n.array {
            let _ = write!(
                out,
                r#"<h3>Elements of {}</h3><div class="grid" data-node="{}">"#,
                escape(&n.id),
                escape(&n.id)
            );
            for e in &a.elements {
                let (fill, _) = crate::phase_colour(&e.phase);
                let _ = write!(
                    out,
                    r#"<a href="/executions/{name}/nodes/{id}?index={i}" title="element {i}: {p}" data-index="{i}" data-phase="{p}" style="background:{fill}"></a>"#,
                    id = escape(&n.id),
                    i = e.index,
                    p = escape(&e.phase)
                );
            }
            if a.elements.is_empty() {
                let _ = write!(
                    out,
                    r#"<span class="muted">{} elements ({} succeeded, {} failed); their histories are not kept.</span>"#,
                    a.size, a.succeeded, a.failed
                );
            }
            out.push_str("</div>");
        }
    }
    out.push_str(
        r#"<h3>Nodes</h3><table id="nodes"><tr><th>node</th><th>phase</th><th>took</th><th>attempts</th></tr>"#,
    );
    for n in shown(view) {
        let took = match (n.phases.first(), n.phases.last()) {
            (Some(a), Some(b)) if b.at_ms >= a.at_ms && !running(&n.phase) => {
                duration(b.at_ms - a.at_ms)
            }
            _ => String::new(),
        };
        let attempts = n
            .attempts
            .iter()
            .map(|a| {
                format!(
                    "#{} {}",
                    a.attempt,
                    phase_badge(a.phase.as_deref().unwrap_or("Running"))
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            out,
            r#"<tr id="{anchor}" data-node="{id}" data-phase="{p}"><td class="mono"><a href="/executions/{name}/nodes/{id}">{id}</a></td><td>{badge}</td><td>{took}</td><td>{attempts}</td></tr>"#,
            anchor = escape(&node_anchor(&view.name, &n.id)),
            id = escape(&n.id),
            p = escape(&n.phase),
            badge = phase_badge(&n.phase),
        );
    }
    out.push_str("</table>");
    if !view.children.is_empty() {
        out.push_str(r#"<h3>Child executions</h3><ul id="children">"#);
        for c in &view.children {
            let _ = write!(
                out,
                r#"<li>node {} → <a href="/executions/{n}">{n}</a> {}</li>"#,
                escape(&c.node),
                phase_badge(&c.execution.phase),
                n = escape(&c.execution.name)
            );
        }
        out.push_str("</ul>");
    }
    for n in &view.nodes {
        if let Some(d) = &n.dynamic {
            let _ = write!(
                out,
                r#"<p>Node {} runs the dynamic sub-workflow <a href="/executions/{d}">{d}</a>.</p>"#,
                escape(&n.id),
                d = escape(d)
            );
        }
    }
    if let Some(o) = &view.outputs {
        let _ = write!(
            out,
            r#"<h3>Outputs</h3><pre class="mono" id="outputs">{}</pre>"#,
            escape(&serde_json::to_string_pretty(o).unwrap_or_default())
        );
    }
    out.push_str("</div>");
    out
}

/// The gates the execution waits at, with their forms when it may be steered.
fn gates(out: &mut String, view: &ExecutionView, steer: bool) {
    let Some(graph) = &view.graph else { return };
    let name = escape(&view.name);
    for n in &view.nodes {
        let Some(g) = graph.nodes.get(n.index as usize) else {
            continue;
        };
        if n.phase != "Running" || !matches!(g.kind.as_str(), "approve" | "signal") {
            continue;
        }
        let id = escape(&g.runs);
        let _ = write!(
            out,
            r#"<div class="notice gate" data-signal="{id}">Node <b>{}</b> waits for <span class="mono">{id}</span>. "#,
            escape(&n.id)
        );
        if steer {
            if g.kind == "approve" {
                let _ = write!(
                    out,
                    r#"<form class="inline" method="post" action="/executions/{name}/signal"><input type="hidden" name="id" value="{id}"><input type="hidden" name="value" value="true"><button id="approve-{id}">Approve</button></form> <form class="inline" method="post" action="/executions/{name}/signal"><input type="hidden" name="id" value="{id}"><input type="hidden" name="value" value="false"><button class="danger" id="reject-{id}">Reject</button></form>"#
                );
            } else {
                let _ = write!(
                    out,
                    r#"<form class="inline" method="post" action="/executions/{name}/signal"><input type="hidden" name="id" value="{id}"><input name="value" id="value-{id}" placeholder="value (JSON or text)"> <button id="send-{id}">Send</button></form>"#
                );
            }
        }
        out.push_str("</div>");
    }
}

/// An execution's page: its live part, and the relaunch form.
pub fn execution_page(
    source: &str,
    view: &ExecutionView,
    actions: Actions,
    notice: Option<&str>,
) -> String {
    let mut body = execution_fragment(view, actions, notice);
    if actions.relaunch {
        let inputs = serde_json::to_string_pretty(&view.inputs).unwrap_or_default();
        let _ = write!(
            body,
            r#"<h3>Relaunch</h3><form method="post" action="/executions/{}/relaunch"><textarea name="inputs" rows="6" id="relaunch-inputs">{}</textarea><br><button id="relaunch">Relaunch with these inputs</button></form>"#,
            escape(&view.name),
            escape(&inputs)
        );
    }
    page(&view.name, source, &body)
}

/// A node's page: what it is, its inputs, outputs and error, its attempts (or one element's), and the
/// logs of its last attempt (`logs`: each file's label and where the page's script reads it, followed
/// while the attempt runs).
pub fn node_page(
    source: &str,
    view: &ExecutionView,
    node: &NodeView,
    index: Option<u32>,
    logs: &[(String, String)],
) -> String {
    let name = escape(&view.name);
    let mut body = format!(
        r#"<p><a href="/executions/{name}">{name}</a> {}</p><h2>{}{} <span id="phase">{}</span></h2>"#,
        phase_badge(&view.phase),
        escape(&node.id),
        index.map(|i| format!("[{i}]")).unwrap_or_default(),
        phase_badge(&node.phase)
    );
    if let Some(g) = view
        .graph
        .as_ref()
        .and_then(|g| g.nodes.get(node.index as usize))
    {
        let _ = write!(
            body,
            r#"<div class="muted">{} {}</div>"#,
            escape(&g.kind),
            escape(&g.runs)
        );
    }
    if let Some(e) = &node.error {
        let _ = write!(
            body,
            r#"<div class="error" id="error">{}</div>"#,
            escape(&format!("{} [{}, {}]", e.message, e.code, e.kind))
        );
    }
    for (what, v) in [("Inputs", &node.inputs), ("Outputs", &node.outputs)] {
        if let Some(v) = v {
            let _ = write!(
                body,
                r#"<h3>{what}</h3><pre class="mono" id="{}">{}</pre>"#,
                what.to_lowercase(),
                escape(&serde_json::to_string_pretty(v).unwrap_or_default())
            );
        }
    }
    let attempts = node.attempts_of(index);
    if !attempts.is_empty() {
        body.push_str(
            r#"<h3>Attempts</h3><table id="attempts"><tr><th>attempt</th><th>phase</th><th>queued</th><th>ran</th><th>cache</th><th>made</th><th>logs</th></tr>"#,
        );
        for a in attempts {
            let ran = match (a.started_ms.or(Some(a.queued_ms)), a.ended_ms) {
                (Some(s), Some(e)) => duration(e.saturating_sub(s)),
                _ => "running".into(),
            };
            let logs = a
                .logs
                .iter()
                .map(|l| {
                    if l.starts_with("https://") {
                        format!(r#"<a href="{0}" rel="noreferrer">{0}</a>"#, escape(l))
                    } else {
                        format!(r#"<span class="mono">{}</span>"#, escape(l))
                    }
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(
                body,
                r#"<tr data-attempt="{}"><td>#{}</td><td>{}{}</td><td>{}</td><td>{ran}</td><td>{}</td><td class="mono">{}</td><td>{logs}</td></tr>"#,
                a.attempt,
                a.attempt,
                phase_badge(a.phase.as_deref().unwrap_or("Running")),
                a.error
                    .as_ref()
                    .map(|e| format!(
                        r#"<div class="error">{}</div>"#,
                        escape(&format!("{} [{}]", e.message, e.code))
                    ))
                    .unwrap_or_default(),
                timestamp(a.queued_ms),
                escape(&a.cache),
                escape(a.external.as_deref().unwrap_or(&a.name)),
            );
        }
        body.push_str("</table>");
    }
    for (label, src) in logs {
        let _ = write!(
            body,
            r#"<h3>{l} of the last attempt</h3><pre class="log" data-file="{l}" data-src="{}"></pre>"#,
            escape(src),
            l = escape(label),
        );
    }
    page(&format!("{} · {}", node.id, view.name), source, &body)
}

/// A launch plan as its page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchPlanView {
    /// Its name.
    pub name: String,
    /// The workflow it launches.
    pub workflow: String,
    /// Where it comes from (a file, a registered package).
    pub origin: String,
    /// Its inputs: name, type, default (None: none), whether it must be given, whether it is fixed.
    pub inputs: Vec<(String, String, Option<Value>, bool, bool)>,
    /// Its outputs: name, type.
    pub outputs: Vec<(String, String)>,
    /// Its workflow's graph.
    pub graph: updraft_engine::exec::history::GraphView,
}

impl LaunchPlanView {
    /// The launch form's first inputs: every input that is not fixed, with its default (null when it
    /// has none).
    pub fn form_inputs(&self) -> String {
        let m: serde_json::Map<String, Value> = self
            .inputs
            .iter()
            .filter(|i| !i.4)
            .map(|(n, _, d, ..)| (n.clone(), d.clone().unwrap_or(Value::Null)))
            .collect();
        serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default()
    }
}

/// The launch plans page: one row per launch plan (name, workflow, origin).
pub fn launch_plans_page(source: &str, rows: &[(String, String, String)]) -> String {
    let mut body = String::from("<h2>Workflows and launch plans</h2>");
    if rows.is_empty() {
        body.push_str(
            r#"<p class="muted" id="none">None known: give <code>updraft ui</code> packages or YAML files, or register some (<code>updraft register</code>).</p>"#,
        );
    } else {
        body.push_str(
            r#"<table id="launch-plans"><tr><th>launch plan</th><th>workflow</th><th>from</th></tr>"#,
        );
        for (name, wf, origin) in rows {
            let _ = write!(
                body,
                r#"<tr data-launch-plan="{n}"><td class="mono"><a href="/launch-plans/{u}">{n}</a></td><td class="mono">{w}</td><td class="mono">{o}</td></tr>"#,
                n = escape(name),
                u = escape(&url_part(name)),
                w = escape(wf),
                o = escape(origin)
            );
        }
        body.push_str("</table>");
    }
    page("Workflows", source, &body)
}

/// `s` escaped for a URL's path segment.
pub fn url_part(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A launch plan's page: its workflow's graph, its interface and the launch form (with `inputs` in it).
pub fn launch_plan_page(source: &str, lp: &LaunchPlanView, inputs: &str) -> String {
    let shell = ExecutionView {
        name: lp.workflow.clone(),
        workflow: lp.workflow.clone(),
        phase: "NotYetStarted".into(),
        started_ms: None,
        ended_ms: None,
        error: None,
        inputs: Value::Null,
        outputs: None,
        nodes: lp
            .graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeView {
                index: i as u32,
                id: n.id.clone(),
                phase: String::new(),
                phases: Vec::new(),
                attempts: Vec::new(),
                array: None,
                dynamic: None,
                error: None,
                inputs: None,
                outputs: None,
            })
            .collect(),
        children: Vec::new(),
        graph: Some(lp.graph.clone()),
    };
    let mut body = format!(
        r#"<p><a href="/workflows">workflows</a></p><h2>{}</h2><div class="muted">workflow <span class="mono">{}</span> · from <span class="mono">{}</span></div><h3>Graph</h3><div class="scroll">{}</div><h3>Inputs</h3><table id="inputs"><tr><th>input</th><th>type</th><th>default</th></tr>"#,
        escape(&lp.name),
        escape(&lp.workflow),
        escape(&lp.origin),
        graph_svg(&shell)
    );
    for (name, t, default, required, fixed) in &lp.inputs {
        let d = match (default, required, fixed) {
            (Some(v), _, true) => format!("{} (fixed)", v),
            (Some(v), ..) => v.to_string(),
            (None, true, _) => "(required)".into(),
            (None, ..) => String::new(),
        };
        let _ = write!(
            body,
            r#"<tr data-input="{n}"><td class="mono">{n}</td><td class="mono">{}</td><td class="mono">{}</td></tr>"#,
            escape(t),
            escape(&d),
            n = escape(name)
        );
    }
    body.push_str(r#"</table><h3>Outputs</h3><table id="outputs-types"><tr><th>output</th><th>type</th></tr>"#);
    for (name, t) in &lp.outputs {
        let _ = write!(
            body,
            r#"<tr><td class="mono">{}</td><td class="mono">{}</td></tr>"#,
            escape(name),
            escape(t)
        );
    }
    let _ = write!(
        body,
        r#"</table><h3>Launch</h3><form method="post" action="/launch-plans/{}/launch"><textarea name="inputs" rows="8" id="launch-inputs">{}</textarea><br><button id="launch">Launch</button></form>"#,
        escape(&url_part(&lp.name)),
        escape(inputs)
    );
    page(&lp.name, source, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_keeps_rows_by_workflow_phase_and_time() {
        let row = |w: &str, p: &str, s: u64| ExecutionRow {
            name: format!("{w}-{p}-{s}"),
            workflow: w.into(),
            phase: p.into(),
            started_ms: Some(s),
            parent: None,
        };
        let now = 10_000_000;
        let rows = [
            row("etl.daily", "Succeeded", now - 1_000),
            row("etl.daily", "Failed", now - 7_200_000),
            row("train", "Running", now - 10),
        ];
        let kept = |f: &Filter| -> Vec<&str> {
            rows.iter()
                .filter(|r| f.passes(r, now))
                .map(|r| r.phase.as_str())
                .collect()
        };
        assert_eq!(kept(&Filter::default()).len(), 3);
        let etl = Filter {
            workflow: "etl".into(),
            ..Filter::default()
        };
        assert_eq!(kept(&etl), ["Succeeded", "Failed"]);
        let failed = Filter {
            phase: "failed".into(),
            ..Filter::default()
        };
        assert_eq!(kept(&failed), ["Failed"]);
        let hour = Filter {
            within_ms: Some(3_600_000),
            ..Filter::default()
        };
        assert_eq!(kept(&hour), ["Succeeded", "Running"]);
        assert_eq!(url_part("a b/c"), "a%20b%2Fc");
    }
}
