//! The DynamoDB store: one table, items keyed by `pk` (partition) and `sk` (sort).
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | execution | `exec#<name>` | `#` | `version`, `phase`, `workflow`, `package`, `sweep_due` (when its latest sweep is due), `inbox` (events left in its inbox) and `drained` (those a commit took in), `state` (ExecutionState, without its inputs when `inputs_blob` holds them; or `state_blob`, an S3 key, when over 300 KB), `inputs` (until the execution starts; or `inputs_blob`, over 1 KB), `parent`, `parent_node`, `futures` (a dynamic task's child), `error`, `created`, `updated`, lease (`lease_owner`, `lease_until`), `ttl` once finished |
//! | node | `exec#<name>` | `node#<index, 6 digits>` (a wide array's further parts: `node#<index>#<part, 6 digits>`, see `parts`) | two slots, each a NodeState (`state`; `zstate` when deflated is smaller, as it mostly is; or `blob`: an S3 key, for records over 190 KB) and the execution version that wrote it: slot 0 `state`/`zstate`/`blob`/`version`, slot 1 `state1`/`zstate1`/`blob1`/`version1`; `ttl` ([`RECORD_RETENTION_SECS`] after its last write) |
//! | cache entry | `cache#<key>` | `#` | `outputs` (LiteralMap) |
//! | serializable cache key's reservation | `cachelock#<key>` | `#` | `holder` (attempt name), `until` (ms) |
//! | an attempt's latest wait on a reserved key | `exec#<name>` | `cachewait#<attempt name>` | `due` (ms), `ttl` |
//! | registered workflow or launch plan | `reg#<name>` | `#` | `package` (S3 key), `registered` |
//! | watched external job | `watch#<job key>` | `#` | `message` (the QueueMessage that checks the task), `ttl` |
//! | the task attempts a transition started (their handles) | `handles#<execution>` | `starts#<transition version>#<first attempt name>#<owner>#<part>` | `starts` (a KeptStarts, deflated: each attempt's name, node, element and attempt number, its connector's handle as JSON and, for an attempt that sends an end signal, its check message without the handle), `ttl` (30 days; handles kept one attempt an item before, by attempt name with `handle`, `check`, `node`, `index`, `attempt`, are read as well) |
//! | a dead-lettered message's handlings | `deadletter#<message id>` | `#` | `tries`, `ttl` |
//! | an event left for the transition holding an execution's lease | `inbox#<execution>` | a digest of the message | `message` (the encoded QueueMessage), `ttl` |
//!
//! One execution is changed by one transition at a time: a transition takes the execution's lease
//! (a conditional update), reads its node records (one query), and commits the new state conditional
//! on still holding the lease, writing only the records that changed. Every commit increments
//! `version`.
//!
//! A commit first writes each changed record into its other slot — the one not holding its committed
//! state — tagged with the version being committed (25 records a `BatchWriteItem`), then moves the
//! execution's item to that version with one conditional update; until then those writes are
//! invisible, since a record reads as its slot with the highest version not above the execution's. No
//! transaction is needed, so a commit costs one write unit per KB written instead of a
//! transaction's two, and has no size or item limit. A transition that died between the two leaves
//! slots tagged above the execution's version: the next transition finds them (`NodeRecord::stale`)
//! and writes those records again, so that no such slot is read once its version is reached. (A
//! transition never outlives its lease, which is longer than the function's timeout, and gives up
//! writing once half of it has passed.)
//!
//! Every request asks for the capacity it consumed, summed in [`Store::consumed`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity, ReturnConsumedCapacity};
use updraft_proto::updraft::{KeptStart, KeptStarts};

use crate::Error;

/// Records over this size go to S3 (DynamoDB items hold at most 400 KB; a record has two slots).
pub const MAX_INLINE_RECORD: usize = 190 * 1024;

/// An execution's state over this size goes to S3 (with its inputs, the item stays under 400 KB).
pub const MAX_INLINE_STATE: usize = 300 * 1024;

/// An execution's inputs over this size go to S3, written once at launch: its state record then
/// leaves them out (see `Clients::set_state`), so that the item every lease and commit rewrites —
/// billed a write unit per KB — stays small.
pub const MAX_INLINE_INPUTS: usize = 1024;

/// Records in one BatchWriteItem (DynamoDB's most).
const BATCH_WRITE_ITEMS: usize = 25;

/// BatchWriteItem requests under way at once before a split commit's transaction.
const PARALLEL_WRITES: usize = 8;

/// How long finished executions are kept (DynamoDB TTL).
pub const RETENTION_SECS: u64 = 30 * 24 * 3600;

/// How long a node record is kept after its last write (DynamoDB TTL): past its execution's item,
/// once the execution has finished, and for a running execution longer than any of its records
/// stays unwritten (a record not written for this long would be lost with it).
pub const RECORD_RETENTION_SECS: u64 = 2 * RETENTION_SECS;

/// An execution's item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionItem {
    /// Execution name.
    pub name: String,
    /// Version, incremented by every commit.
    pub version: u64,
    /// Phase name (`QUEUED`, `RUNNING`, `SUCCEEDED`, …).
    pub phase: String,
    /// Workflow it runs.
    pub workflow: String,
    /// S3 key of the package it runs.
    pub package: String,
    /// The engine's ExecutionState (protobuf); empty when it is in the bucket (`state_blob`).
    pub state: Vec<u8>,
    /// Where in the bucket the ExecutionState is, when it is too large for the item.
    pub state_blob: Option<String>,
    /// Inputs (LiteralMap, protobuf); empty when they are in the bucket (`inputs_blob`).
    pub inputs: Vec<u8>,
    /// Where in the bucket the inputs are, when they are too large for the item.
    pub inputs_blob: Option<String>,
    /// Parent execution and node, for child executions.
    pub parent: Option<(String, u32)>,
    /// For the child execution of a dynamic task: the S3 key of the sub-workflow it runs (the task's
    /// `DynamicJobSpec`), compiled over its parent's program.
    pub futures: Option<String>,
    /// The error it failed with.
    pub error: Option<String>,
    /// Created, milliseconds since the epoch.
    pub created: i64,
    /// Last commit, milliseconds since the epoch.
    pub updated: i64,
    /// When the execution's latest sweep is due (ms; the serverless runtime's fallback for tasks that
    /// signal their ends): only that sweep acts.
    pub sweep_due: Option<i64>,
    /// A sweep this transition sent: its commit records its due time as `sweep_due` (never written
    /// otherwise, so a commit does not undo a sweep's own move).
    pub new_sweep_due: Option<i64>,
    /// How many events transitions left in the execution's inbox while another held its lease.
    pub inbox: u64,
    /// The `inbox` count up to which a committed transition took in the inbox's events: while the two
    /// differ, events wait there for the lease's next holder.
    pub drained: u64,
}

impl ExecutionItem {
    /// Events wait in the execution's inbox.
    pub fn inbox_pending(&self) -> bool {
        self.inbox != self.drained
    }
}

/// How a commit settles the execution's inbox (see [`Store::commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// The `inbox` count whose events the transition took in.
    pub seen: u64,
    /// Commit only if no event has reached the inbox since (else [`Committed::InboxMoved`]).
    pub exact: bool,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Committed; the lease is given back.
    Done,
    /// Nothing committed, the lease still held: events reached the inbox since the count given
    /// (the new count), to be taken in first.
    InboxMoved(u64),
}

/// An event left in an execution's inbox (see [`Store::put_inbox`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEntry {
    /// Its key in the inbox.
    pub id: String,
    /// The queue message (encoded).
    pub message: Vec<u8>,
}

/// A node record as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeBytes {
    /// The NodeState itself.
    Inline(Vec<u8>),
    /// Where in the bucket the NodeState lives.
    Blob(String),
}

/// A node record (or one part of it: see [`crate::parts`]) as read at one version of its execution.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// Node index.
    pub index: u32,
    /// Which part of the node's record (0: the whole of a record stored in one part).
    pub part: u32,
    /// Its committed state; None when no slot holds one (the record was only ever written by a
    /// transition that did not commit).
    pub bytes: Option<NodeBytes>,
    /// The slot holding it (0 or 1).
    pub slot: u8,
    /// The execution version that wrote it (0 when none did).
    pub version: u64,
    /// A slot holds a write that was never committed: the next commit must write this record.
    pub stale: bool,
}

impl NodeRecord {
    /// The committed state with its slot and version, if there is one (what [`NodeWrite::committed`]
    /// wants).
    pub fn committed(&self) -> Option<(u8, u64, NodeBytes)> {
        self.bytes.clone().map(|b| (self.slot, self.version, b))
    }
}

/// A changed node record (or part of one) for [`Store::commit`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeWrite {
    /// Node index.
    pub index: u32,
    /// Which part of the node's record.
    pub part: u32,
    /// The new state.
    pub bytes: NodeBytes,
    /// The committed state as read — its slot, version and bytes (None: no record, or none
    /// committed) — which a write outside the transaction keeps beside the new one.
    pub committed: Option<(u8, u64, NodeBytes)>,
}

/// A slot's attribute names.
struct Slot {
    /// Its state inline, as it is.
    state: &'static str,
    /// Its state inline, deflated (when that is smaller: most records repeat their text).
    deflated: &'static str,
    /// Where in the bucket its state is, when too large for the item.
    blob: &'static str,
    /// The execution version that wrote it.
    version: &'static str,
}

/// The slots' attribute names.
const SLOTS: [Slot; 2] = [
    Slot {
        state: "state",
        deflated: "zstate",
        blob: "blob",
        version: "version",
    },
    Slot {
        state: "state1",
        deflated: "zstate1",
        blob: "blob1",
        version: "version1",
    },
];

/// The attributes of slot `slot` holding `bytes` written at execution version `v`: its state
/// deflated when that makes it smaller (an item is billed by its size, and most records repeat
/// their text).
fn slot_attrs(slot: usize, bytes: &NodeBytes, v: u64) -> [(&'static str, AttributeValue); 2] {
    let at = &SLOTS[slot.min(1)];
    let value = match bytes {
        NodeBytes::Inline(raw) => {
            let packed = updraft_wire::deflated::deflate(raw);
            if packed.len() < raw.len() {
                (at.deflated, b(&packed))
            } else {
                (at.state, b(raw))
            }
        }
        NodeBytes::Blob(k) => (at.blob, s(k)),
    };
    [value, (at.version, n(v))]
}

/// The committed slot of a record `item` at execution version `version`; an error when its state
/// is deflated bytes that do not inflate.
fn read_record(
    (index, part): (u32, u32),
    item: &HashMap<String, AttributeValue>,
    version: u64,
) -> Result<NodeRecord, Error> {
    let mut best: Option<(u64, u8, NodeBytes)> = None;
    let mut stale = false;
    for (i, slot) in SLOTS.iter().enumerate() {
        let v = get_n(item, slot.version).unwrap_or(0).max(0) as u64;
        let bytes = if let Some(raw) = get_b(item, slot.state) {
            NodeBytes::Inline(raw)
        } else if let Some(packed) = get_b(item, slot.deflated) {
            let what = format!("node record {index} (part {part}, version {v})");
            NodeBytes::Inline(
                updraft_wire::deflated::inflate(&packed, &what).map_err(|e| Error::Invalid(e.0))?,
            )
        } else if let Some(k) = get_s(item, slot.blob) {
            NodeBytes::Blob(k)
        } else {
            continue;
        };
        if v > version {
            stale = true;
            continue;
        }
        if best.as_ref().is_none_or(|(b, _, _)| v > *b) {
            best = Some((v, i as u8, bytes));
        }
    }
    Ok(match best {
        Some((version, slot, bytes)) => NodeRecord {
            index,
            part,
            bytes: Some(bytes),
            slot,
            version,
            stale,
        },
        None => NodeRecord {
            index,
            part,
            bytes: None,
            slot: 0,
            version: 0,
            stale,
        },
    })
}

/// What taking an execution's lease found.
#[derive(Debug)]
pub enum Lease {
    /// Taken; the execution as it is.
    Taken(Box<ExecutionItem>),
    /// Another transition holds it.
    Busy,
    /// No such execution.
    Missing,
}

/// A task attempt's kept handle (see [`Store::keep_starts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KeptHandle {
    /// The attempt's name.
    pub name: String,
    /// Its connector's handle, as JSON.
    pub handle: String,
    /// Its check message (encoded), for an attempt that sends an end signal.
    pub check: Option<Vec<u8>>,
    /// The attempt: node, array element, attempt number (absent from handles kept before they
    /// were recorded).
    pub unit: Option<(u32, Option<u32>, u32)>,
}

/// The table.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: String,
    consumed: std::sync::Arc<Consumed>,
}

/// The DynamoDB capacity a store's requests consumed, as the service reported it
/// (`ReturnConsumedCapacity`); a store's clones share it.
#[derive(Debug, Default)]
pub struct Consumed {
    read_milli: AtomicU64,
    write_milli: AtomicU64,
    requests: AtomicU64,
    by_operation: std::sync::Mutex<std::collections::BTreeMap<&'static str, (u64, u64)>>,
}

impl Consumed {
    /// Read capacity units so far.
    pub fn read_units(&self) -> f64 {
        self.read_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Write capacity units so far.
    pub fn write_units(&self) -> f64 {
        self.write_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests and capacity units (read or write, as the operation consumes) so far, by operation
    /// (`GetItem`, `UpdateItem`, …).
    pub fn by_operation(&self) -> Vec<(&'static str, u64, f64)> {
        self.by_operation
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, (n, milli))| (*k, *n, *milli as f64 / 1000.0))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn add_operation(&self, operation: &'static str, units: f64) {
        if let Ok(mut m) = self.by_operation.lock() {
            let e = m.entry(operation).or_default();
            e.0 += 1;
            e.1 += (units * 1000.0).round() as u64;
        }
    }

    fn add(&self, write: bool, units: f64) {
        let milli = (units * 1000.0).round() as u64;
        let counter = if write {
            &self.write_milli
        } else {
            &self.read_milli
        };
        counter.fetch_add(milli, Ordering::Relaxed);
    }
}

/// A request's answer, with the capacity it consumed.
trait Used {
    /// True for writes.
    const WRITE: bool;
    /// The operation's name.
    const NAME: &'static str;
    /// The capacity, per table.
    fn used(&self) -> Vec<&ConsumedCapacity>;
}

macro_rules! used {
    ($write:expr, one: $($t:ty => $name:literal),*) => {$(
        impl Used for $t {
            const WRITE: bool = $write;
            const NAME: &'static str = $name;
            fn used(&self) -> Vec<&ConsumedCapacity> {
                self.consumed_capacity().into_iter().collect()
            }
        }
    )*};
    ($write:expr, many: $($t:ty => $name:literal),*) => {$(
        impl Used for $t {
            const WRITE: bool = $write;
            const NAME: &'static str = $name;
            fn used(&self) -> Vec<&ConsumedCapacity> {
                self.consumed_capacity().iter().collect()
            }
        }
    )*};
}

use aws_sdk_dynamodb::operation as op;
used!(false, one: op::get_item::GetItemOutput => "GetItem", op::query::QueryOutput => "Query",
    op::scan::ScanOutput => "Scan");
used!(true, one: op::put_item::PutItemOutput => "PutItem",
    op::update_item::UpdateItemOutput => "UpdateItem",
    op::delete_item::DeleteItemOutput => "DeleteItem");
used!(true, many: op::batch_write_item::BatchWriteItemOutput => "BatchWriteItem");

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn b(v: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(v.to_vec()))
}

fn exec_pk(name: &str) -> String {
    format!("exec#{name}")
}

fn node_sk(index: u32, part: u32) -> String {
    match part {
        0 => format!("node#{index:06}"),
        p => format!("node#{index:06}#{p:06}"),
    }
}

/// The node index and part a record's sort key names.
fn node_of_sk(sk: &str) -> Option<(u32, u32)> {
    let rest = sk.strip_prefix("node#")?;
    match rest.split_once('#') {
        None => Some((rest.parse().ok()?, 0)),
        Some((i, p)) => Some((i.parse().ok()?, p.parse().ok()?)),
    }
}

fn get_s(item: &HashMap<String, AttributeValue>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn get_b(item: &HashMap<String, AttributeValue>, k: &str) -> Option<Vec<u8>> {
    item.get(k)
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref().to_vec())
}

fn execution_from(item: &HashMap<String, AttributeValue>) -> ExecutionItem {
    let parent = get_s(item, "parent").map(|p| (p, get_n(item, "parent_node").unwrap_or(0) as u32));
    ExecutionItem {
        name: get_s(item, "pk")
            .and_then(|pk| pk.strip_prefix("exec#").map(str::to_string))
            .unwrap_or_default(),
        version: get_n(item, "version").unwrap_or(0) as u64,
        phase: get_s(item, "phase").unwrap_or_default(),
        workflow: get_s(item, "workflow").unwrap_or_default(),
        package: get_s(item, "package").unwrap_or_default(),
        state: get_b(item, "state").unwrap_or_default(),
        state_blob: get_s(item, "state_blob"),
        inputs: get_b(item, "inputs").unwrap_or_default(),
        inputs_blob: get_s(item, "inputs_blob"),
        parent,
        futures: get_s(item, "futures"),
        error: get_s(item, "error"),
        created: get_n(item, "created").unwrap_or(0),
        updated: get_n(item, "updated").unwrap_or(0),
        sweep_due: get_n(item, "sweep_due"),
        new_sweep_due: None,
        inbox: get_n(item, "inbox").unwrap_or(0).max(0) as u64,
        drained: get_n(item, "drained").unwrap_or(0).max(0) as u64,
    }
}

fn is_conditional_failure<E: std::fmt::Debug>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> bool {
    let text = format!("{e:?}");
    text.contains("ConditionalCheckFailed")
}

/// Whether a conditional write took effect: false when its condition did not hold; any other failure
/// is an error naming `call`.
fn applied<O, E: std::error::Error + 'static>(
    res: Result<O, aws_sdk_dynamodb::error::SdkError<E>>,
    call: &str,
) -> Result<bool, Error> {
    match res {
        Ok(_) => Ok(true),
        Err(err) if is_conditional_failure(&err) => Ok(false),
        Err(err) => Err(Error::aws(call, err)),
    }
}

impl Store {
    /// The store in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            consumed: Default::default(),
        }
    }

    /// The capacity this store's requests (and its clones') consumed so far.
    pub fn consumed(&self) -> &Consumed {
        &self.consumed
    }

    /// Counts the capacity answer `o` consumed, and hands it on.
    fn note<O: Used>(&self, o: O) -> O {
        self.consumed.requests.fetch_add(1, Ordering::Relaxed);
        let mut units = 0.0;
        for c in o.used() {
            units += c.capacity_units().unwrap_or(0.0);
        }
        self.consumed.add(O::WRITE, units);
        self.consumed.add_operation(O::NAME, units);
        o
    }

    /// Creates the execution's item unless one of that name exists; true when it was created.
    pub async fn create_execution(&self, e: &ExecutionItem) -> Result<bool, Error> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(exec_pk(&e.name)))
            .item("sk", s("#"))
            .item("version", n(0))
            .item("phase", s(&e.phase))
            .item("workflow", s(&e.workflow))
            .item("package", s(&e.package))
            .item("state", b(&e.state))
            .item("inputs", b(&e.inputs))
            .item("created", n(e.created))
            .item("updated", n(e.created))
            .condition_expression("attribute_not_exists(pk)");
        if let Some((p, node)) = &e.parent {
            req = req.item("parent", s(p)).item("parent_node", n(node));
        }
        if let Some(f) = &e.futures {
            req = req.item("futures", s(f));
        }
        if let Some(k) = &e.inputs_blob {
            req = req.item("inputs_blob", s(k));
        }
        applied(
            req.return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o)),
            "DynamoDB PutItem (execution)",
        )
    }

    /// The item with partition key `pk` (and sort key `#`), read consistently; `what` names it in errors.
    async fn get(
        &self,
        pk: String,
        what: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s("#"))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws(&format!("DynamoDB GetItem ({what})"), e))?;
        Ok(out.item)
    }

    /// The execution's item.
    pub async fn execution(&self, name: &str) -> Result<Option<ExecutionItem>, Error> {
        Ok(self
            .get(exec_pk(name), "execution")
            .await?
            .as_ref()
            .map(execution_from))
    }

    /// Every execution's item (a scan: for listings, not for the hot path).
    pub async fn executions(&self) -> Result<Vec<ExecutionItem>, Error> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :h AND begins_with(pk, :e)")
                .expression_attribute_values(":h", s("#"))
                .expression_attribute_values(":e", s("exec#"))
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o))
                .map_err(|e| Error::aws("DynamoDB Scan (executions)", e))?;
            out.extend(page.items().iter().map(execution_from));
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Takes the execution's lease for `owner` until `until_ms`, when it is free, has expired or is
    /// already `owner`'s (a retried request whose answer was lost takes it again).
    pub async fn lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Lease, Error> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(exec_pk(name)))
            .key("sk", s("#"))
            .update_expression("SET lease_owner = :o, lease_until = :u")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(lease_until) OR lease_until < :now \
                 OR lease_owner = :o)",
            )
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        match res {
            Ok(out) => Ok(Lease::Taken(Box::new(execution_from(
                &out.attributes.unwrap_or_default(),
            )))),
            // The item as it was comes with the refusal, when it exists (else it is read).
            Err(err) if is_conditional_failure(&err) => Ok(match refused_item(&err) {
                Some(_) => Lease::Busy,
                None => match self.execution(name).await? {
                    Some(_) => Lease::Busy,
                    None => Lease::Missing,
                },
            }),
            Err(err) => Err(Error::aws("DynamoDB UpdateItem (lease)", err)),
        }
    }

    /// Leaves event `message` (an encoded queue message) in execution `exec`'s inbox, keyed by `id`
    /// (the same event twice: one entry), for the transition holding its lease to take in. Kept a
    /// day. Counted by [`Store::count_inbox`], which must follow.
    pub async fn put_inbox(
        &self,
        exec: &str,
        id: &str,
        message: &[u8],
        now_ms: i64,
    ) -> Result<(), Error> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(inbox_pk(exec)))
            .item("sk", s(id))
            .item("message", b(message))
            .item("ttl", n(now_ms / 1000 + INBOX_SECS))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws("DynamoDB PutItem (inbox)", e))?;
        Ok(())
    }

    /// Counts `added` events left in execution `exec`'s inbox, provided a transition holds its lease
    /// (that transition then takes them in before its commit: see [`Store::commit`]); false when none
    /// does, and the caller must take the lease itself.
    pub async fn count_inbox(&self, exec: &str, added: u64, now_ms: i64) -> Result<bool, Error> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(exec_pk(exec)))
            .key("sk", s("#"))
            .update_expression("ADD inbox :a")
            .condition_expression("attribute_exists(lease_owner) AND lease_until >= :now")
            .expression_attribute_values(":a", n(added))
            .expression_attribute_values(":now", n(now_ms))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        applied(res, "DynamoDB UpdateItem (inbox count)")
    }

    /// The events in execution `exec`'s inbox.
    pub async fn inbox(&self, exec: &str) -> Result<Vec<InboxEntry>, Error> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p")
                .expression_attribute_values(":p", s(inbox_pk(exec)))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o))
                .map_err(|e| Error::aws("DynamoDB Query (inbox)", e))?;
            for item in page.items() {
                if let (Some(id), Some(message)) = (get_s(item, "sk"), get_b(item, "message")) {
                    out.push(InboxEntry { id, message });
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Removes events `ids` from execution `exec`'s inbox (taken in by a committed transition).
    pub async fn drop_inbox(&self, exec: &str, ids: &[String]) -> Result<(), Error> {
        for chunk in ids.chunks(BATCH_WRITE_ITEMS) {
            let mut requests = Vec::with_capacity(chunk.len());
            for id in chunk {
                let del = aws_sdk_dynamodb::types::DeleteRequest::builder()
                    .key("pk", s(inbox_pk(exec)))
                    .key("sk", s(id))
                    .build()
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                requests.push(
                    aws_sdk_dynamodb::types::WriteRequest::builder()
                        .delete_request(del)
                        .build(),
                );
            }
            self.batch_write(requests, "DynamoDB BatchWriteItem (inbox)")
                .await?;
        }
        Ok(())
    }

    /// Fails execution `name` with `error` when it is still QUEUED and no transition holds it (a
    /// launch that could not finish: nothing of it started); true when it did.
    pub async fn fail_queued(&self, name: &str, error: &str, now_ms: i64) -> Result<bool, Error> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(exec_pk(name)))
            .key("sk", s("#"))
            .update_expression(
                "SET phase = :f, #er = :er, updated = :now, #ttl = :ttl, #v = #v + :one",
            )
            .condition_expression(
                "phase = :q AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            )
            .expression_attribute_names("#er", "error")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":f", s("FAILED"))
            .expression_attribute_values(":q", s("QUEUED"))
            .expression_attribute_values(":er", s(error))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(now_ms / 1000 + RETENTION_SECS as i64))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        applied(res, "DynamoDB UpdateItem (fail a queued execution)")
    }

    /// Moves execution `name`'s latest sweep from `from` to `to` (ms), unless another has become the
    /// latest since; true when it moved.
    pub async fn move_sweep(&self, name: &str, from: i64, to: i64) -> Result<bool, Error> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(exec_pk(name)))
            .key("sk", s("#"))
            .update_expression("SET sweep_due = :to")
            .condition_expression("sweep_due = :from")
            .expression_attribute_values(":to", n(to))
            .expression_attribute_values(":from", n(from))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        applied(res, "DynamoDB UpdateItem (sweep)")
    }

    /// Gives the lease back without changing anything.
    pub async fn release(&self, name: &str, owner: &str) -> Result<(), Error> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(exec_pk(name)))
            .key("sk", s("#"))
            .update_expression("REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :o")
            .expression_attribute_values(":o", s(owner))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        applied(res, "DynamoDB UpdateItem (release)").map(|_| ())
    }

    /// The execution's node records as they were at its version `version`, by node index.
    pub async fn nodes(&self, name: &str, version: u64) -> Result<Vec<NodeRecord>, Error> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p AND begins_with(sk, :n)")
                .expression_attribute_values(":p", s(exec_pk(name)))
                .expression_attribute_values(":n", s("node#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o))
                .map_err(|e| Error::aws("DynamoDB Query (nodes)", e))?;
            for item in page.items() {
                let Some(key) = get_s(item, "sk").and_then(|sk| node_of_sk(&sk)) else {
                    continue;
                };
                out.push(read_record(key, item, version)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Commits a transition: the node records that changed, then the execution's new state and phase
    /// (and, once finished, its TTL and error), conditional on `owner` still holding the lease, which
    /// is given back. Each record is written first into its slot that holds no committed state (see
    /// the module's documentation), 25 a request; none is written once `deadline_ms` has passed
    /// ([`Error::LostLease`]: the lease may be about to end). An item without inputs loses the ones
    /// it held (a started execution's state holds them).
    ///
    /// `drained` says up to which `inbox` count the transition took in the execution's inbox; when
    /// `exact`, the commit is made only if no event has been counted since, and otherwise
    /// [`Committed::InboxMoved`] says so with the lease still held (the records written stay invisible
    /// and are written again by the next try).
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        &self,
        e: &ExecutionItem,
        owner: &str,
        finished: bool,
        nodes: &[NodeWrite],
        drained: Drained,
        now_ms: i64,
        deadline_ms: i64,
    ) -> Result<Committed, Error> {
        let pk = exec_pk(&e.name);
        let next = e.version + 1;
        let ttl = finished.then(|| now_ms / 1000 + RETENTION_SECS as i64);
        let record_ttl = now_ms / 1000 + RECORD_RETENTION_SECS as i64;
        let batches: Vec<&[NodeWrite]> = nodes.chunks(BATCH_WRITE_ITEMS).collect();
        for chunk in batches.chunks(PARALLEL_WRITES) {
            if crate::now_ms() > deadline_ms {
                return Err(Error::LostLease(e.name.clone()));
            }
            let writes = chunk
                .iter()
                .map(|batch| self.write_slots(&pk, batch, next, record_ttl));
            for r in futures_util::future::join_all(writes).await {
                r?;
            }
        }
        if crate::now_ms() > deadline_ms {
            return Err(Error::LostLease(e.name.clone()));
        }
        let mut set = "SET #v = #v + :one, phase = :ph, #st = :s, updated = :now".to_string();
        let mut remove = "lease_owner, lease_until".to_string();
        let mut condition = "lease_owner = :o".to_string();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&pk))
            .key("sk", s("#"))
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ph", s(&e.phase))
            .expression_attribute_values(":s", b(&e.state))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":o", s(owner));
        match &e.state_blob {
            Some(k) => {
                set.push_str(", state_blob = :sb");
                update = update.expression_attribute_values(":sb", s(k));
            }
            None => remove.push_str(", state_blob"),
        }
        if e.inputs.is_empty() {
            remove.push_str(", inputs");
        }
        if let Some(due) = e.new_sweep_due {
            set.push_str(", sweep_due = :sd");
            update = update.expression_attribute_values(":sd", n(due));
        }
        if drained.exact {
            condition.push_str(if drained.seen == 0 {
                " AND attribute_not_exists(inbox)"
            } else {
                " AND inbox = :seen"
            });
        }
        if drained.seen != e.drained {
            set.push_str(", drained = :seen");
        }
        if drained.seen != e.drained || (drained.exact && drained.seen != 0) {
            update = update.expression_attribute_values(":seen", n(drained.seen));
        }
        if let Some(err) = &e.error {
            set.push_str(", #er = :er");
            update = update
                .expression_attribute_names("#er", "error")
                .expression_attribute_values(":er", s(err));
        }
        if let Some(ttl) = ttl {
            set.push_str(", #ttl = :ttl");
            update = update
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":ttl", n(ttl));
        }
        let res = update
            .update_expression(format!("{set} REMOVE {remove}"))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        let err = match res {
            Ok(_) => return Ok(Committed::Done),
            Err(err) if is_conditional_failure(&err) => err,
            Err(err) => return Err(Error::aws("DynamoDB UpdateItem (commit)", err)),
        };
        // Refused: the lease was lost, or (still held) events reached the inbox.
        let item = match refused_item(&err) {
            Some(item) => Some(item.clone()),
            None => self.get(pk, "execution").await?,
        };
        match item {
            Some(item) if get_s(&item, "lease_owner").as_deref() == Some(owner) => Ok(
                Committed::InboxMoved(get_n(&item, "inbox").unwrap_or(0).max(0) as u64),
            ),
            _ => Err(Error::LostLease(e.name.clone())),
        }
    }

    /// Writes node records `writes` (at most 25), each whole: its committed state kept in its slot,
    /// the new state tagged with version `version` in the other (a record with none committed: slot
    /// 0 alone), to expire at `ttl` (seconds). Items DynamoDB leaves unprocessed are written again,
    /// with backoff.
    async fn write_slots(
        &self,
        pk: &str,
        writes: &[NodeWrite],
        version: u64,
        ttl: i64,
    ) -> Result<(), Error> {
        let mut requests = Vec::with_capacity(writes.len());
        for w in writes {
            let mut item = HashMap::from([
                ("pk".to_string(), s(pk)),
                ("sk".to_string(), s(node_sk(w.index, w.part))),
            ]);
            let new_slot = match &w.committed {
                Some((slot, v, bytes)) => {
                    let kept = usize::from(*slot).min(1);
                    item.extend(
                        slot_attrs(kept, bytes, *v)
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v)),
                    );
                    1 - kept
                }
                None => 0,
            };
            item.extend(
                slot_attrs(new_slot, &w.bytes, version)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v)),
            );
            item.insert("ttl".into(), n(ttl));
            let put = aws_sdk_dynamodb::types::PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| Error::Invalid(e.to_string()))?;
            requests.push(
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(put)
                    .build(),
            );
        }
        self.batch_write(requests, "DynamoDB BatchWriteItem (node records)")
            .await
    }

    /// Writes `requests` (at most 25) with one BatchWriteItem; what DynamoDB leaves unprocessed is
    /// written again, with backoff. `call` names the call in errors.
    async fn batch_write(
        &self,
        mut requests: Vec<aws_sdk_dynamodb::types::WriteRequest>,
        call: &str,
    ) -> Result<(), Error> {
        let mut delay = std::time::Duration::from_millis(50);
        for _ in 0..8 {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o))
                .map_err(|e| Error::aws(call, e))?;
            requests = out
                .unprocessed_items
                .and_then(|mut m| m.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(Error::Aws(format!(
            "{call}: {} left unprocessed after 8 tries",
            requests.len()
        )))
    }

    /// Cached outputs under `key`.
    pub async fn cached(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .get(format!("cache#{key}"), "cache")
            .await?
            .and_then(|i| get_b(&i, "outputs")))
    }

    /// Stores outputs under cache key `key`.
    pub async fn put_cached(&self, key: &str, outputs: &[u8]) -> Result<(), Error> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("cache#{key}")))
            .item("sk", s("#"))
            .item("outputs", b(outputs))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws("DynamoDB PutItem (cache)", e))?;
        Ok(())
    }

    /// Reserves cache key `key` for attempt `holder` until `until_ms` (a serializable cached task: one
    /// attempt computes a key at a time). Taken when free, already the holder's (its lease renewed), or
    /// expired; otherwise `Some` names the attempt holding it.
    pub async fn reserve_cached(
        &self,
        key: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<String>, Error> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("cachelock#{key}")))
            .item("sk", s("#"))
            .item("holder", s(holder))
            .item("until", n(until_ms))
            .condition_expression("attribute_not_exists(pk) OR holder = :h OR #u < :now")
            .expression_attribute_names("#u", "until")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":now", n(now_ms))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        match res {
            Ok(_) => Ok(None),
            Err(err) if is_conditional_failure(&err) => Ok(Some(
                self.get(format!("cachelock#{key}"), "cache reservation")
                    .await?
                    .and_then(|i| get_s(&i, "holder"))
                    .unwrap_or_default(),
            )),
            Err(err) => Err(Error::aws("DynamoDB PutItem (cache reservation)", err)),
        }
    }

    /// Renews attempt `holder`'s reservation of cache key `key` until `until_ms` (not its: nothing).
    pub async fn renew_cached(&self, key: &str, holder: &str, until_ms: i64) -> Result<(), Error> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("cachelock#{key}")))
            .key("sk", s("#"))
            .update_expression("SET #u = :u")
            .condition_expression("holder = :h")
            .expression_attribute_names("#u", "until")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":u", n(until_ms))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        applied(res, "DynamoDB UpdateItem (cache reservation)").map(|_| ())
    }

    /// Ends attempt `holder`'s reservation of cache key `key` (not its: nothing).
    pub async fn release_cached(&self, key: &str, holder: &str) -> Result<(), Error> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("cachelock#{key}")))
            .key("sk", s("#"))
            .condition_expression("holder = :h")
            .expression_attribute_values(":h", s(holder))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o));
        applied(res, "DynamoDB DeleteItem (cache reservation)").map(|_| ())
    }

    /// Records that attempt `attempt` of execution `name` looks again at its reserved cache key at
    /// `due_ms`: the one wait of it that counts (a copy of an earlier wait's message is stale).
    pub async fn put_wait(
        &self,
        name: &str,
        attempt: &str,
        due_ms: i64,
        now_ms: i64,
    ) -> Result<(), Error> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(exec_pk(name)))
            .item("sk", s(format!("cachewait#{attempt}")))
            .item("due", n(due_ms))
            .item("ttl", n(now_ms / 1000 + RETENTION_SECS as i64))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws("DynamoDB PutItem (cache wait)", e))?;
        Ok(())
    }

    /// When attempt `attempt` of execution `name` last chose to look again at its reserved cache key.
    pub async fn wait_due(&self, name: &str, attempt: &str) -> Result<Option<i64>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(exec_pk(name)))
            .key("sk", s(format!("cachewait#{attempt}")))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws("DynamoDB GetItem (cache wait)", e))?;
        Ok(out.item.as_ref().and_then(|i| get_n(i, "due")))
    }

    /// Records that workflow or launch plan `name` is in the package at S3 key `package`.
    pub async fn register(&self, name: &str, package: &str, now_ms: i64) -> Result<(), Error> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("reg#{name}")))
            .item("sk", s("#"))
            .item("package", s(package))
            .item("registered", n(now_ms))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws("DynamoDB PutItem (registration)", e))?;
        Ok(())
    }

    /// Every registered workflow and launch plan with the S3 key of its package, as last registered
    /// (a scan of the table: for listings, not for a transition's path).
    pub async fn registrations(&self) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :h AND begins_with(pk, :r)")
                .expression_attribute_values(":h", s("#"))
                .expression_attribute_values(":r", s("reg#"))
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o))
                .map_err(|e| Error::aws("DynamoDB Scan (registrations)", e))?;
            for item in page.items() {
                let name =
                    get_s(item, "pk").and_then(|p| p.strip_prefix("reg#").map(str::to_string));
                if let (Some(n), Some(p)) = (name, get_s(item, "package")) {
                    out.push((n, p));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                out.sort();
                return Ok(out);
            }
        }
    }

    /// The S3 key of the package that holds workflow or launch plan `name`, as last registered.
    pub async fn registered(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .get(format!("reg#{name}"), "registration")
            .await?
            .and_then(|i| get_s(&i, "package")))
    }

    /// Records that entity `kind` (`task`, `workflow`, `launch plan`) `name` at `version` is in the
    /// package at S3 key `package` (what reference tasks and launch plans resolve against).
    pub async fn register_entity(
        &self,
        kind: &str,
        name: &str,
        version: &str,
        package: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("ent#{kind}#{name}")))
            .item("sk", s(format!("v#{version}")))
            .item("package", s(package))
            .item("registered", n(now_ms))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws("DynamoDB PutItem (entity registration)", e))?;
        Ok(())
    }

    /// Every version entity `kind` `name` is registered at, with its package's S3 key and when,
    /// oldest first.
    pub async fn entity_versions(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Vec<(String, String, i64)>, Error> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p AND begins_with(sk, :v)")
                .expression_attribute_values(":p", s(format!("ent#{kind}#{name}")))
                .expression_attribute_values(":v", s("v#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o))
                .map_err(|e| Error::aws("DynamoDB Query (entity registrations)", e))?;
            for item in page.items() {
                let version =
                    get_s(item, "sk").and_then(|v| v.strip_prefix("v#").map(str::to_string));
                if let (Some(v), Some(p)) = (version, get_s(item, "package")) {
                    let at = get_n(item, "registered").unwrap_or(0);
                    out.push((v, p, at));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        out.sort_by_key(|(_, _, at)| *at);
        Ok(out)
    }

    /// Records that the task attempt `check` (an encoded check message) waits on the external job `job`
    /// (e.g. `batch:<job id>`), so that the job's state changes check it at once. Kept 30 days.
    pub async fn watch(&self, job: &str, check: &[u8], now_ms: i64) -> Result<(), Error> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("watch#{job}")))
            .item("sk", s("#"))
            .item("message", b(check))
            .item("ttl", n(now_ms / 1000 + RETENTION_SECS as i64))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws("DynamoDB PutItem (watch)", e))?;
        Ok(())
    }

    /// The check message of the task attempt waiting on external job `job`, if one is.
    pub async fn watcher(&self, job: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .get(format!("watch#{job}"), "watch")
            .await?
            .and_then(|i| get_b(&i, "message")))
    }

    /// Keeps the handles of task attempts of execution `exec` that one transition started, together in
    /// one item (`key` tells it from the others: a transition's version and its starts; a repeated
    /// start writes another item, which readers take as the same attempts) — deflated, so a
    /// transition's starts cost a write unit or two rather than one each. Through them an abort
    /// reaches what a start made without rebuilding it, and for an attempt that sends an end signal
    /// the execution's sweeps find its check (`check`, encoded; its handle may be left out, being
    /// `handle`) to send once it ended. Kept 30 days (the table's TTL deletes them, at no cost): an
    /// attempt's end or stop leaves its handle — its end is in the execution's records, which readers
    /// consult. Starts without a `unit` are kept as the attempt 0 of node 0.
    pub async fn keep_starts(
        &self,
        exec: &str,
        key: &str,
        starts: &[KeptHandle],
        now_ms: i64,
    ) -> Result<(), Error> {
        // Each item within DynamoDB's 400 KB (handles are small: this splits only the pathological).
        let mut pending = vec![starts];
        let mut part = 0;
        while let Some(group) = pending.pop() {
            if group.is_empty() {
                continue;
            }
            let packed = pack_starts(group);
            if packed.len() > MAX_KEPT_STARTS_BYTES && group.len() > 1 {
                let (a, b) = group.split_at(group.len() / 2);
                pending.push(b);
                pending.push(a);
                continue;
            }
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(handles_pk(exec)))
                .item("sk", s(format!("{STARTS_PREFIX}{key}#{part}")))
                .item("starts", b(&packed))
                .item("ttl", n(now_ms / 1000 + RETENTION_SECS as i64))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o))
                .map_err(|e| Error::aws("DynamoDB PutItem (attempt handles)", e))?;
            part += 1;
        }
        Ok(())
    }

    /// The handle of task attempt `name` of execution `exec`, if its start was kept (read with every
    /// handle the execution keeps: a transition's starts are kept together).
    pub async fn handle(&self, exec: &str, name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .handles(exec)
            .await?
            .into_iter()
            .find(|h| h.name == name)
            .map(|h| h.handle))
    }

    /// Every handle kept for execution `exec`, once each: the attempts whose start was kept
    /// (including starts a crash kept from being committed, and attempts that ended or were stopped).
    pub async fn handles(&self, exec: &str) -> Result<Vec<KeptHandle>, Error> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p")
                .expression_attribute_values(":p", s(handles_pk(exec)))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|o| self.note(o))
                .map_err(|e| Error::aws("DynamoDB Query (attempt handles)", e))?;
            for item in page.items() {
                if let Some(packed) = get_b(item, "starts") {
                    match unpack_starts(&packed) {
                        Ok(starts) => out.extend(starts),
                        Err(e) => {
                            // Nothing can be stopped through it; the others still are.
                            tracing::error!(execution = %exec, item = ?get_s(item, "sk"), error = %e, "unreadable kept handles");
                        }
                    }
                    continue;
                }
                // Kept one attempt an item (before handles were kept together).
                if let (Some(name), Some(handle)) = (get_s(item, "sk"), get_s(item, "handle")) {
                    let unit = match (get_n(item, "node"), get_n(item, "attempt")) {
                        (Some(node), Some(attempt)) => Some((
                            node as u32,
                            get_n(item, "index").map(|i| i as u32),
                            attempt as u32,
                        )),
                        _ => None,
                    };
                    out.push(KeptHandle {
                        name,
                        handle,
                        check: get_b(item, "check"),
                        unit,
                    });
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        // A start repeated (a transition that did not commit, then its message again) is kept twice.
        let mut seen = std::collections::HashSet::new();
        out.retain(|h| seen.insert(h.name.clone()));
        Ok(out)
    }
}

impl Store {
    /// Counts one more handling of dead-lettered message `id` and returns how many there have been
    /// (1 the first time): a handling that died with its message is known to its next one. Kept 30
    /// days.
    pub async fn dead_letter_tries(&self, id: &str, now_ms: i64) -> Result<u32, Error> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("deadletter#{id}")))
            .key("sk", s("#"))
            .update_expression("ADD tries :one SET #ttl = :ttl")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(now_ms / 1000 + RETENTION_SECS as i64))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map(|o| self.note(o))
            .map_err(|e| Error::aws("DynamoDB UpdateItem (dead letter)", e))?;
        Ok(out
            .attributes
            .as_ref()
            .and_then(|a| get_n(a, "tries"))
            .unwrap_or(1) as u32)
    }
}

fn inbox_pk(exec: &str) -> String {
    format!("inbox#{exec}")
}

/// How long an inbox entry is kept (a day: a transition takes it in within a lease).
const INBOX_SECS: i64 = 24 * 3600;

/// The item a conditional write was refused over, when the request asked for it and it exists.
fn refused_item<R>(
    e: &aws_sdk_dynamodb::error::SdkError<op::update_item::UpdateItemError, R>,
) -> Option<&HashMap<String, AttributeValue>> {
    match e.as_service_error()? {
        op::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item(),
        _ => None,
    }
}

fn handles_pk(exec: &str) -> String {
    format!("handles#{exec}")
}

/// How the items of kept starts' sort keys begin.
const STARTS_PREFIX: &str = "starts#";

/// The most bytes of deflated starts one item holds (DynamoDB's items hold 400 KB).
const MAX_KEPT_STARTS_BYTES: usize = 300 * 1024;

/// `starts` as one item keeps them: a KeptStarts, deflated ([`updraft_wire::kept`]).
fn pack_starts(starts: &[KeptHandle]) -> Vec<u8> {
    updraft_wire::kept::pack(&KeptStarts {
        starts: starts
            .iter()
            .map(|h| {
                let (node, index, attempt) = h.unit.unwrap_or_default();
                KeptStart {
                    name: h.name.clone(),
                    handle: h.handle.clone(),
                    check: h.check.clone().unwrap_or_default(),
                    node,
                    index,
                    attempt,
                }
            })
            .collect(),
    })
}

/// The starts an item keeps ([`pack_starts`]'s bytes).
fn unpack_starts(packed: &[u8]) -> Result<Vec<KeptHandle>, String> {
    let kept = updraft_wire::kept::unpack(packed).map_err(|e| e.0)?;
    Ok(kept
        .starts
        .into_iter()
        .map(|k| KeptHandle {
            name: k.name,
            handle: k.handle,
            check: (!k.check.is_empty()).then_some(k.check),
            unit: Some((k.node, k.index, k.attempt)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_proto::Message;
    use updraft_proto::updraft::{CheckMessage, QueueMessage, queue_message::Kind};

    /// Element `i` of a map's attempt as a cluster start keeps it: a pod's handle, and the check its
    /// end signal stands for.
    fn element(i: u32) -> KeptHandle {
        let name = format!("map-5f3a9c2e-n0-{i}-0");
        let prefix = format!("s3://updraft-data-123456789012-eu-west-1/data/map-5f3a9c2e/n0/{i}/0");
        let handle = serde_json::json!({
            "connector": "eks",
            "value": {
                "objects": [{"version": "v1", "kind": "Pod", "plural": "pods", "namespace": "updraft", "name": name}],
                "started_ms": 1_764_669_123_456u64 + u64::from(i) * 7,
                "output_prefix": prefix,
                "signal": true,
            }
        })
        .to_string();
        let check = QueueMessage {
            execution: "map-5f3a9c2e".into(),
            kind: Some(Kind::Check(CheckMessage {
                node: 0,
                index: Some(i),
                attempt: 0,
                name: name.clone(),
                task: "workflows.map_wf.echo_element".into(),
                started_ms: 1_764_669_123_456 + i64::from(i) * 7,
                output_prefix: prefix,
                ..Default::default()
            })),
        };
        KeptHandle {
            name,
            handle,
            check: Some(check.encode_to_vec()),
            unit: Some((0, Some(i), 0)),
        }
    }

    /// An item holding slots `slots` (slot, bytes, version), as a commit writes it.
    fn record_item(slots: &[(usize, NodeBytes, u64)]) -> HashMap<String, AttributeValue> {
        slots
            .iter()
            .flat_map(|(slot, bytes, v)| slot_attrs(*slot, bytes, *v))
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn a_records_slots_read_back_as_written_deflated_or_not() {
        let wide = NodeBytes::Inline(b"element, element, element, element, element".repeat(20));
        let small = NodeBytes::Inline(vec![8, 1]);
        let item = record_item(&[(0, wide.clone(), 3), (1, small.clone(), 4)]);
        // The repetitive one is kept deflated, the two bytes as they are.
        assert!(item.contains_key("zstate") && !item.contains_key("state"));
        assert!(item.contains_key("state1") && !item.contains_key("zstate1"));
        let at = |v| read_record((2, 0), &item, v).unwrap();
        assert_eq!(at(3).bytes, Some(wide));
        assert_eq!((at(3).slot, at(3).stale), (0, true));
        assert_eq!(at(4).bytes, Some(small));
        let blob = NodeBytes::Blob("state/x/node-2-0-v5.pb".into());
        let item = record_item(&[(1, blob.clone(), 5)]);
        assert_eq!(read_record((2, 0), &item, 5).unwrap().bytes, Some(blob));
        // Deflated bytes that do not inflate are an error naming the record, not a record.
        let mut item = record_item(&[(0, NodeBytes::Inline(vec![0; 64]), 1)]);
        item.insert("zstate".into(), b(b"not deflated"));
        let err = read_record((2, 0), &item, 1).unwrap_err().to_string();
        assert!(err.contains("node record 2"), "{err}");
    }

    #[test]
    fn kept_starts_read_back_as_they_were_kept() {
        let mut starts: Vec<KeptHandle> = (0..5).map(element).collect();
        starts.push(KeptHandle {
            name: "wf-n1-2".into(),
            handle: r#"{"connector":"batch","value":{"jobId":"1"}}"#.into(),
            check: None,
            unit: Some((1, None, 2)),
        });
        assert_eq!(unpack_starts(&pack_starts(&starts)).unwrap(), starts);
        assert!(unpack_starts(b"not deflated").is_err());
    }

    #[test]
    fn a_transitions_starts_of_one_map_fit_one_write_unit() {
        let one = element(0);
        let raw = one.handle.len() + one.check.as_ref().map_or(0, Vec::len);
        // Parallel starts at once: the most one keeping holds in the usual course.
        let starts: Vec<KeptHandle> = (0..16).map(element).collect();
        let packed = pack_starts(&starts);
        // With the item's keys and attribute names, within a kilobyte (one write unit).
        assert!(
            packed.len() + 200 <= 1024,
            "16 starts ({raw} bytes each unpacked) packed into {} bytes",
            packed.len()
        );
    }
}
