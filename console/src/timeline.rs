//! The timeline of an execution as SVG (a Gantt chart): a row per task attempt (a map's elements a row
//! each, up to [`MAX_ELEMENT_ROWS`]) and per other node that ran, each bar waiting (pale) then running,
//! in its phase's colour; a time axis from the execution's start.

use std::fmt::Write;

use updraft_engine::exec::history::{AttemptView, ExecutionView};

use crate::graph::shown;
use crate::{duration, escape, phase_colour};

/// Elements of a map drawn as rows of their own; the rest are summed up in one row.
pub const MAX_ELEMENT_ROWS: usize = 100;

const LABEL: i64 = 190;
const ROW: i64 = 20;
const PLOT: i64 = 760;
const TOP: i64 = 24;

/// One bar: label, queued, started, ended (None: still going), phase.
struct Bar {
    label: String,
    queued: u64,
    started: Option<u64>,
    ended: Option<u64>,
    phase: String,
}

fn attempt_bar(label: String, a: &AttemptView) -> Bar {
    Bar {
        label,
        queued: a.queued_ms,
        started: a.started_ms,
        ended: a.ended_ms,
        phase: a.phase.clone().unwrap_or_else(|| "Running".into()),
    }
}

fn bars(view: &ExecutionView) -> (Vec<Bar>, Vec<String>) {
    let mut bars = Vec::new();
    let mut notes = Vec::new();
    for n in shown(view) {
        for a in &n.attempts {
            bars.push(attempt_bar(format!("{} #{}", n.id, a.attempt), a));
        }
        if let Some(arr) = &n.array {
            let mut drawn = 0;
            for e in &arr.elements {
                for a in &e.attempts {
                    if drawn < MAX_ELEMENT_ROWS {
                        bars.push(attempt_bar(
                            format!("{}[{}] #{}", n.id, e.index, a.attempt),
                            a,
                        ));
                    }
                    drawn += 1;
                }
            }
            if drawn > MAX_ELEMENT_ROWS {
                notes.push(format!(
                    "{}: {} more element attempts not drawn",
                    n.id,
                    drawn - MAX_ELEMENT_ROWS
                ));
            }
        }
        // A node that ran no attempt of its own (a gate, a branch, a launch plan): its phases.
        if n.attempts.is_empty()
            && n.array.is_none()
            && let Some(first) = n.phases.first()
        {
            let last = n.phases.last().unwrap_or(first);
            let terminal = !matches!(last.phase.as_str(), "Queued" | "Running");
            bars.push(Bar {
                label: n.id.clone(),
                queued: first.at_ms,
                started: n
                    .phases
                    .iter()
                    .find(|p| p.phase == "Running")
                    .map(|p| p.at_ms),
                ended: terminal.then_some(last.at_ms),
                phase: last.phase.clone(),
            });
        }
    }
    (bars, notes)
}

/// The timeline of `view` as an SVG element (with a note under it of what was left out).
pub fn timeline_svg(view: &ExecutionView) -> String {
    let (bars, notes) = bars(view);
    if bars.is_empty() {
        return r#"<p class="muted">Nothing has run yet.</p>"#.into();
    }
    let t0 = view
        .started_ms
        .unwrap_or_else(|| bars.iter().map(|b| b.queued).min().unwrap_or(0));
    let latest = bars
        .iter()
        .flat_map(|b| [Some(b.queued), b.started, b.ended])
        .flatten()
        .max()
        .unwrap_or(t0);
    let t1 = view
        .ended_ms
        .unwrap_or(latest)
        .max(latest)
        .max(t0.saturating_add(1));
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let x = |t: u64| LABEL + ((t.saturating_sub(t0)) as f64 / span * PLOT as f64).round() as i64;
    let width = LABEL + PLOT + 60;
    let height = TOP + bars.len() as i64 * ROW + 8;
    let mut out = format!(
        r#"<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="timeline of {}">"#,
        escape(&view.name)
    );
    for k in 0..=4 {
        let t = t0.saturating_add((span * f64::from(k) / 4.0) as u64);
        let tx = x(t);
        let _ = write!(
            out,
            r##"<line x1="{tx}" y1="{}" x2="{tx}" y2="{height}" stroke="#eceff1"/><text x="{tx}" y="14" font-size="11" text-anchor="middle" fill="#757575">{}</text>"##,
            TOP - 6,
            duration(t.saturating_sub(t0))
        );
    }
    for (r, b) in bars.iter().enumerate() {
        let y = TOP + r as i64 * ROW;
        let (fill, _) = phase_colour(&b.phase);
        let run_from = b.started.unwrap_or(b.queued);
        let end = b.ended.unwrap_or(t1);
        let label: String = b.label.chars().take(30).collect();
        let _ = write!(
            out,
            r##"<g class="bar" data-phase="{}"><title>{}: {}, queued {} in, ran {}</title><text x="4" y="{}" font-size="12" fill="#37474f">{}</text>"##,
            escape(&b.phase),
            escape(&b.label),
            escape(&b.phase),
            duration(b.queued.saturating_sub(t0)),
            duration(end.saturating_sub(run_from)),
            y + 14,
            escape(&label)
        );
        if run_from > b.queued {
            let _ = write!(
                out,
                r#"<rect x="{}" y="{}" width="{}" height="12" fill="{fill}" opacity="0.3"/>"#,
                x(b.queued),
                y + 4,
                (x(run_from) - x(b.queued)).max(1)
            );
        }
        let _ = write!(
            out,
            r#"<rect x="{}" y="{}" width="{}" height="12" rx="2" fill="{fill}"{}/></g>"#,
            x(run_from),
            y + 4,
            (x(end) - x(run_from)).max(2),
            if b.ended.is_none() {
                r#" opacity="0.7""#
            } else {
                ""
            }
        );
    }
    out.push_str("</svg>");
    for n in notes {
        let _ = write!(out, r#"<p class="muted">{}</p>"#, escape(&n));
    }
    out
}
