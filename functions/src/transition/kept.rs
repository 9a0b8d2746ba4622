//! Where an attempt whose handle is kept stands, read from its execution's node records.
//!
//! A kept handle outlives its attempt's end (the table's TTL deletes it: a delete a task attempt would
//! cost a write), so the readers of kept handles — the execution's sweeps and the stopping of what an
//! execution that did not succeed left — tell from the records which attempts are still live.

use std::collections::HashMap;

use updraft_engine::exec::{NodePhase, node_phase_of};
use updraft_proto::Message;
use updraft_proto::updraft::NodeState;

/// Where one attempt stands in its execution's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Not known to be over: running, waiting to run, or started by a transition that never
    /// committed (the records do not hold it yet).
    Live,
    /// It ended by itself (succeeded, failed, skipped) or a later attempt or a dynamic task's
    /// sub-workflow took its place: nothing of it is left to stop.
    Ended,
    /// It was stopped (aborted, timed out): what it made may outlive a stop that failed.
    Stopped,
}

/// Execution `exec`'s node records by node index, decoded from their bytes (an unreadable one is
/// logged and left out: the attempts of its node count as live, the safe side for the readers of
/// kept handles, and children it holds are not found).
pub(crate) fn decode_records(exec: &str, raw: Vec<(u32, Vec<u8>)>) -> HashMap<u32, NodeState> {
    raw.into_iter()
        .filter_map(|(i, bytes)| match NodeState::decode(bytes.as_slice()) {
            Ok(n) => Some((i, n)),
            Err(e) => {
                tracing::warn!(execution = %exec, node = i, error = %e, "an unreadable node record: its attempts count as live, its children (if any) are not stopped");
                None
            }
        })
        .collect()
}

/// Where attempt `attempt` of node `node` (array element `index`) stands in `records`.
pub(crate) fn standing(
    records: &HashMap<u32, NodeState>,
    (node, index, attempt): (u32, Option<u32>, u32),
) -> Standing {
    let Some(rec) = records.get(&node) else {
        return Standing::Live;
    };
    let by_phase = |phase: u32| match node_phase_of(phase) {
        Some(NodePhase::Succeeded | NodePhase::Failed | NodePhase::Skipped) => Standing::Ended,
        Some(NodePhase::Aborted | NodePhase::TimedOut) => Standing::Stopped,
        _ => Standing::Live,
    };
    // The unit's own attempt counter and phase: the node's for a task node, the element's for an
    // array's element (an array that ended may keep no elements: its node's phase then).
    let (current, phase) = match index {
        None => (rec.task.as_ref().map_or(0, |t| t.attempt), rec.phase),
        Some(i) => match rec.array.as_ref().and_then(|a| a.elements.get(i as usize)) {
            Some(e) => (e.attempt, e.phase),
            None => return by_phase(rec.phase),
        },
    };
    if current > attempt || (index.is_none() && current == attempt && rec.dynamic.is_some()) {
        return Standing::Ended;
    }
    if current < attempt {
        return Standing::Live;
    }
    by_phase(phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_proto::updraft::{ArrayProgress, AttemptsState};

    /// The stored number of `phase`.
    fn node_phase_code(phase: NodePhase) -> u32 {
        (1..=8).find(|c| node_phase_of(*c) == Some(phase)).unwrap()
    }

    fn unit(phase: NodePhase, attempt: u32) -> AttemptsState {
        AttemptsState {
            phase: node_phase_code(phase),
            attempt,
            ..Default::default()
        }
    }

    fn records(nodes: Vec<NodeState>) -> HashMap<u32, NodeState> {
        nodes.into_iter().map(|n| (n.index, n)).collect()
    }

    #[test]
    fn a_task_nodes_attempt_is_live_until_its_node_ends_or_a_later_attempt_starts() {
        let node = |phase, attempt| NodeState {
            index: 1,
            phase: node_phase_code(phase),
            task: Some(unit(phase, attempt)),
            ..Default::default()
        };
        let at = |n: NodeState, a| standing(&records(vec![n]), (1, None, a));
        assert_eq!(at(node(NodePhase::Running, 0), 0), Standing::Live);
        assert_eq!(at(node(NodePhase::Queued, 0), 0), Standing::Live);
        assert_eq!(at(node(NodePhase::Succeeded, 0), 0), Standing::Ended);
        assert_eq!(at(node(NodePhase::Failed, 0), 0), Standing::Ended);
        assert_eq!(at(node(NodePhase::Aborted, 0), 0), Standing::Stopped);
        assert_eq!(at(node(NodePhase::TimedOut, 0), 0), Standing::Stopped);
        // A retry: the first attempt is over, the second is live.
        assert_eq!(at(node(NodePhase::Running, 1), 0), Standing::Ended);
        assert_eq!(at(node(NodePhase::Running, 1), 1), Standing::Live);
        // An attempt the records do not hold yet (its start never committed) is live, even once its
        // node was marked aborted with the rest of an execution.
        assert_eq!(at(node(NodePhase::Running, 0), 1), Standing::Live);
        assert_eq!(at(node(NodePhase::Aborted, 0), 1), Standing::Live);
        // A node the records do not have.
        assert_eq!(standing(&records(vec![]), (1, None, 0)), Standing::Live);
        // A dynamic task's attempt is over once its sub-workflow runs in its place.
        let mut dynamic = node(NodePhase::Running, 0);
        dynamic.dynamic = Some("child".into());
        assert_eq!(at(dynamic, 0), Standing::Ended);
    }

    #[test]
    fn an_elements_attempt_stands_as_its_element_or_as_its_array_once_the_elements_are_gone() {
        let array = |phase, elements: Vec<AttemptsState>| NodeState {
            index: 2,
            phase: node_phase_code(phase),
            array: Some(ArrayProgress {
                size: 3,
                elements,
                ..Default::default()
            }),
            ..Default::default()
        };
        let elements = vec![
            unit(NodePhase::Succeeded, 0),
            unit(NodePhase::Running, 1),
            unit(NodePhase::Aborted, 0),
        ];
        let r = records(vec![array(NodePhase::Running, elements.clone())]);
        assert_eq!(standing(&r, (2, Some(0), 0)), Standing::Ended);
        assert_eq!(standing(&r, (2, Some(1), 0)), Standing::Ended);
        assert_eq!(standing(&r, (2, Some(1), 1)), Standing::Live);
        assert_eq!(standing(&r, (2, Some(2), 0)), Standing::Stopped);
        // The array failed: its elements' own phases still decide (an element aborted with it may
        // have been left running by a stop that failed).
        let r = records(vec![array(NodePhase::Failed, elements)]);
        assert_eq!(standing(&r, (2, Some(0), 0)), Standing::Ended);
        assert_eq!(standing(&r, (2, Some(2), 0)), Standing::Stopped);
        // A succeeded array that keeps no elements: every element ended.
        let r = records(vec![array(NodePhase::Succeeded, vec![])]);
        assert_eq!(standing(&r, (2, Some(1), 0)), Standing::Ended);
        let r = records(vec![array(NodePhase::Aborted, vec![])]);
        assert_eq!(standing(&r, (2, Some(1), 0)), Standing::Stopped);
        let r = records(vec![array(NodePhase::Running, vec![])]);
        assert_eq!(standing(&r, (2, Some(1), 0)), Standing::Live);
    }

    #[test]
    fn records_that_do_not_decode_are_left_out() {
        let good = NodeState {
            index: 0,
            ..Default::default()
        };
        let decoded = decode_records("e", vec![(0, good.encode_to_vec()), (1, vec![0xff, 0xff])]);
        assert_eq!(decoded.len(), 1);
        assert!(decoded.contains_key(&0));
    }
}
