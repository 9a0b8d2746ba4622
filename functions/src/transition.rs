//! The transition function: each transitions-queue message becomes an engine event, applied to its
//! execution under the execution's lease; the events of a batch's messages for one execution are
//! applied together, in one transition with one commit, instead of contending for its lease.
//!
//! Order of work, which makes every message safe to deliver twice, late or out of order:
//!
//! 1. A check of a task looks at the task, without the lease (an end signal, which names no handle,
//!    first reads the attempt's kept handle: gone, its end is committed and the signal is dropped);
//!    while it runs, the check is sent again with a longer delay (1, 1, 2, 2, 4, 4, … seconds up to `max_check_delay`). An attempt whose pod tells
//!    when it ended (an [`EndSignal`]: its own check, marked `ended`, sent by the pod's wrapper or
//!    the copilot) is not polled: the execution's sweeps (one timer for all of them, every
//!    `max_check_delay`, the first 8 s after a start) look at each such attempt still kept and send
//!    the check of one that ended.
//! 2. The execution's lease is taken (another transition holding it: the messages are left in the
//!    execution's inbox, which the holder takes in before its commit; see `leave_in_inbox`), its
//!    records are read, the engine's state restored and the inbox's events, if any, taken in.
//! 3. The events are stepped; the effects are carried out at once, each idempotent by its deterministic
//!    name (objects that exist are kept; inputs are rewritten with the same bytes). At most
//!    `UPDRAFT_MAX_STARTS` task attempts start; the rest wait in the state and a message to go on
//!    (a `Continue` timer) starts them in the transitions that follow.
//! 4. Only then is the new state committed (the records that changed), conditional on the lease. A crash
//!    before the commit leaves the old state: the redelivered message steps it again, producing the same
//!    effects, which find their work already done.
//!
//! A message that keeps failing is retried by SQS; on its last delivery (`UPDRAFT_MAX_RECEIVES`) its
//! execution is failed with the reason (running work stopped) before the message goes to the dead-letter
//! queue. A message that used up its deliveries any other way (the function timed out, crashed or ran
//! out of memory each time) is failed by the dead-letter queue's consumer (`dead_letter`).

mod dead_letter;
mod kept;

pub use dead_letter::{DEAD_LETTER, dead_letter_key};

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use updraft_connector::effects::{Child, Reservation};
use updraft_connector::{Attempt, Connector, EndSignal, Handle, Registry, failed};
use updraft_connector_eks::{AttemptPaths, Cluster, EksConfig, EksConnector};
use updraft_engine::compile::{CompiledTask, NodeIdx};
use updraft_engine::exec::{
    Effect, ErrorKind, Event, ExecError, ExecPhase, Execution, NodePhase, Program, TaskLaunch,
    TaskStatus, TimerKind, error_from_record, error_record, exec_phase, exec_phase_code,
};
use updraft_proto::Message;
use updraft_proto::core::LiteralMap;
use updraft_proto::updraft::{
    AbortMessage, CheckMessage, ChildDoneMessage, NodeState, QueueMessage, SignalMessage,
    StartMessage, TimerMessage, queue_message::Kind,
};

use crate::launch::Packages;
use crate::store::{
    Committed, Drained, ExecutionItem, KeptHandle, Lease, MAX_INLINE_RECORD, NodeBytes, NodeRecord,
    NodeWrite,
};
use crate::{Clients, Error, Settings, now_ms};

/// A message as the queue delivered it.
#[derive(Debug, Clone)]
pub struct Received {
    /// SQS message id (reported back when it failed).
    pub id: String,
    /// The body.
    pub body: String,
    /// How many times it has been delivered (`ApproximateReceiveCount`).
    pub receive_count: u32,
    /// It came from the dead-letter queue: its deliveries are used up (see [`Transition::dead_letter`]).
    pub dead_letter: bool,
}

/// How many times an end signal's check looks again (a second apart) while the cluster still shows the
/// attempt running.
const ENDED_CHECKS: u32 = 5;

/// The timer kind of an execution's sweep (a runtime timer, not the engine's).
pub const SWEEP_TIMER: u32 = 6;

/// How long after arming the first sweep of an execution comes (later ones: `max_check_delay`).
const FIRST_SWEEP: Duration = Duration::from_secs(8);

/// How many times a group of messages finds its execution busy, leaves them in its inbox and finds the
/// lease free again before they are sent again instead.
const INBOX_TRIES: u32 = 3;

/// Inbox entries prepared, or a sweep's attempts looked at, at once.
const INBOX_PARALLEL: usize = 16;

/// Task attempts a transition starts at once (each its connector's start, its handle kept, its check
/// sent).
const PARALLEL_STARTS: usize = 16;

/// A transition takes in the inbox's events until this part of its lease has passed; then it commits
/// what it has and leaves the rest to the next (it sends a [`DRAIN_TIMER`] when some are left).
const INBOX_PART: i64 = 4;

/// The timer kind that has a transition take in an execution's inbox (a runtime timer).
pub const DRAIN_TIMER: u32 = 7;

/// A child's end carries its outputs up to this size; larger ones are read from the bucket.
const MAX_INLINE_MESSAGE: usize = 192 * 1024;

/// The stored name of an execution phase.
pub fn phase_name(code: u32) -> &'static str {
    match exec_phase(code) {
        Some(ExecPhase::Queued) => "QUEUED",
        Some(ExecPhase::Running) => "RUNNING",
        Some(ExecPhase::Failing) => "FAILING",
        Some(ExecPhase::Succeeded) => "SUCCEEDED",
        Some(ExecPhase::Failed) => "FAILED",
        Some(ExecPhase::Aborted) => "ABORTED",
        None => "UNKNOWN",
    }
}

/// True for the phases of a finished execution.
pub fn is_final(phase: &str) -> bool {
    matches!(phase, "SUCCEEDED" | "FAILED" | "ABORTED")
}

/// The delay before check number `checks` of a running task.
pub fn check_delay(checks: u32, max: Duration) -> Duration {
    let secs = 1u64 << (checks / 2).min(10);
    Duration::from_secs(secs)
        .min(max)
        .max(Duration::from_secs(1))
}

fn timer_kind(code: u32) -> Option<TimerKind> {
    match code {
        1 => Some(TimerKind::Sleep),
        2 => Some(TimerKind::AttemptTimeout),
        3 => Some(TimerKind::NodeTimeout),
        4 => Some(TimerKind::CacheWait),
        5 => Some(TimerKind::Continue),
        _ => None,
    }
}

/// The sort key of an attempt's latest wait on a reserved cache key (`cachewait#<this>`).
fn wait_key(node: NodeIdx, index: Option<u32>, attempt: u32) -> String {
    match index {
        Some(i) => format!("{node}-{i}-{attempt}"),
        None => format!("{node}-{attempt}"),
    }
}

fn timer_code(kind: TimerKind) -> u32 {
    match kind {
        TimerKind::Sleep => 1,
        TimerKind::AttemptTimeout => 2,
        TimerKind::NodeTimeout => 3,
        TimerKind::CacheWait => 4,
        TimerKind::Continue => 5,
    }
}

fn message(execution: &str, kind: Kind) -> QueueMessage {
    QueueMessage {
        execution: execution.into(),
        kind: Some(kind),
    }
}

/// A message that has a transition take in execution `exec`'s inbox.
fn drain_message(exec: &str) -> QueueMessage {
    message(
        exec,
        Kind::Timer(TimerMessage {
            kind: DRAIN_TIMER,
            due_ms: now_ms(),
            ..Default::default()
        }),
    )
}

/// True for a message that has a transition take in its execution's inbox.
fn is_drain(m: &QueueMessage) -> bool {
    matches!(&m.kind, Some(Kind::Timer(t)) if t.kind == DRAIN_TIMER)
}

/// Where an execution's data lives in the bucket.
pub fn data_prefix(clients: &Clients, execution: &str) -> String {
    clients.blobs.uri(&format!("executions/{execution}"))
}

/// The transition function's state (kept while the function stays warm).
pub struct Transition {
    settings: Settings,
    clients: Clients,
    /// The connectors that run this stack's tasks.
    registry: Registry,
    packages: Packages,
    owner: String,
}

/// The handle a check message carries.
fn handle_of(c: &CheckMessage) -> Result<Handle, Error> {
    serde_json::from_str(&c.handle)
        .map_err(|e| Error::Invalid(format!("check of {}: bad handle: {e}", c.name)))
}

/// What one transition did, for callers that wait on it (tests, benchmarks).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Task attempts started.
    pub started: Vec<String>,
    /// Of the task attempts whose statuses were stepped, those (node, element, attempt) the committed
    /// state has over, so their objects can go. (An attempt whose start was never committed is not
    /// over: its start comes again and must find the objects it made, not launch them a second time.)
    pub over: Vec<(NodeIdx, Option<u32>, u32)>,
    /// The execution had already finished: every attempt of it is over.
    pub finished: bool,
    /// Of the attempts in [`Outcome::over`], those that were over before this transition (their
    /// checks came late or twice).
    pub stale: Vec<(NodeIdx, Option<u32>, u32)>,
}

impl Outcome {
    /// True when attempt `attempt` of `node` (element `index`) is over (see [`Outcome::over`]).
    pub fn is_over(&self, node: NodeIdx, index: Option<u32>, attempt: u32) -> bool {
        self.finished || self.over.contains(&(node, index, attempt))
    }

    /// True when attempt `attempt` of `node` (element `index`) was over before this transition.
    pub fn was_over(&self, node: NodeIdx, index: Option<u32>, attempt: u32) -> bool {
        self.finished || self.stale.contains(&(node, index, attempt))
    }
}

impl Transition {
    /// Connects to the cluster the settings name (EKS with the function's identity, or, without a
    /// cluster in the settings, the kubeconfig at `$KUBECONFIG`).
    pub async fn new(settings: Settings, clients: Clients) -> Result<Self, Error> {
        let cluster = match &settings.eks {
            Some(config) => {
                let mut c = match &config.cluster {
                    Some(eks) => Cluster::from_eks(eks, &clients.sdk).await,
                    None => Cluster::from_kubeconfig(None).await,
                }
                .map_err(|e| Error::Setting {
                    name: "UPDRAFT_EKS".into(),
                    reason: e.to_string(),
                })?;
                c.image_pull_grace = Duration::from_secs(config.image_pull_grace_seconds);
                Some((c, config.clone()))
            }
            None => None,
        };
        Ok(Self::with_cluster(settings, clients, cluster))
    }

    /// With a cluster already connected (and its settings), or none.
    pub fn with_cluster(
        settings: Settings,
        clients: Clients,
        cluster: Option<(Cluster, EksConfig)>,
    ) -> Self {
        let owner = format!("{}-{}", std::process::id(), now_ms());
        let eks = cluster.map(|(c, config)| Arc::new(EksConnector::new(c, config)));
        let registry = settings.registry(eks, &clients.sdk);
        Self {
            settings,
            clients,
            registry,
            packages: Packages::default(),
            owner,
        }
    }

    /// Handles a batch; returns the ids of the messages that failed (SQS delivers them again).
    pub async fn handle(&self, batch: Vec<Received>) -> Vec<String> {
        let used = self.clients.store.consumed();
        let before = (used.read_units(), used.write_units(), used.requests());
        let messages = batch.len();
        let failures = self.handle_batch(batch).await;
        tracing::info!(
            messages,
            failed = failures.len(),
            dynamodb_requests = used.requests() - before.2,
            read_units = used.read_units() - before.0,
            write_units = used.write_units() - before.1,
            "batch handled"
        );
        failures
    }

    async fn handle_batch(&self, batch: Vec<Received>) -> Vec<String> {
        let mut failures = Vec::new();
        let mut groups: Vec<(String, Vec<(Received, QueueMessage)>)> = Vec::new();
        for r in batch {
            if r.dead_letter {
                if let Err(e) = self.dead_letter(&r).await {
                    tracing::error!(message_id = %r.id, error = %e, "a dead letter could not be handled; it comes back");
                    failures.push(r.id);
                }
                continue;
            }
            let m = match crate::queue::decode(&r.body) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(message_id = %r.id, error = %e, "undecodable message");
                    failures.push(r.id);
                    continue;
                }
            };
            if self.settings.has_fault("die") && self.die(&m.execution).await {
                failures.push(r.id);
                continue;
            }
            match groups.iter_mut().find(|(e, _)| *e == m.execution) {
                Some((_, g)) => g.push((r, m)),
                None => groups.push((m.execution.clone(), vec![(r, m)])),
            }
        }
        // The messages of one execution in the batch are applied together, under one lease; the
        // executions of a batch at once.
        let handled = futures_util::future::join_all(groups.into_iter().map(|(_, group)| async {
            let msgs: Vec<(QueueMessage, u32)> = group
                .iter()
                .map(|(r, m)| (m.clone(), r.receive_count))
                .collect();
            let results = self.process_group(&msgs).await;
            (group, results)
        }))
        .await;
        for (group, results) in handled {
            for ((r, m), result) in group.into_iter().zip(results) {
                let Err(e) = result else { continue };
                tracing::error!(execution = %m.execution, message_id = %r.id, receive_count = r.receive_count, error = %e, "transition failed");
                if r.receive_count >= self.settings.max_receives
                    && !matches!(e, Error::LostLease(_))
                    && let Err(e2) = self.fail_execution(&m, &e).await
                {
                    tracing::error!(execution = %m.execution, error = %e2, "could not fail the execution");
                }
                failures.push(r.id);
            }
        }
        failures
    }

    /// Fault injection (`UPDRAFT_FAULT` with `die`): a transition of an execution named `die-hang…`
    /// never returns (the function times out), `die-exit…` ends the process, `die-oom…` takes memory
    /// until the function is killed, `die-throttle…` fails as a throttled table would, every delivery
    /// (true: the message failed). Dead letters are never subject to it.
    async fn die(&self, exec: &str) -> bool {
        if exec.starts_with("die-hang") {
            tracing::warn!(execution = %exec, "fault injection: hanging past the function's timeout");
            std::future::pending::<()>().await;
        } else if exec.starts_with("die-exit") {
            tracing::warn!(execution = %exec, "fault injection: exiting mid-transition");
            std::process::exit(71);
        } else if exec.starts_with("die-oom") {
            tracing::warn!(execution = %exec, "fault injection: taking memory until killed");
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 32 << 20]);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else if exec.starts_with("die-throttle") {
            tracing::error!(execution = %exec, "fault injection: ThrottlingException: Rate of requests exceeds the allowed throughput");
            return true;
        }
        false
    }

    /// Fails the execution of a message that could not be processed; another transition holding the
    /// execution is an error (the message then goes to the dead-letter queue, whose consumer fails it).
    async fn fail_execution(&self, m: &QueueMessage, e: &Error) -> Result<(), Error> {
        let kind = dead_letter::kind_name(m);
        let event = Event::Fail {
            code: "PoisonMessage".into(),
            message: format!(
                "a {kind} message could not be processed after {} deliveries and went to the \
                 dead-letter queue: {e}",
                self.settings.max_receives
            ),
        };
        match self.step(&m.execution, vec![event], 0).await? {
            Some(_) => Ok(()),
            None => Err(Error::Aws(format!(
                "execution {}: another transition holds it",
                m.execution
            ))),
        }
    }

    /// Handles messages of one execution together: each is first looked at on its own (a running
    /// task's check, a timer not yet due, a stale wait: done with, without the lease), then the events
    /// of the rest are applied in one transition, under one lease, with one commit. Another transition
    /// holding the execution: they are sent again, a second later. One result per message.
    pub async fn process_group(&self, group: &[(QueueMessage, u32)]) -> Vec<Result<(), Error>> {
        let mut results = Vec::with_capacity(group.len());
        let mut events = Vec::new();
        // Each looked at on its own, all at once (a batch of task ends: a check each).
        let prepared = futures_util::future::join_all(group.iter().map(|(m, _)| self.prepare(m)));
        for (i, r) in prepared.await.into_iter().enumerate() {
            results.push(match r {
                Ok(Some(event)) => {
                    events.push((i, event));
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            });
        }
        let Some(exec) = group.first().map(|(m, _)| m.execution.as_str()) else {
            return results;
        };
        // A drain has the transition run even with no event of its own.
        if events.is_empty() && !group.iter().any(|(m, _)| is_drain(m)) {
            return results;
        }
        let receive_count = events.iter().map(|(i, _)| group[*i].1).min().unwrap_or(1);
        let mut tries = 0;
        let stepped = loop {
            tries += 1;
            let stepped = events.iter().map(|(_, e)| e.clone()).collect();
            match self.step(exec, stepped, receive_count).await {
                Err(Error::LostLease(_)) | Ok(None) if tries < INBOX_TRIES => {}
                other => break other,
            }
            // Another transition holds the execution: the events wait in its inbox for it.
            let msgs: Vec<&QueueMessage> = events.iter().map(|(i, _)| &group[*i].0).collect();
            match self.leave_in_inbox(exec, &msgs).await {
                Ok(true) => return results,
                // The lease came free meanwhile: take it.
                Ok(false) => continue,
                Err(e) => break Err(e),
            }
        };
        match stepped {
            Err(Error::LostLease(_)) | Ok(None) => {
                // Still busy: try again shortly (the original messages are done with).
                for (i, _) in &events {
                    if let Err(e) = self
                        .clients
                        .queue
                        .send(&group[*i].0, Duration::from_secs(1))
                        .await
                    {
                        results[*i] = Err(e);
                    }
                }
            }
            Ok(Some(o)) => {
                let ended = events.iter().map(|(i, event)| (&group[*i].0, event));
                self.clean_up_all_over(exec, ended, &o).await;
            }
            Err(e) => {
                // Every message of the transition failed with it (the first with the error itself).
                let text = e.to_string();
                let mut first = Some(e);
                for (i, _) in &events {
                    results[*i] = Err(first.take().unwrap_or_else(|| Error::Aws(text.clone())));
                }
            }
        }
        results
    }

    /// Leaves messages `msgs` in execution `exec`'s inbox for the transition holding its lease: true
    /// when it holds it still (it takes them in before it commits), false when the lease came free
    /// (the entries are taken out again: the caller takes the lease itself).
    async fn leave_in_inbox(&self, exec: &str, msgs: &[&QueueMessage]) -> Result<bool, Error> {
        let now = now_ms();
        let mut ids = Vec::with_capacity(msgs.len());
        for m in msgs {
            let bytes = m.encode_to_vec();
            let id = updraft_wire::short_digest(&bytes);
            self.clients.store.put_inbox(exec, &id, &bytes, now).await?;
            ids.push(id);
        }
        if self
            .clients
            .store
            .count_inbox(exec, ids.len() as u64, now_ms())
            .await?
        {
            tracing::debug!(execution = %exec, events = ids.len(), "left in the inbox of a busy execution");
            return Ok(true);
        }
        self.clients.store.drop_inbox(exec, &ids).await?;
        Ok(false)
    }

    /// The events waiting in execution `exec`'s inbox that are not in `taken` (which they join), with
    /// their messages: each prepared as a delivered message is (see [`Self::prepare`]; one that needs
    /// no transition has none).
    async fn take_inbox(
        &self,
        exec: &str,
        taken: &mut std::collections::HashSet<String>,
    ) -> Result<Vec<(QueueMessage, Option<Event>)>, Error> {
        let entries: Vec<_> = self
            .clients
            .store
            .inbox(exec)
            .await?
            .into_iter()
            .filter(|e| taken.insert(e.id.clone()))
            .collect();
        let mut out = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(INBOX_PARALLEL) {
            let prepared = chunk.iter().map(|e| async move {
                let m = QueueMessage::decode(e.message.as_slice()).map_err(|err| {
                    Error::Invalid(format!("execution {exec}: inbox entry {}: {err}", e.id))
                })?;
                let event = self.prepare(&m).await?;
                Ok::<_, Error>((m, event))
            });
            for r in futures_util::future::join_all(prepared).await {
                out.push(r?);
            }
        }
        if !out.is_empty() {
            tracing::info!(execution = %exec, events = out.len(), "took in the inbox's events");
        }
        Ok(out)
    }

    /// The engine event of message `m`; None when it needs no transition (a check of a task that
    /// still runs, sent again later; a timer not yet due, sent on; a stale wait).
    async fn prepare(&self, m: &QueueMessage) -> Result<Option<Event>, Error> {
        let exec = m.execution.as_str();
        let event = match &m.kind {
            None => return Err(Error::Invalid("message without a kind".into())),
            // The inputs are the execution item's (read under the lease).
            Some(Kind::Start(_)) => Event::Start {
                inputs: LiteralMap::default(),
            },
            Some(Kind::Check(c)) => {
                // An end signal may name no handle (its connector could not tell it before the
                // start): the kept one. An attempt with none kept never started.
                let mut c = c.clone();
                if c.handle.is_empty() {
                    let Some(kept) = self.clients.store.handle(exec, &c.name).await? else {
                        tracing::debug!(execution = %exec, attempt_name = %c.name, "the end signal of an attempt that is over");
                        return Ok(None);
                    };
                    c.handle = kept;
                }
                let Some(status) = self.check(exec, &c).await? else {
                    let mut next = c.clone();
                    next.checks += 1;
                    let delay = if c.ended {
                        // The cluster has not seen the end yet: again a second later, a few times;
                        // then the attempt's polls go on alone.
                        if next.checks > ENDED_CHECKS {
                            return Ok(None);
                        }
                        Duration::from_secs(1)
                    } else {
                        check_delay(next.checks, self.settings.max_check_delay)
                    };
                    self.clients
                        .queue
                        .send(&message(exec, Kind::Check(next)), delay)
                        .await?;
                    return Ok(None);
                };
                Event::Task {
                    node: c.node,
                    index: c.index,
                    attempt: c.attempt,
                    status,
                }
            }
            Some(Kind::Timer(t)) => {
                let left = t.due_ms - now_ms();
                if left > 0 {
                    self.clients
                        .queue
                        .send(m, Duration::from_millis(left as u64))
                        .await?;
                    return Ok(None);
                }
                if t.kind == SWEEP_TIMER {
                    self.sweep(exec, t.due_ms).await?;
                    return Ok(None);
                }
                // The inbox is taken in by any transition of the execution (see `process_group`).
                if t.kind == DRAIN_TIMER {
                    return Ok(None);
                }
                let kind = timer_kind(t.kind)
                    .ok_or_else(|| Error::Invalid(format!("unknown timer kind {}", t.kind)))?;
                if kind == TimerKind::CacheWait
                    && self
                        .clients
                        .store
                        .wait_due(exec, &wait_key(t.node, t.index, t.attempt))
                        .await?
                        .is_some_and(|due| due != t.due_ms)
                {
                    tracing::debug!(execution = %exec, node = t.node, "a stale wait on a reserved cache key");
                    return Ok(None);
                }
                Event::Timer {
                    node: t.node,
                    index: t.index,
                    attempt: t.attempt,
                    kind,
                }
            }
            Some(Kind::Abort(a)) => Event::Abort {
                reason: a.reason.clone(),
            },
            Some(Kind::Signal(s)) => Event::Signal {
                id: s.id.clone(),
                value: Box::new(s.value.clone().unwrap_or_default()),
            },
            Some(Kind::ChildDone(c)) => Event::Child {
                node: c.node,
                result: match (&c.error, c.outputs_uri.as_str()) {
                    (Some(e), _) => Err(error_from_record(e.clone())),
                    (None, "") => Ok(c.outputs.clone().unwrap_or_default()),
                    (None, uri) => {
                        let bytes = self.clients.blobs.get(uri).await?.ok_or_else(|| {
                            Error::Invalid(format!(
                                "the outputs of a child of {exec} at {uri} are missing"
                            ))
                        })?;
                        Ok(LiteralMap::decode(bytes.as_slice())
                            .map_err(|e| Error::Invalid(format!("{uri}: {e}")))?)
                    }
                },
            },
        };
        Ok(Some(event))
    }

    /// [`Self::clean_up_if_over`] for each of `ended` (a message and its event), several at once.
    async fn clean_up_all_over<'m>(
        &self,
        exec: &str,
        ended: impl Iterator<Item = (&'m QueueMessage, &'m Event)>,
        o: &Outcome,
    ) {
        let ended: Vec<_> = ended.collect();
        for chunk in ended.chunks(INBOX_PARALLEL) {
            let cleanups = chunk
                .iter()
                .map(|(m, event)| self.clean_up_if_over(exec, m, event, o));
            futures_util::future::join_all(cleanups).await;
        }
    }

    /// When message `m` is a check whose `event` ends an attempt `o` has over, cleans up after it
    /// (see [`Self::delete_finished`]).
    async fn clean_up_if_over(&self, exec: &str, m: &QueueMessage, event: &Event, o: &Outcome) {
        if let (
            Some(Kind::Check(c)),
            Event::Task {
                node,
                index,
                attempt,
                ..
            },
        ) = (&m.kind, event)
            && o.is_over(*node, *index, *attempt)
        {
            let stale = o.was_over(*node, *index, *attempt);
            self.delete_finished(exec, c, stale).await;
        }
    }

    /// Cleans up after a finished attempt once its end is committed (its connector's `finalize`: a
    /// cluster's objects deleted when the settings say so); a failure is logged, not retried. Its
    /// handle stays kept (the table's TTL deletes it): the records say it ended, which is what the
    /// readers of kept handles go by (see `kept`).
    ///
    /// An attempt that was over before this transition (`stale`: a late or repeated check, or one the
    /// transition that committed its end died before cleaning up after) is cleaned up again: finalizing
    /// what is gone is fine.
    async fn delete_finished(&self, exec: &str, c: &CheckMessage, stale: bool) {
        // An end signal names no handle: the kept one (a check reaches here only after it read well).
        let mut c = c.clone();
        if c.handle.is_empty() {
            match self.clients.store.handle(exec, &c.name).await {
                Ok(Some(h)) => c.handle = h,
                _ => return,
            }
        }
        let Ok(h) = handle_of(&c) else {
            return;
        };
        let Some(conn) = self.registry.named(&h.connector) else {
            return;
        };
        if let Err(e) = conn.finalize(&h).await {
            tracing::warn!(execution = %exec, attempt_name = %c.name, stale, error = %e, "could not clean up after a finished attempt");
        }
    }

    /// Makes sure a sweep of the execution of `item` (leased) is on its way: unless one is due later
    /// than in two seconds, one is sent (`FIRST_SWEEP`, at most `max_check_delay`, from now) and the
    /// commit records it as the latest. Only the latest sweep acts, so chains never multiply.
    async fn arm_sweep(&self, item: &mut ExecutionItem) -> Result<(), Error> {
        let now = now_ms();
        if item.sweep_due.is_some_and(|due| due > now + 2000) {
            return Ok(());
        }
        let after = FIRST_SWEEP.min(self.settings.max_check_delay);
        let due = now + after.as_millis() as i64;
        self.send_sweep(&item.name, due, after).await?;
        item.new_sweep_due = Some(due);
        Ok(())
    }

    async fn send_sweep(&self, exec: &str, due: i64, after: Duration) -> Result<(), Error> {
        let t = TimerMessage {
            kind: SWEEP_TIMER,
            due_ms: due,
            ..Default::default()
        };
        self.clients
            .queue
            .send(&message(exec, Kind::Timer(t)), after)
            .await
    }

    /// A sweep of execution `exec`: the fallback for attempts that signal their ends (their own end
    /// signal may never come: a pod that never started, a node that went away, a role without the
    /// permission). Each such attempt whose handle is kept and that the execution's records do not
    /// have over is looked at; one that ended has its check sent now (marked `ended`); while any is
    /// live, the next sweep comes `max_check_delay` later. A sweep that is not the latest (the
    /// execution's `sweep_due`), or of an execution that has finished, does nothing.
    async fn sweep(&self, exec: &str, due: i64) -> Result<(), Error> {
        let Some(item) = self.clients.store.execution(exec).await? else {
            return Ok(());
        };
        if item.sweep_due != Some(due) || is_final(&item.phase) {
            tracing::debug!(execution = %exec, "a stale sweep");
            return Ok(());
        }
        let mut checks = Vec::new();
        for h in self.clients.store.handles(exec).await? {
            let Some(bytes) = h.check else {
                continue;
            };
            let m = QueueMessage::decode(bytes.as_slice())
                .map_err(|e| Error::Invalid(format!("attempt {}: a bad check: {e}", h.name)))?;
            if let Some(Kind::Check(mut c)) = m.kind {
                // Kept without its handle, which is the item's own.
                if c.handle.is_empty() {
                    c.handle = h.handle;
                }
                checks.push(c);
            }
        }
        // Handles outlive their attempts' ends: only the live ones are looked at.
        if !checks.is_empty() {
            let records = kept::decode_records(
                exec,
                self.clients.node_records(exec, item.version).await?.joined,
            );
            checks.retain(|c| {
                kept::standing(&records, (c.node, c.index, c.attempt)) == kept::Standing::Live
            });
        }
        let kept = checks.len();
        let mut ended = 0;
        // Looked at several at once: a wide map keeps many.
        for chunk in checks.chunks(INBOX_PARALLEL) {
            let looked = chunk.iter().map(|c| async move {
                let done = self.check(exec, c).await?.is_some();
                if done {
                    let mut c = c.clone();
                    c.ended = true;
                    self.clients
                        .queue
                        .send(&message(exec, Kind::Check(c)), Duration::ZERO)
                        .await?;
                }
                Ok::<_, Error>(done)
            });
            for r in futures_util::future::join_all(looked).await {
                ended += usize::from(r?);
            }
        }
        tracing::info!(execution = %exec, attempts = kept, ended, "sweep");
        if kept > ended {
            let after = self.settings.max_check_delay;
            let next = now_ms() + after.as_millis() as i64;
            // Another sweep became the latest meanwhile (a transition armed one): it goes on alone.
            if self.clients.store.move_sweep(exec, due, next).await? {
                self.send_sweep(exec, next, after).await?;
            }
        }
        Ok(())
    }

    /// How long a serializable cache key stays reserved for an attempt not seen since: five of the
    /// longest waits between two checks (each check renews it), at least a minute.
    fn cache_lease(&self) -> Duration {
        (self.settings.max_check_delay * 5).max(Duration::from_secs(60))
    }

    /// Looks at a task attempt through its connector; None while it runs. What it made stays: it goes
    /// once the engine has committed the attempt's end (see [`Outcome::over`]). A check that
    /// cannot be made fails the message, so SQS tries again (and, past its receives, the execution
    /// fails with the reason).
    async fn check(&self, exec: &str, c: &CheckMessage) -> Result<Option<TaskStatus>, Error> {
        let h = handle_of(c)?;
        let Some(conn) = self.registry.named(&h.connector) else {
            return Err(Error::Setting {
                name: "UPDRAFT_EKS / UPDRAFT_SETTINGS".into(),
                reason: format!(
                    "a check of a `{}` attempt arrived but the function has no such connector",
                    h.connector
                ),
            });
        };
        // An end signal that carried the attempt's outputs spares reading them from the bucket.
        let status = if c.outputs.is_empty() {
            conn.check(&h, &self.clients.blobs).await
        } else {
            let data = updraft_connector::WithOutputs::new(
                &self.clients.blobs,
                &c.output_prefix,
                &c.outputs,
            );
            conn.check(&h, &data).await
        }
        .map_err(|e| Error::Aws(format!("check of {}: {e}", c.name)))?;
        let reserved = c.cache_serializable && !c.cache_key.is_empty();
        if matches!(status, TaskStatus::Queued | TaskStatus::Running) {
            if reserved {
                let until = now_ms() + self.cache_lease().as_millis() as i64;
                self.clients
                    .store
                    .renew_cached(&c.cache_key, &c.name, until)
                    .await?;
            }
            return Ok(None);
        }
        if let (TaskStatus::Succeeded { outputs, .. }, false) = (&status, c.cache_key.is_empty()) {
            self.clients
                .store
                .put_cached(&c.cache_key, &outputs.encode_to_vec())
                .await?;
        }
        // Stored (or failed): an attempt waiting on the same key may look again.
        if reserved {
            self.clients
                .store
                .release_cached(&c.cache_key, &c.name)
                .await?;
        }
        tracing::debug!(execution = %exec, attempt_name = %c.name, "attempt ended");
        Ok(Some(status))
    }

    /// The program `item` runs: its package's workflow; for a dynamic task's child, the sub-workflow
    /// the task returned, compiled over its parent's program (itself perhaps a dynamic task's child).
    async fn program(&self, item: &ExecutionItem) -> Result<Program, Error> {
        let Some(futures) = &item.futures else {
            return Ok(Program {
                package: self.packages.get(&self.clients, &item.package).await?,
                workflow: item.workflow.clone(),
            });
        };
        if let Some(p) = self.packages.dynamic(&item.name) {
            return Ok(p);
        }
        let Some((parent_name, node)) = &item.parent else {
            return Err(Error::Invalid(format!(
                "execution {}: a dynamic sub-workflow without a parent",
                item.name
            )));
        };
        let parent = self
            .clients
            .store
            .execution(parent_name)
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "execution {}: its parent {parent_name} is gone",
                    item.name
                ))
            })?;
        let parent_program = Box::pin(self.program(&parent)).await?;
        let uri = self.clients.blobs.uri(futures);
        let bytes = self.clients.blobs.get(&uri).await?.ok_or_else(|| {
            Error::Invalid(format!("execution {}: no sub-workflow at {uri}", item.name))
        })?;
        let spec = updraft_proto::core::DynamicJobSpec::decode(bytes.as_slice())
            .map_err(|e| Error::Invalid(format!("{uri}: {e}")))?;
        let wf_node = parent_program
            .package
            .workflows
            .get(&parent_program.workflow)
            .and_then(|w| w.nodes.get(*node as usize))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "execution {}: its parent has no node {node}",
                    item.name
                ))
            })?;
        let (package, workflow) = updraft_engine::compile::compile_dynamic(
            &parent_program.package,
            &wf_node.id,
            &wf_node.outputs,
            &spec,
        )
        .map_err(|p| Error::Invalid(format!("{uri}: {p}")))?;
        let program = Program {
            package: Arc::new(package),
            workflow,
        };
        self.packages.keep_dynamic(&item.name, &program);
        Ok(program)
    }

    /// The node states of execution `exec` at its version `version`: decoded, as stored (by node
    /// index) and the records as read.
    async fn node_states(
        &self,
        exec: &str,
        version: u64,
    ) -> Result<
        (
            Vec<NodeState>,
            HashMap<(u32, u32), Vec<u8>>,
            Vec<NodeRecord>,
        ),
        Error,
    > {
        let mut states = Vec::new();
        let read = self.clients.node_records(exec, version).await?;
        for (index, raw) in read.joined {
            let state = NodeState::decode(raw.as_slice())
                .map_err(|e| Error::Invalid(format!("node record {index}: {e}")))?;
            states.push(state);
        }
        Ok((states, read.parts, read.records))
    }

    /// Applies `event` to execution `exec` under its lease; None when another transition holds it.
    pub async fn step(
        &self,
        exec: &str,
        events: Vec<Event>,
        receive_count: u32,
    ) -> Result<Option<Outcome>, Error> {
        let now = now_ms();
        let until = now + self.settings.lease.as_millis() as i64;
        let item = match self
            .clients
            .store
            .lease(exec, &self.owner, now, until)
            .await?
        {
            Lease::Taken(item) => *item,
            Lease::Busy => return Ok(None),
            Lease::Missing => return Err(Error::Invalid(format!("no execution `{exec}`"))),
        };
        let result = self.step_leased(item, events, receive_count).await;
        if result
            .as_ref()
            .is_err_and(|e| !matches!(e, Error::Injected(_)))
        {
            let _ = self.clients.store.release(exec, &self.owner).await;
        }
        result.map(Some)
    }

    async fn step_leased(
        &self,
        item: ExecutionItem,
        events: Vec<Event>,
        receive_count: u32,
    ) -> Result<Outcome, Error> {
        let exec = item.name.clone();
        let started = now_ms();
        if is_final(&item.phase) || (events.is_empty() && !item.inbox_pending()) {
            self.clients.store.release(&exec, &self.owner).await?;
            return Ok(Outcome {
                finished: is_final(&item.phase),
                ..Outcome::default()
            });
        }
        let program = self.program(&item).await?;
        let state = self.clients.execution_state(&item).await?;
        let overwrite_cache = state.overwrite_cache;
        // Writes stop once half the lease has passed (see `store`).
        let deadline = now_ms() + self.settings.lease.as_millis() as i64 / 2;
        let (nodes, mut loaded, records) = self.node_states(&exec, item.version).await?;
        // Records a transition that never committed wrote into are written again (see `store`).
        let stale: std::collections::HashSet<(u32, u32)> = records
            .iter()
            .filter(|r| r.stale)
            .map(|r| (r.index, r.part))
            .collect();
        let committed: HashMap<(u32, u32), (u8, u64, NodeBytes)> = records
            .iter()
            .filter_map(|r| r.committed().map(|c| ((r.index, r.part), c)))
            .collect();
        let mut engine = Execution::restore(&program, state, nodes)
            .map_err(|e| Error::Invalid(format!("execution {exec}: {e}")))?;
        engine.limit_starts(Some(self.settings.max_starts));
        // A node without a record is as a new execution has it; it needs one once it changes.
        for i in 0..engine.node_count() as u32 {
            if !loaded.contains_key(&(i, 0))
                && let Some(rec) = engine.node_record(i)
            {
                for (part, bytes) in updraft_aws::parts::split(&rec.encode_to_vec()) {
                    loaded.insert((i, part), bytes);
                }
            }
        }
        let mut attempts = Vec::new();
        let mut forward = Vec::new();
        let mut queued = VecDeque::new();
        for event in events {
            self.queue_event(&item, &mut queued, &mut attempts, &mut forward, event)
                .await?;
        }
        // The attempts whose ends these events report that were over already.
        let mut stale_attempts: Vec<_> = attempts
            .iter()
            .copied()
            .filter(|&(n, i, a)| engine.attempt_over(n, i, a))
            .collect();
        let mut ctx = Ctx {
            item,
            program: &program,
            overwrite_cache,
            events: queued,
            outcome: Outcome::default(),
            first_start: false,
            sweep: false,
            pending: Vec::new(),
            orphans: false,
            kept: None,
            stopped: Default::default(),
        };
        // The events left in the inbox while others held the lease are taken in with these, and so are
        // those that reach it before the commit (until a part of the lease has passed).
        let mut taken = std::collections::HashSet::new();
        let mut inboxed: Vec<(QueueMessage, Event)> = Vec::new();
        let mut seen = ctx.item.inbox;
        let drain_until = started + self.settings.lease.as_millis() as i64 / INBOX_PART;
        let mut take = ctx.item.inbox_pending();
        let mut take_again = false;
        let mut guard = 0;
        let mut first = true;
        loop {
            if take {
                for (m, event) in self.take_inbox(&exec, &mut taken).await? {
                    let Some(event) = event else { continue };
                    inboxed.push((m, event.clone()));
                    if let Event::Task {
                        node,
                        index,
                        attempt,
                        ..
                    } = event
                        && engine.attempt_over(node, index, attempt)
                    {
                        stale_attempts.push((node, index, attempt));
                    }
                    if !matches!(event, Event::Start { .. }) || engine.phase() == ExecPhase::Queued
                    {
                        self.queue_event(
                            &ctx.item,
                            &mut ctx.events,
                            &mut attempts,
                            &mut forward,
                            event,
                        )
                        .await?;
                    }
                }
            }
            // Starts wait in `ctx.pending` and go several at once: before any effect that must
            // see them made (an abort, a child, the end), once enough wait, and once no event is left.
            loop {
                while let Some(ev) = ctx.events.pop_front() {
                    guard += 1;
                    if guard > 100_000 {
                        return Err(Error::Invalid(format!(
                            "execution {exec}: runaway transition"
                        )));
                    }
                    for e in engine.step_at(ev, now_ms() as u64) {
                        if !matches!(
                            e,
                            Effect::StartTask(_) | Effect::Timer { .. } | Effect::NodePhase { .. }
                        ) {
                            self.start_pending(&mut ctx, &mut engine).await?;
                        }
                        let mut host = StackHost {
                            t: self,
                            ctx: &mut ctx,
                        };
                        updraft_connector::effects::apply(&mut host, e).await?;
                    }
                    if ctx.pending.len() >= PARALLEL_STARTS {
                        self.start_pending(&mut ctx, &mut engine).await?;
                    }
                }
                if ctx.pending.is_empty() {
                    break;
                }
                // A start refused comes back as an event, stepped in the next round.
                self.start_pending(&mut ctx, &mut engine).await?;
            }
            for signal in std::mem::take(&mut forward) {
                for child in engine.running_children() {
                    self.clients
                        .queue
                        .send(
                            &message(&child, Kind::Signal(signal.clone())),
                            Duration::ZERO,
                        )
                        .await?;
                }
            }
            if std::mem::take(&mut ctx.orphans) {
                let records = (0..engine.node_count() as u32)
                    .filter_map(|i| engine.node_record(i).map(|r| (i, r)))
                    .collect();
                self.abort_orphans(&exec, &records, &ctx.stopped).await?;
            }
            if first && receive_count == 1 && ctx.first_start {
                match ["crash-before-commit", "drop-before-commit"]
                    .into_iter()
                    .find(|f| self.settings.has_fault(f))
                {
                    Some("crash-before-commit") => {
                        tracing::warn!(execution = %exec, "fault injection: exiting between the effects and the commit");
                        std::process::exit(70);
                    }
                    Some("drop-before-commit") => {
                        // As a crash: nothing committed, the lease left to expire.
                        return Err(Error::Injected(exec));
                    }
                    _ => {}
                }
            }
            first = false;
            // Attempts that signal their ends are swept as a fallback: a sweep is on its way before the
            // commit that holds them (a commit that fails leaves a sweep with nothing to find, at worst).
            if ctx.sweep && !engine.phase().is_terminal() {
                self.arm_sweep(&mut ctx.item).await?;
            }
            // Only the records (of a wide array: the parts of its record) that changed are written.
            let mut changed = Vec::new();
            let mut produced = std::collections::HashSet::new();
            for i in 0..engine.node_count() as u32 {
                let Some(rec) = engine.node_record(i) else {
                    continue;
                };
                for (part, bytes) in updraft_aws::parts::split(&rec.encode_to_vec()) {
                    let key = (i, part);
                    produced.insert(key);
                    if loaded.get(&key) == Some(&bytes) && !stale.contains(&key) {
                        continue;
                    }
                    let stored = if bytes.len() > MAX_INLINE_RECORD {
                        let blob =
                            format!("state/{exec}/node-{i}-{part}-v{}.pb", ctx.item.version + 1);
                        self.clients
                            .blobs
                            .put(&self.clients.blobs.uri(&blob), bytes)
                            .await?;
                        NodeBytes::Blob(blob)
                    } else {
                        NodeBytes::Inline(bytes)
                    };
                    changed.push(NodeWrite {
                        index: i,
                        part,
                        bytes: stored,
                        committed: committed.get(&key).cloned(),
                    });
                }
            }
            // A part a transition that never committed wrote, which no record has now: emptied, so it
            // is not read once its version is reached.
            for &(i, part) in &stale {
                if !produced.contains(&(i, part)) {
                    changed.push(NodeWrite {
                        index: i,
                        part,
                        bytes: NodeBytes::Inline(Vec::new()),
                        committed: committed.get(&(i, part)).cloned(),
                    });
                }
            }
            let item = &mut ctx.item;
            // A started execution's state holds its inputs (or the bucket does): the item needs them
            // no more.
            if engine.phase() != ExecPhase::Queued {
                item.inputs.clear();
            }
            let next = item.version + 1;
            self.clients
                .set_state(item, &engine.state_record(), next)
                .await?;
            item.phase = phase_name(exec_phase_code(engine.phase())).into();
            if let Some(e) = engine.error() {
                item.error = Some(format!("[{}] {}", e.code, e.message));
            }
            let finished = engine.phase().is_terminal();
            if !take_again && self.settings.has_fault("slow-commit") {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let exact = now_ms() < drain_until;
            let drained = Drained { seen, exact };
            match self
                .clients
                .store
                .commit(
                    item,
                    &self.owner,
                    finished,
                    &changed,
                    drained,
                    now_ms(),
                    deadline,
                )
                .await?
            {
                Committed::Done if exact => break,
                Committed::Done => {
                    // Events that came after the inbox was last read wait for another transition.
                    let now = self.clients.store.execution(&exec).await?;
                    if !finished && now.is_some_and(|i| i.inbox != seen) {
                        self.clients
                            .queue
                            .send(&drain_message(&exec), Duration::ZERO)
                            .await?;
                    }
                    break;
                }
                Committed::InboxMoved(count) => {
                    seen = count;
                    take = true;
                    take_again = true;
                }
            }
        }
        if !taken.is_empty() {
            let ids: Vec<String> = taken.into_iter().collect();
            self.clients.store.drop_inbox(&exec, &ids).await?;
        }
        let mut outcome = ctx.outcome;
        outcome.over = attempts
            .into_iter()
            .filter(|&(n, i, a)| engine.attempt_over(n, i, a))
            .collect();
        outcome.stale = stale_attempts;
        // The inbox's checks of attempts now over: as the messages' own (see `process_group`).
        let ended = inboxed.iter().map(|(m, event)| (m, event));
        self.clean_up_all_over(&exec, ended, &outcome).await;
        Ok(outcome)
    }

    /// Adds `event` to the events to step (an execution's start with its inputs, read from `item`),
    /// noting the task attempt it ends (`attempts`) and the signal it forwards to running children.
    async fn queue_event(
        &self,
        item: &ExecutionItem,
        queued: &mut VecDeque<Event>,
        attempts: &mut Vec<(NodeIdx, Option<u32>, u32)>,
        forward: &mut Vec<SignalMessage>,
        event: Event,
    ) -> Result<(), Error> {
        match &event {
            Event::Task {
                node,
                index,
                attempt,
                ..
            } => attempts.push((*node, *index, *attempt)),
            // A signal also goes to the children running now (their gates may be the ones waiting).
            Event::Signal { id, value } => forward.push(SignalMessage {
                id: id.clone(),
                value: Some((**value).clone()),
            }),
            _ => {}
        }
        queued.push_back(match event {
            Event::Start { .. } => Event::Start {
                inputs: LiteralMap::decode(self.clients.input_bytes(item).await?.as_slice())
                    .map_err(|e| Error::Invalid(format!("execution {}: inputs: {e}", item.name)))?,
            },
            e => e,
        });
        Ok(())
    }

    /// Starts the attempts waiting in `ctx.pending`, up to [`PARALLEL_STARTS`] at once, and records
    /// what each came to in `ctx` (and what each made in `engine`'s history). A failed start fails the
    /// transition (its message is delivered again; starts are idempotent by the attempts' names).
    async fn start_pending(&self, ctx: &mut Ctx<'_>, engine: &mut Execution) -> Result<(), Error> {
        let exec = ctx.item.name.clone();
        let mut pending = std::mem::take(&mut ctx.pending);
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(PARALLEL_STARTS));
            let program = ctx.program;
            let starts = pending.into_iter().map(|(t, conn)| {
                let exec = exec.as_str();
                async move {
                    let task = program.package.tasks.get(&t.task).ok_or_else(|| {
                        Error::Invalid(format!("execution {exec}: no task `{}`", t.task))
                    })?;
                    self.start_one(exec, t, task, conn).await
                }
            });
            let mut failed = None;
            let mut kept = Vec::new();
            for r in futures_util::future::join_all(starts).await {
                match r {
                    Ok(Started::Yes {
                        node,
                        index,
                        attempt,
                        name,
                        described,
                        signals,
                        kept: handle,
                    }) => {
                        engine.note_attempt(
                            node,
                            index,
                            attempt,
                            &described.external,
                            &described.logs,
                        );
                        ctx.sweep |= signals;
                        ctx.outcome.started.push(name);
                        kept.push(handle);
                    }
                    Ok(Started::Refused(event)) => ctx.events.push_back(event),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            // What started is kept whether or not the others did (a failed start fails the
            // transition, and what did start may then have to be stopped): one write for them all.
            self.keep_started(ctx, kept).await?;
            if let Some(e) = failed {
                return Err(e);
            }
            pending = rest;
        }
        Ok(())
    }

    /// Keeps the handles of attempts this transition started (see [`crate::store::Store::keep_starts`])
    /// before its commit, so that what a transition that never committed started can still be stopped.
    /// Fault injection crashes once per attempt: a start whose handle was kept before (a copy of a
    /// crashed message, re-sent while the crashed transition's lease was held) does not count.
    async fn keep_started(&self, ctx: &mut Ctx<'_>, kept: Vec<KeptHandle>) -> Result<(), Error> {
        let Some(first) = kept.first() else {
            return Ok(());
        };
        let exec = ctx.item.name.clone();
        if self.settings.has_fault("crash-before-commit")
            || self.settings.has_fault("drop-before-commit")
        {
            let known = self.kept_names(&exec).await?;
            ctx.first_start |= kept.iter().any(|h| !known.contains(&h.name));
        }
        let key = format!("{}#{}#{}", ctx.item.version + 1, first.name, self.owner);
        self.clients
            .store
            .keep_starts(&exec, &key, &kept, now_ms())
            .await?;
        if let Some(known) = &mut ctx.kept {
            known.extend(kept.into_iter().map(|h| (h.name, h.handle)));
        }
        Ok(())
    }

    /// The names of the attempts of `exec` whose handles are kept.
    async fn kept_names(&self, exec: &str) -> Result<std::collections::HashSet<String>, Error> {
        Ok(self
            .clients
            .store
            .handles(exec)
            .await?
            .into_iter()
            .map(|h| h.name)
            .collect())
    }

    /// Starts attempt `t` of execution `exec` through `conn`: its inputs written, the connector's
    /// start, its handle kept, its job watched or its check sent. What it came to is the caller's to
    /// record (several are started at once: see [`Self::start_pending`]).
    async fn start_one(
        &self,
        exec: &str,
        t: TaskLaunch,
        task: &CompiledTask,
        conn: Arc<dyn Connector>,
    ) -> Result<Started, Error> {
        let paths = AttemptPaths::under(&data_prefix(&self.clients, exec), &t);
        let mut check = CheckMessage {
            node: t.node,
            index: t.index,
            attempt: t.attempt,
            name: t.name.clone(),
            task: t.task.clone(),
            handle: String::new(),
            started_ms: now_ms(),
            output_prefix: paths.output_prefix.clone(),
            cache_key: t.cache_key.clone().unwrap_or_default(),
            checks: 0,
            cache_serializable: t.cache_serializable,
            ended: false,
            outputs: Vec::new(),
        };
        // What the attempt sends as it ends: its check, marked so, to the transitions queue, with the
        // handle its start will return when the connector knows it already (else it is looked up).
        let unsignalled = Attempt {
            launch: &t,
            task,
            paths: &paths,
            data: &self.clients.blobs,
            signal: None,
        };
        let planned = conn.planned_handle(&unsignalled);
        let signal = EndSignal {
            queue_url: self.settings.transitions_url.clone(),
            region: self
                .clients
                .sdk
                .region()
                .map(ToString::to_string)
                .unwrap_or_default(),
            body: crate::queue::encode(&message(
                exec,
                Kind::Check(CheckMessage {
                    ended: true,
                    handle: planned
                        .and_then(|h| serde_json::to_string(&h).ok())
                        .unwrap_or_default(),
                    ..check.clone()
                }),
            )),
            delay_seconds: 1,
        };
        let a = Attempt {
            signal: Some(&signal),
            ..unsignalled
        };
        paths
            .write_inputs(&self.clients.blobs, &t, task, conn.inline_inputs(&a))
            .await
            .map_err(|e| Error::Aws(e.0))?;
        let started = match conn.start(&a).await {
            Ok(h) => {
                let described = conn.describe(&h);
                serde_json::to_string(&h)
                    .map(|json| (json, conn.watch(&h), conn.signals(&h), described))
                    .map_err(|e| failed("Handle", e.to_string(), ErrorKind::System, true))
            }
            Err(status) => Err(status),
        };
        tracing::info!(execution = %exec, node = %t.node_id, attempt = t.attempt, index = ?t.index, attempt_name = %t.name, "task started");
        let (handle, watch, signals, described) = match started {
            Ok(s) => s,
            Err(status) => {
                // Not started: a key it reserved is free for the next attempt.
                if let (true, Some(key)) = (t.cache_serializable, &t.cache_key) {
                    self.clients.store.release_cached(key, &t.name).await?;
                }
                return Ok(Started::Refused(Event::Task {
                    node: t.node,
                    index: t.index,
                    attempt: t.attempt,
                    status,
                }));
            }
        };
        // Kept with the attempt (by the caller, with the others started beside it): an abort reaches
        // what the start made through it; and for an attempt that signals its end, the check the
        // execution's sweeps send once they find it ended (without the handle, kept beside it).
        let encoded = message(
            exec,
            Kind::Check(CheckMessage {
                handle: String::new(),
                ..check.clone()
            }),
        )
        .encode_to_vec();
        let kept = KeptHandle {
            name: t.name.clone(),
            handle: handle.clone(),
            check: signals.then_some(encoded),
            unit: Some((t.node, t.index, t.attempt)),
        };
        check.handle = handle;
        let check = message(exec, Kind::Check(check));
        // The job's state changes (through the events function) check it at once.
        if let Some(job) = watch {
            self.clients
                .store
                .watch(&job.0, &check.encode_to_vec(), now_ms())
                .await?;
        }
        // An attempt that signals its end is not polled: the execution's sweeps are its fallback.
        if !signals {
            self.clients
                .queue
                .send(&check, Duration::from_secs(1))
                .await?;
        }
        Ok(Started::Yes {
            node: t.node,
            index: t.index,
            attempt: t.attempt,
            name: t.name,
            described,
            signals,
            kept,
        })
    }

    /// Stops what attempt `name` of the execution `ctx` steps started, through the handle its start
    /// kept; an attempt that never started (or whose start was never kept) has nothing to stop. The
    /// kept handles are read once a transition (an abort of a wide map stops many attempts).
    async fn abort_task(&self, ctx: &mut Ctx<'_>, name: &str) -> Result<(), Error> {
        let exec = ctx.item.name.clone();
        if ctx.kept.is_none() {
            let kept = self.clients.store.handles(&exec).await?;
            ctx.kept = Some(kept.into_iter().map(|h| (h.name, h.handle)).collect());
        }
        let Some(json) = ctx.kept.as_ref().and_then(|k| k.get(name)) else {
            tracing::info!(execution = %exec, attempt_name = %name, "no handle kept: nothing to abort");
            return Ok(());
        };
        if self.abort_handle(&exec, name, json).await? {
            ctx.stopped.insert(name.to_string());
        }
        Ok(())
    }

    /// Stops what a kept handle names. Its handle stays kept (the table's TTL deletes it): the
    /// execution's records tell readers that the attempt was stopped, and stopping it again, should
    /// a reader not know, stops nothing. True once it is stopped.
    async fn abort_handle(&self, exec: &str, name: &str, json: &str) -> Result<bool, Error> {
        let h: Handle = match serde_json::from_str(json) {
            Ok(h) => h,
            Err(e) => {
                // Nothing can be stopped through it.
                tracing::error!(execution = %exec, attempt_name = %name, error = %e, "an unreadable handle: nothing to abort through it");
                return Ok(false);
            }
        };
        let Some(conn) = self.registry.named(&h.connector) else {
            tracing::warn!(execution = %exec, attempt_name = %name, connector = %h.connector, "no such connector here: cannot abort");
            return Ok(false);
        };
        match conn.abort(&h).await {
            Ok(()) => {
                tracing::info!(execution = %exec, attempt_name = %name, "task aborted");
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(execution = %exec, attempt_name = %name, error = %e, "could not abort an attempt");
                Ok(false)
            }
        }
    }

    /// An execution that ended without succeeding stops every attempt whose handle is kept and that
    /// `records` (its node records) do not have ended by itself: the starts a crash kept from being
    /// committed (the job exists, the execution's record does not know it), whose redelivered
    /// message now finds the execution over and starts nothing, and stops that failed. An attempt
    /// that ended stays as its clean-up left it (a finished pod kept for its logs is not deleted), and
    /// one in `stopped` (the transition's own aborts) is not stopped twice.
    async fn abort_orphans(
        &self,
        exec: &str,
        records: &HashMap<u32, NodeState>,
        stopped: &std::collections::HashSet<String>,
    ) -> Result<(), Error> {
        for h in self.clients.store.handles(exec).await? {
            if stopped.contains(&h.name)
                || h.unit
                    .is_some_and(|u| kept::standing(records, u) == kept::Standing::Ended)
            {
                continue;
            }
            tracing::info!(execution = %exec, attempt_name = %h.name, "stopping an attempt the execution's record does not have ended");
            self.abort_handle(exec, &h.name, &h.handle).await?;
        }
        Ok(())
    }
}

/// The serverless stack as the interpreter's host: attempts' inputs in the bucket and their handles in
/// the table, checks and timers as delayed queue messages, children as executions of their own.
struct StackHost<'a, 'b> {
    t: &'a Transition,
    ctx: &'a mut Ctx<'b>,
}

#[async_trait::async_trait]
impl updraft_connector::effects::Host for StackHost<'_, '_> {
    type Error = Error;

    fn program(&self) -> &Program {
        self.ctx.program
    }

    fn registry(&self) -> &Registry {
        &self.t.registry
    }

    fn node_path(&self, node: NodeIdx) -> String {
        engine_node_id(self.ctx.program, node)
    }

    fn overwrite_cache(&self) -> bool {
        self.ctx.overwrite_cache
    }

    fn feed(&mut self, event: Event) {
        self.ctx.events.push_back(event);
    }

    async fn cached(&mut self, key: &str) -> Result<Option<LiteralMap>, Error> {
        let Some(bytes) = self.t.clients.store.cached(key).await? else {
            return Ok(None);
        };
        LiteralMap::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| Error::Invalid(format!("cache entry {key}: {e}")))
    }

    async fn reserve(&mut self, key: &str, holder: &str) -> Result<Reservation, Error> {
        let now = now_ms();
        let until = now + self.t.cache_lease().as_millis() as i64;
        Ok(
            match self
                .t
                .clients
                .store
                .reserve_cached(key, holder, now, until)
                .await?
            {
                None => Reservation::Held,
                Some(holder) => Reservation::Busy { holder },
            },
        )
    }

    fn cache_wait(&self) -> Duration {
        self.t.settings.max_check_delay.min(Duration::from_secs(5))
    }

    async fn start_task(
        &mut self,
        t: TaskLaunch,
        _task: &CompiledTask,
        conn: Arc<dyn Connector>,
    ) -> Result<(), Error> {
        // Started with the others of this transition, several at once (see `start_pending`).
        self.ctx.pending.push((t, conn));
        Ok(())
    }

    async fn abort_task(&mut self, name: &str) -> Result<(), Error> {
        self.t.abort_task(self.ctx, name).await
    }

    async fn timer(
        &mut self,
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        kind: TimerKind,
        after: Duration,
    ) -> Result<(), Error> {
        let t = TimerMessage {
            node,
            index,
            attempt,
            kind: timer_code(kind),
            due_ms: now_ms() + after.as_millis() as i64,
        };
        // Only an attempt's latest wait on a reserved cache key counts: a copy of an earlier one,
        // delivered again, must not start a second round of waits beside it.
        if kind == TimerKind::CacheWait {
            self.t
                .clients
                .store
                .put_wait(
                    &self.ctx.item.name,
                    &wait_key(node, index, attempt),
                    t.due_ms,
                    now_ms(),
                )
                .await?;
        }
        self.t
            .clients
            .queue
            .send(&message(&self.ctx.item.name, Kind::Timer(t)), after)
            .await
    }

    async fn start_child(
        &mut self,
        node: NodeIdx,
        name: &str,
        child: Child,
    ) -> Result<Result<(), ExecError>, Error> {
        let (program, inputs, futures) = match child {
            Child::LaunchPlan { program, inputs } => (program, inputs, None),
            Child::Dynamic { program, spec } => {
                // A sub-workflow with tasks this deployment cannot run fails its node before any
                // of them starts.
                let tasks =
                    updraft_engine::launch::reachable_tasks(&program.package, &program.workflow);
                let bad: Vec<String> = self
                    .t
                    .registry
                    .preflight(tasks.values().copied().filter(|t| !t.runs_in_engine()))
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                if !bad.is_empty() {
                    return Ok(Err(ExecError {
                        node: engine_node_id(self.ctx.program, node),
                        code: "DynamicTaskUnsupported".into(),
                        message: format!(
                            "the dynamic sub-workflow has tasks that cannot run here: {}; nothing \
                             of it was started",
                            bad.join("; ")
                        ),
                        kind: ErrorKind::User,
                    }));
                }
                // Kept where later transitions compile it again from (the same bytes for every
                // copy of this start).
                let key = format!("executions/{name}/futures.pb");
                let uri = self.t.clients.blobs.uri(&key);
                self.t.clients.blobs.put(&uri, spec.encode_to_vec()).await?;
                (program, LiteralMap::default(), Some(key))
            }
        };
        let mut config = updraft_engine::exec::ExecConfig::new(name);
        config.overwrite_cache = self.ctx.overwrite_cache;
        let child = Execution::new(&program, config).map_err(Error::Invalid)?;
        let mut item = ExecutionItem {
            name: name.into(),
            phase: "QUEUED".into(),
            workflow: program.workflow.clone(),
            package: self.ctx.item.package.clone(),
            state: child.state_record().encode_to_vec(),
            inputs: inputs.encode_to_vec(),
            parent: Some((self.ctx.item.name.clone(), node)),
            futures,
            created: now_ms(),
            ..Default::default()
        };
        self.t.clients.offload_inputs(&mut item).await?;
        // Idempotent by name: a child already made is left as it is.
        self.t.clients.store.create_execution(&item).await?;
        self.t
            .clients
            .queue
            .send(&message(name, Kind::Start(StartMessage {})), Duration::ZERO)
            .await?;
        Ok(Ok(()))
    }

    async fn abort_child(&mut self, _node: NodeIdx, name: &str) -> Result<(), Error> {
        let abort = AbortMessage {
            reason: format!("its parent {} stopped it", self.ctx.item.name),
        };
        self.t
            .clients
            .queue
            .send(&message(name, Kind::Abort(abort)), Duration::ZERO)
            .await
    }

    async fn node_phase(&mut self, node: NodeIdx, phase: NodePhase) -> Result<(), Error> {
        tracing::info!(execution = %self.ctx.item.name, node = %engine_node_id(self.ctx.program, node), phase = ?phase, "node phase");
        Ok(())
    }

    async fn finished(
        &mut self,
        phase: ExecPhase,
        outputs: Option<LiteralMap>,
        error: Option<ExecError>,
    ) -> Result<(), Error> {
        let (this, exec) = (self.t, self.ctx.item.name.clone());
        let outputs_uri = format!("{}/outputs.pb", data_prefix(&this.clients, &exec));
        if let Some(out) = &outputs {
            this.clients
                .blobs
                .put(&outputs_uri, out.encode_to_vec())
                .await?;
        }
        tracing::info!(execution = %exec, phase = ?phase, error = ?error.as_ref().map(|e| &e.message), "execution finished");
        // What it may have left is stopped before the commit, with the records as they end (see
        // `step_leased`).
        if phase != ExecPhase::Succeeded {
            self.ctx.orphans = true;
        }
        if let Some((parent, node)) = &self.ctx.item.parent {
            let mut done = ChildDoneMessage {
                node: *node,
                outputs: outputs.clone(),
                outputs_uri: String::new(),
                error: match (phase, &error) {
                    (ExecPhase::Succeeded, _) => None,
                    (_, Some(e)) => Some(error_record(e)),
                    (_, None) => Some(error_record(&ExecError {
                        node: String::new(),
                        code: "ChildFailed".into(),
                        message: format!("child execution {exec} ended {phase:?}"),
                        kind: ErrorKind::User,
                    })),
                },
            };
            // Outputs too large for a message are read from where they were just written.
            if done.encoded_len() > MAX_INLINE_MESSAGE {
                done.outputs = None;
                done.outputs_uri = outputs_uri;
            }
            this.clients
                .queue
                .send(&message(parent, Kind::ChildDone(done)), Duration::ZERO)
                .await?;
        }
        Ok(())
    }
}

/// What a transition carries while it applies effects.
struct Ctx<'a> {
    item: ExecutionItem,
    program: &'a Program,
    overwrite_cache: bool,
    events: VecDeque<Event>,
    outcome: Outcome,
    /// An attempt was started for the first time (no handle was kept for it before): what fault
    /// injection crashes after, once per attempt.
    first_start: bool,
    /// An attempt that sends an end signal was started: the execution's sweeps must be going.
    sweep: bool,
    /// Attempts to start, with their connectors, not started yet.
    pending: Vec<(TaskLaunch, Arc<dyn Connector>)>,
    /// The execution ended without succeeding: what it may have left is to be stopped (see
    /// [`Transition::abort_orphans`]).
    orphans: bool,
    /// The handles kept for the execution's attempts by name, once an abort needed them.
    kept: Option<HashMap<String, String>>,
    /// The attempts this transition stopped.
    stopped: std::collections::HashSet<String>,
}

/// What starting one attempt came to (see [`Transition::start_one`]).
enum Started {
    /// Started (or found started).
    Yes {
        node: NodeIdx,
        index: Option<u32>,
        attempt: u32,
        name: String,
        /// What its start made, for the execution's history.
        described: updraft_connector::Described,
        /// It sends an end signal (the execution's sweeps are its fallback).
        signals: bool,
        /// Its handle, to keep (with the others started beside it).
        kept: KeptHandle,
    },
    /// Not started: the event that says why, to step.
    Refused(Event),
}

fn engine_node_id(program: &Program, node: u32) -> String {
    program
        .package
        .workflows
        .get(&program.workflow)
        .and_then(|w| w.nodes.get(node as usize))
        .map(|n| n.id.clone())
        .unwrap_or_default()
}
