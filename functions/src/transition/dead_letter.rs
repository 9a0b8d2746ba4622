//! The transitions dead-letter queue's consumer: a message that used up its deliveries for any reason
//! (its transition timed out, crashed, ran out of memory or was throttled every time) ends its
//! execution FAILED with the reason, so no execution waits forever on a message nobody will process.
//!
//! Each dead letter is first kept in the bucket (`dead-letters/transitions/<execution>/<message id>.json`:
//! the body, its deliveries and when it arrived), then:
//!
//! 1. on its first handling, the execution is failed through the engine (`Event::Fail`), as any failure
//!    is: running tasks and child executions are stopped, a parent is told;
//! 2. when that fails, or a handling before this one died with the message (the table counts each
//!    handling: `deadletter#<message id>`), the execution is failed without the engine, which the
//!    message may be what kills: every attempt whose handle is kept is stopped, every child execution a
//!    running node holds is sent an abort, a parent is told, then the execution's item is committed
//!    FAILED with the reason (its state's phase and error too).
//!
//! Every step is idempotent: a handling that dies part-way is done again by the next delivery of the
//! dead letter (the dead-letter queue has no redrive: it keeps the message until one handling ends).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use updraft_engine::exec::{
    ErrorKind, Event, ExecError, ExecPhase, NodePhase, dns_name, error_record, exec_phase_code,
    node_phase_of,
};
use updraft_proto::updraft::{
    AbortMessage, ChildDoneMessage, NodeState, QueueMessage, queue_message::Kind,
};

use super::{Received, Transition, is_final, message};
use crate::store::Lease;
use crate::{Error, now_ms};

/// The code of the error a dead-lettered message fails its execution with.
pub const DEAD_LETTER: &str = "DeadLetter";

/// What kind of message `m` is, as errors name it.
pub(super) fn kind_name(m: &QueueMessage) -> &'static str {
    match &m.kind {
        Some(Kind::Start(_)) => "start",
        Some(Kind::Check(_)) => "check",
        Some(Kind::Timer(_)) => "timer",
        Some(Kind::Abort(_)) => "abort",
        Some(Kind::Signal(_)) => "signal",
        Some(Kind::ChildDone(_)) => "child-done",
        None => "empty",
    }
}

/// Where dead letter `id` of execution `exec` (None: a body that is no message) is kept in the bucket.
pub fn dead_letter_key(exec: Option<&str>, id: &str) -> String {
    format!(
        "dead-letters/transitions/{}/{id}.json",
        exec.unwrap_or("_undecodable")
    )
}

impl Transition {
    /// Handles one message from the transitions dead-letter queue (see the module's documentation).
    /// An error leaves the message in the queue for a later handling.
    pub async fn dead_letter(&self, r: &Received) -> Result<(), Error> {
        let decoded = crate::queue::decode(&r.body);
        let exec = decoded.as_ref().ok().map(|m| m.execution.as_str());
        let key = dead_letter_key(exec.filter(|e| !e.is_empty()), &r.id);
        let uri = self.clients.blobs.uri(&key);
        let kept = json!({
            "messageId": r.id,
            "execution": exec,
            "kind": decoded.as_ref().ok().map(kind_name),
            "deliveries": self.settings.max_receives,
            "deadLetterReceives": r.receive_count,
            "body": r.body,
            "keptMs": now_ms(),
        });
        self.clients
            .blobs
            .put(&uri, serde_json::to_vec_pretty(&kept).unwrap_or_default())
            .await?;
        let m = match decoded {
            Ok(m) if !m.execution.is_empty() => m,
            Ok(_) | Err(_) => {
                tracing::error!(message_id = %r.id, kept = %uri, "a dead-lettered message names no execution: kept, nothing to fail");
                return Ok(());
            }
        };
        let exec = m.execution.as_str();
        match self.clients.store.execution(exec).await? {
            None => {
                tracing::warn!(execution = %exec, message_id = %r.id, "a dead-lettered message of an execution that does not exist");
                return Ok(());
            }
            Some(item) if is_final(&item.phase) => {
                tracing::info!(execution = %exec, message_id = %r.id, phase = %item.phase, "a dead-lettered message of a finished execution: nothing to fail");
                return Ok(());
            }
            Some(_) => {}
        }
        let reason = format!(
            "a {} message was not processed in {} deliveries (each timed out, crashed, ran out of \
             memory or failed) and went to the dead-letter queue; it is kept at {uri}",
            kind_name(&m),
            self.settings.max_receives,
        );
        let tries = self
            .clients
            .store
            .dead_letter_tries(&r.id, now_ms())
            .await?;
        if tries == 1 {
            let event = Event::Fail {
                code: DEAD_LETTER.into(),
                message: reason.clone(),
            };
            match self.step(exec, vec![event], 0).await {
                Ok(Some(_)) => {
                    tracing::warn!(execution = %exec, message_id = %r.id, "execution failed by a dead-lettered message");
                    return Ok(());
                }
                Ok(None) => {
                    return Err(Error::Aws(format!(
                        "execution {exec}: another transition holds it; the dead letter comes back"
                    )));
                }
                Err(e) => {
                    tracing::error!(execution = %exec, message_id = %r.id, error = %e, "the engine could not fail the execution: failing it without the engine");
                }
            }
        } else {
            tracing::warn!(execution = %exec, message_id = %r.id, handlings = tries, "an earlier handling of this dead letter died: failing the execution without the engine");
        }
        self.fail_without_engine(exec, &reason).await
    }

    /// Fails execution `exec` with `reason` without restoring its engine (see the module's
    /// documentation).
    async fn fail_without_engine(&self, exec: &str, reason: &str) -> Result<(), Error> {
        let now = now_ms();
        let until = now + self.settings.lease.as_millis() as i64;
        let mut item = match self
            .clients
            .store
            .lease(exec, &self.owner, now, until)
            .await?
        {
            Lease::Taken(item) => *item,
            Lease::Busy => {
                return Err(Error::Aws(format!(
                    "execution {exec}: another transition holds it; the dead letter comes back"
                )));
            }
            Lease::Missing => return Ok(()),
        };
        if is_final(&item.phase) {
            self.clients.store.release(exec, &self.owner).await?;
            return Ok(());
        }
        let error = ExecError {
            node: String::new(),
            code: DEAD_LETTER.into(),
            message: reason.to_string(),
            kind: ErrorKind::System,
        };
        let result = async {
            // What runs is stopped first: the commit is the last step, so a handling that dies
            // before it is done again whole.
            let records = super::kept::decode_records(
                exec,
                self.clients.node_records(exec, item.version).await?.joined,
            );
            self.abort_orphans(exec, &records, &Default::default())
                .await?;
            for child in self.running_children_of(exec, &records).await? {
                let abort = AbortMessage {
                    reason: format!("its parent {exec} failed: {reason}"),
                };
                self.clients
                    .queue
                    .send(&message(&child, Kind::Abort(abort)), Duration::ZERO)
                    .await?;
            }
            if let Some((parent, node)) = &item.parent {
                let done = ChildDoneMessage {
                    node: *node,
                    outputs: None,
                    outputs_uri: String::new(),
                    error: Some(error_record(&error)),
                };
                self.clients
                    .queue
                    .send(&message(parent, Kind::ChildDone(done)), Duration::ZERO)
                    .await?;
            }
            // The state's own phase and error agree with the item's (kept as they are when the
            // state is what cannot be read).
            match self.clients.execution_state(&item).await {
                Ok(mut state) => {
                    state.phase = exec_phase_code(ExecPhase::Failed);
                    state.error = Some(error_record(&error));
                    let next = item.version + 1;
                    self.clients.set_state(&mut item, &state, next).await?;
                }
                Err(Error::Invalid(_)) => {}
                Err(e) => return Err(e),
            }
            item.phase = "FAILED".into();
            item.error = Some(format!("[{DEAD_LETTER}] {reason}"));
            self.clients
                .store
                .commit(
                    &item,
                    &self.owner,
                    true,
                    &[],
                    // A finished execution's inbox is of no more use.
                    crate::store::Drained {
                        seen: item.drained,
                        exact: false,
                    },
                    now_ms(),
                    now + self.settings.lease.as_millis() as i64 / 2,
                )
                .await
                .map(|_| ())
        }
        .await;
        if result.is_err() {
            let _ = self.clients.store.release(exec, &self.owner).await;
        }
        result?;
        tracing::warn!(execution = %exec, "execution failed without the engine by a dead-lettered message");
        Ok(())
    }

    /// The child executions of `exec` that its running nodes hold, read from its node records alone
    /// (`records`, no program): a dynamic task's child by the name its record keeps, a launch-plan
    /// node's by the name the engine gives it, when an execution of that name has `exec` as its
    /// parent and is not finished.
    async fn running_children_of(
        &self,
        exec: &str,
        records: &HashMap<u32, NodeState>,
    ) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for node in records.values() {
            if node_phase_of(node.phase) != Some(NodePhase::Running) {
                continue;
            }
            let name = node
                .dynamic
                .clone()
                .unwrap_or_else(|| dns_name(&format!("{exec}-{}", node.id)));
            if let Some(child) = self.clients.store.execution(&name).await?
                && child.parent.as_ref().is_some_and(|(p, _)| p == exec)
                && !is_final(&child.phase)
            {
                out.push(name);
            }
        }
        Ok(out)
    }
}
