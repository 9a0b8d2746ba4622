//! What the execution records as it goes, for whoever looks at it later: each node's phase changes and
//! each attempt's queueing, start and end (with its error, whether the cache served it, what it made
//! outside and where its logs are). Times are milliseconds since the execution started, as the runtime's
//! clock gave them to [`Execution::step_at`]. Everything is bounded: a node keeps its last
//! [`MAX_PHASES`] phase changes, a task node or array element its last [`MAX_ATTEMPTS`] attempts, errors
//! are cut to [`MAX_ERROR`] bytes (an array element's to [`MAX_ELEMENT_ERROR`]), and an array of more
//! than [`MAX_ELEMENTS`] elements keeps no element's history once it has succeeded.

use updraft_proto::updraft::{AttemptRecord, PhaseChange};

use super::{Attempts, Execution, error_record};
use crate::compile::NodeIdx;
use crate::exec::{ExecError, NodePhase};

/// Phase changes a node keeps (the first, and the last ones).
pub const MAX_PHASES: usize = 32;
/// Attempts a task node or an array element keeps (the last ones).
pub const MAX_ATTEMPTS: usize = 16;
/// Bytes of an attempt's error message kept.
pub const MAX_ERROR: usize = 1024;
/// Bytes of an array element's attempt's error message kept.
pub const MAX_ELEMENT_ERROR: usize = 256;
/// Log locations an attempt keeps, and bytes of each.
pub const MAX_LOGS: usize = 8;
/// Bytes of a log location or an external name kept.
pub const MAX_LOCATION: usize = 512;
/// Elements whose history an array keeps once it has succeeded.
pub const MAX_ELEMENTS: u32 = 1024;

/// How a cache served an attempt, as stored.
pub(super) mod cache {
    /// The task is not cached.
    pub const OFF: u32 = 0;
    /// Looked up and not found: the attempt ran.
    pub const MISS: u32 = 1;
    /// Served from the cache: the attempt did not run.
    pub const HIT: u32 = 2;
}

/// `s` cut to at most `max` bytes, on a character boundary, marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Records phase change `phase` at `at` in a node's `phases`.
pub(super) fn phase_changed(phases: &mut Vec<PhaseChange>, phase: NodePhase, at: u64) {
    if phases.len() >= MAX_PHASES {
        phases.remove(1);
    }
    phases.push(PhaseChange {
        phase: super::snapshot::node_phase_code(phase),
        at,
    });
}

impl Attempts {
    /// The record of attempt `attempt`, if kept.
    fn record_mut(&mut self, attempt: u32) -> Option<&mut AttemptRecord> {
        self.history.iter_mut().rev().find(|r| r.attempt == attempt)
    }
}

impl Execution {
    /// Milliseconds since the execution started, by the time of the step under way.
    pub(super) fn elapsed(&self) -> u64 {
        self.now_ms.saturating_sub(self.started_ms)
    }

    /// Attempt `attempt` of `node` (element `index`) was asked for; `cached` when the task is cached.
    pub(super) fn attempt_queued(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        cached: bool,
    ) {
        let at = self.elapsed();
        let unit = self.unit_mut(node, index);
        if unit.record_mut(attempt).is_some() {
            return;
        }
        if unit.history.len() >= MAX_ATTEMPTS {
            unit.history.remove(0);
        }
        unit.history.push(AttemptRecord {
            attempt,
            queued_at: at,
            cache: if cached { cache::MISS } else { cache::OFF },
            ..Default::default()
        });
    }

    /// Attempt `attempt` was seen running.
    pub(super) fn attempt_running(&mut self, node: NodeIdx, index: Option<u32>, attempt: u32) {
        let at = self.elapsed();
        if let Some(r) = self.unit_mut(node, index).record_mut(attempt)
            && r.ended_at.is_none()
        {
            r.started_at.get_or_insert(at);
        }
    }

    /// Attempt `attempt` ended in `phase` (with `error`; `hit` when the cache served it). An attempt's
    /// first end is the one kept.
    pub(super) fn attempt_ended(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        phase: NodePhase,
        error: Option<&ExecError>,
        hit: bool,
    ) {
        let at = self.elapsed();
        let max = if index.is_some() {
            MAX_ELEMENT_ERROR
        } else {
            MAX_ERROR
        };
        let Some(r) = self.unit_mut(node, index).record_mut(attempt) else {
            return;
        };
        if r.ended_at.is_some() {
            return;
        }
        r.ended_at = Some(at);
        r.phase = super::snapshot::node_phase_code(phase);
        r.error = error.map(|e| {
            let mut rec = error_record(e);
            rec.message = cut(&rec.message, max);
            rec
        });
        if hit {
            r.cache = cache::HIT;
        }
    }

    /// Notes what attempt `attempt` of `node` (element `index`) made outside — `external`, when it is
    /// not the attempt's own name (a job's ARN, a query's id) — and where its logs are. A runtime calls
    /// it once the attempt's start returned; the record is then part of the node's state.
    pub fn note_attempt(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        external: &str,
        logs: &[String],
    ) {
        // Past the elements whose history an array keeps once done, a pod's logs are found by its
        // name alone: nothing to note.
        if self.nodes.get(node as usize).is_none() || index.is_some_and(|i| i >= MAX_ELEMENTS) {
            return;
        }
        if let (Some(i), Some(a)) = (index, &self.nodes[node as usize].array)
            && i >= a.size
        {
            return;
        }
        let own = self.task_name(node, index, attempt);
        let Some(r) = self.unit_mut(node, index).record_mut(attempt) else {
            return;
        };
        r.external = if external == own {
            String::new()
        } else {
            cut(external, MAX_LOCATION)
        };
        r.logs = logs
            .iter()
            .take(MAX_LOGS)
            .map(|l| cut(l, MAX_LOCATION))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cutting_keeps_short_text_and_marks_cut_text_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        let cut_text = cut("ééééé", 6);
        assert!(cut_text.len() <= 6, "{cut_text}");
        assert!(cut_text.ends_with("..."), "{cut_text}");
        assert_eq!(cut_text, "é...");
    }
}
