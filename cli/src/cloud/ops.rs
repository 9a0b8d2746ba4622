//! The stack commands that use a deployment: `register`, `launch`, `list`, `status`, `watch`, `logs`,
//! `abort` and `signal`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use updraft_aws::request::Request;
use updraft_aws::store::ExecutionItem;
use updraft_engine::exec::history::{ChildView, ExecutionView, GraphView};
use updraft_engine::exec::node_phase_of;
use updraft_engine::literal::{from_json, to_json};
use updraft_proto::Message;
use updraft_proto::updraft::{
    AbortMessage, ExecutionState, NodeState, QueueMessage, SignalMessage, queue_message,
};

use super::{Deployment, Target, connect};

/// `updraft register <files…> --stack S`: each file in turn resolves its reference tasks and launch
/// plans against what the stack has registered (so a file may refer to one registered before it, in
/// this command or earlier) and must then compile; it is uploaded under `packages/` — with the
/// entities its references resolved to, when it has any, so an execution needs that one package — and
/// its workflows and launch plans registered by name (what `launch` names) and every entity by name and
/// version (default: the file's digest), which later references resolve against.
pub async fn register(
    target: &Target,
    files: &[PathBuf],
    version: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let d = connect(target).await?;
    for f in files {
        let mut pkg = match crate::load::load(std::slice::from_ref(f)) {
            Ok(p) => p,
            Err(p) => return Ok(crate::report(&p)),
        };
        // Every entity the file defines (not those its references bring in).
        let own = pkg.entities();
        let original = std::fs::read(f).with_context(|| format!("{}: cannot read", f.display()))?;
        let resolved = match resolve_on_stack(&d, &mut pkg).await? {
            Ok(r) => r,
            Err(p) => return Ok(crate::report(&p)),
        };
        let compiled = match updraft_engine::compile(&pkg) {
            Ok(c) => c,
            Err(p) => return Ok(crate::report(&p)),
        };
        let file = f
            .file_name()
            .and_then(|n| n.to_str())
            .context("a file without a name")?;
        let version = version.map_or_else(|| updraft_aws::short_digest(&original), str::to_string);
        let (bytes, file) = if resolved.is_empty() {
            (original, file.to_string())
        } else {
            let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
            (
                pkg.to_archive()
                    .with_context(|| format!("{}: cannot write its package", f.display()))?,
                format!("{stem}.tgz"),
            )
        };
        let hex = updraft_aws::short_digest(&bytes);
        let key = match file.rsplit_once('.') {
            Some((stem, ext)) => format!("packages/{stem}-{hex}.{ext}"),
            None => format!("packages/{file}-{hex}"),
        };
        let uri = d.clients.blobs.uri(&key);
        d.clients.blobs.put(&uri, bytes).await?;
        let now = updraft_aws::now_ms();
        let mut names: Vec<&String> = compiled
            .workflows
            .keys()
            .chain(compiled.launch_plans.keys())
            .collect();
        names.sort();
        names.dedup();
        for name in &names {
            d.clients.store.register(name, &key, now).await?;
        }
        // Each at this version.
        for e in own {
            d.clients
                .store
                .register_entity(e.kind.label(), &e.name, &version, &key, now)
                .await?;
        }
        for r in &resolved {
            eprintln!(
                "updraft: {} resolved from the stack's registry",
                r.describe()
            );
        }
        eprintln!("updraft: {} → {uri} (version {version})", f.display());
        for name in names {
            out!("{name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves `pkg`'s references against the stack's registered entities; the references resolved, or
/// the problems of those that are not.
async fn resolve_on_stack(
    d: &Deployment,
    pkg: &mut updraft_engine::Package,
) -> anyhow::Result<Result<Vec<updraft_engine::Reference>, updraft_engine::Problems>> {
    type Found = Result<Option<updraft_engine::Package>, String>;
    let mut found: BTreeMap<updraft_engine::EntityRef, Found> = BTreeMap::new();
    loop {
        let mut probe = pkg.clone();
        let mut asked = Vec::new();
        let (resolved, problems) = probe.resolve(None, |r| match found.get(&r.entity) {
            Some(f) => f.clone(),
            None => {
                asked.push(r.clone());
                Ok(None)
            }
        });
        if asked.is_empty() {
            *pkg = probe;
            return Ok(if problems.is_empty() {
                Ok(resolved)
            } else {
                Err(updraft_engine::Problems(problems))
            });
        }
        for r in asked {
            let f = stack_lookup(d, &r).await?;
            found.insert(r.entity, f);
        }
    }
}

/// The package the stack registered the entity `r` refers to in (at its version, else the latest).
async fn stack_lookup(
    d: &Deployment,
    r: &updraft_engine::Reference,
) -> anyhow::Result<Result<Option<updraft_engine::Package>, String>> {
    let versions = d
        .clients
        .store
        .entity_versions(r.entity.kind.label(), &r.entity.name)
        .await?;
    let (_, key, _) =
        match crate::registry::pick_version(r, &versions, |(v, _, _)| v, " on the stack") {
            Ok(Some(chosen)) => chosen,
            Ok(None) => return Ok(Ok(None)),
            Err(why) => return Ok(Err(why)),
        };
    let uri = d.clients.blobs.uri(key);
    let Some(bytes) = d.clients.blobs.get(&uri).await? else {
        return Ok(Err(format!(
            "{} is registered in {uri}, which is gone",
            r.describe()
        )));
    };
    Ok(
        updraft_engine::Package::decode(key, &bytes, Default::default())
            .map(Some)
            .map_err(|p| {
                format!(
                    "{} is registered in {uri}, which no longer loads: {p}",
                    r.describe()
                )
            }),
    )
}

/// How `launch` hands the request over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// A JSON object under `requests/` in the bucket (what any S3 client can do).
    S3,
    /// A message to the launch queue.
    Queue,
    /// A synchronous invocation of the launch function (its errors come back at once).
    Invoke,
}

/// What `updraft launch` was asked.
pub struct LaunchArgs {
    /// The request.
    pub request: Request,
    /// Inputs as `name=value`.
    pub inputs: Vec<String>,
    /// A JSON file of inputs.
    pub inputs_file: Option<PathBuf>,
    /// How to hand it over.
    pub via: Via,
    /// Follow the execution to its end.
    pub wait: bool,
}

/// `updraft launch`: starts an execution on the stack; prints its name (and, with `--wait`, follows it
/// as `watch` does).
pub async fn launch(target: &Target, mut args: LaunchArgs) -> anyhow::Result<ExitCode> {
    let d = connect(target).await?;
    args.request.inputs.extend(crate::run::given_inputs(
        args.inputs_file.as_deref(),
        &args.inputs,
    )?);
    let name = match &args.request.name {
        Some(n) => n.clone(),
        None => updraft_aws::request::made_up_name(&format!(
            "{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        )),
    };
    args.request.name = Some(name.clone());
    let body = serde_json::to_vec(&args.request)?;
    match args.via {
        Via::S3 => {
            let uri = d.clients.blobs.uri(&format!("requests/{name}.json"));
            d.clients.blobs.put(&uri, body).await?;
            eprintln!("updraft: request dropped at {uri}");
            wait_started(&d, &name, Some(&format!("{uri}.error.txt"))).await?;
        }
        Via::Queue => {
            let url = d.output("LaunchQueueUrl")?.to_string();
            aws_sdk_sqs::Client::new(&d.clients.sdk)
                .send_message()
                .queue_url(&url)
                .message_body(String::from_utf8_lossy(&body))
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "SQS SendMessage (launch queue): {}",
                        aws_sdk_sqs::error::DisplayErrorContext(&e)
                    )
                })?;
            wait_started(&d, &name, None).await?;
        }
        Via::Invoke => {
            let function = d.output("LaunchFunctionName")?.to_string();
            let out = aws_sdk_lambda::Client::new(&d.clients.sdk)
                .invoke()
                .function_name(&function)
                .payload(body.into())
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "Lambda Invoke {function}: {}",
                        aws_sdk_lambda::error::DisplayErrorContext(&e)
                    )
                })?;
            let payload = out.payload.map(|p| p.into_inner()).unwrap_or_default();
            let v: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            if out.function_error.is_some() {
                let msg = v["errorMessage"].as_str().unwrap_or("(no message)");
                bail!("the launch function refused the request: {msg}");
            }
        }
    }
    out!("{name}");
    if args.wait {
        return watch_execution(&d, &name).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits (up to 2 minutes) until the launch function has made execution `name`, or has written the
/// request's refusal to `error_uri` (requests dropped into the bucket).
async fn wait_started(d: &Deployment, name: &str, error_uri: Option<&str>) -> anyhow::Result<()> {
    let started = Instant::now();
    while d.clients.store.execution(name).await?.is_none() {
        if let Some(uri) = error_uri
            && let Some(e) = d.clients.blobs.get(uri).await?
        {
            bail!(
                "the request was refused ({uri}): {}",
                String::from_utf8_lossy(&e).trim()
            );
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "execution {name} has not started after 2 minutes; the launch function's logs \
                 (`updraft logs {name} --stack {}`) or its dead-letter queue say why",
                d.stack
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// An execution's state as the stack holds it.
struct Snapshot {
    item: ExecutionItem,
    state: ExecutionState,
    /// Node id → phase, in node order.
    nodes: Vec<(String, String)>,
    /// The node records.
    records: Vec<NodeState>,
}

async fn snapshot(d: &Deployment, name: &str) -> anyhow::Result<Snapshot> {
    let item = d
        .clients
        .store
        .execution(name)
        .await?
        .with_context(|| format!("no execution {name} in stack `{}`", d.stack))?;
    let state = d
        .clients
        .execution_state(&item)
        .await
        .with_context(|| format!("execution {name}: an unreadable state record"))?;
    let mut nodes = Vec::new();
    let mut records = Vec::new();
    for (index, raw) in d.clients.node_records(name, item.version).await?.joined {
        let n = NodeState::decode(raw.as_slice())
            .with_context(|| format!("execution {name}: node record {index} is unreadable"))?;
        let phase = node_phase_of(n.phase)
            .map_or_else(|| format!("phase {}", n.phase), |p| format!("{p:?}"));
        nodes.push((index, n.id.clone(), phase));
        records.push(n);
    }
    nodes.sort_by_key(|n| n.0);
    Ok(Snapshot {
        item,
        state,
        nodes: nodes.into_iter().map(|(_, id, p)| (id, p)).collect(),
        records,
    })
}

/// The graph of the workflow execution `item` runs, from its package in the bucket (None for a dynamic
/// task's sub-workflow, which is not in it, or a package that cannot be read).
async fn graph_of(d: &Deployment, item: &ExecutionItem) -> Option<GraphView> {
    if item.futures.is_some() {
        return None;
    }
    let bytes = d
        .clients
        .blobs
        .get(&d.clients.blobs.uri(&item.package))
        .await
        .ok()??;
    let pkg = updraft_engine::Package::decode(&item.package, &bytes, Default::default()).ok()?;
    let compiled = updraft_engine::compile_lenient(&pkg).0;
    compiled.workflows.get(&item.workflow).map(GraphView::of)
}

/// The history of execution `name` with its children's (the executions whose parent it is).
async fn history(
    d: &Deployment,
    name: &str,
    all: &[ExecutionItem],
) -> anyhow::Result<ExecutionView> {
    let s = snapshot(d, name).await?;
    let mut view = ExecutionView::new(&s.state, &s.records);
    view.graph = graph_of(d, &s.item).await;
    for child in all {
        if let Some((parent, node)) = &child.parent
            && parent == name
        {
            let node = s
                .records
                .iter()
                .find(|r| r.index == *node)
                .map_or_else(|| node.to_string(), |r| r.id.clone());
            view.children.push(ChildView {
                node,
                execution: Box::pin(history(d, &child.name, all)).await?,
            });
        }
    }
    Ok(view)
}

fn outputs_json(state: &ExecutionState) -> Option<Value> {
    state.outputs.as_ref().map(|o| {
        Value::Object(
            o.literals
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        )
    })
}

/// `updraft list --stack S`.
pub async fn list(target: &Target) -> anyhow::Result<ExitCode> {
    let d = connect(target).await?;
    let mut rows = d.clients.store.executions().await?;
    rows.sort_by_key(|e| e.created);
    if rows.is_empty() {
        eprintln!("no executions in stack `{}`", d.stack);
    }
    for e in rows {
        let parent = e
            .parent
            .as_ref()
            .map(|(p, n)| format!(" (child of {p}, node {n})"))
            .unwrap_or_default();
        out!("{:<20} {:<10} {}{parent}", e.name, e.phase, e.workflow);
    }
    Ok(ExitCode::SUCCESS)
}

/// The history of execution `name` on the stack, with its children's and its workflow's graph.
pub async fn history_of(target: &Target, name: &str) -> anyhow::Result<ExecutionView> {
    let d = connect(target).await?;
    history_on(&d, name).await
}

/// The history of execution `name` of stack `d` (as [`history_of`]).
pub async fn history_on(d: &Deployment, name: &str) -> anyhow::Result<ExecutionView> {
    let all = d.clients.store.executions().await?;
    history(d, name, &all).await
}

/// `updraft status <exec> --stack S` (`json`: its history, as JSON).
pub async fn status(target: &Target, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let view = history_of(target, name).await?;
        out!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    let d = connect(target).await?;
    let s = snapshot(&d, name).await?;
    out!("{} ({}): {}", s.item.name, s.item.workflow, s.item.phase);
    for (id, phase) in &s.nodes {
        out!("  {id:<28} {phase}");
    }
    if let Some(e) = &s.item.error {
        out!("error: {e}");
    }
    if let Some(o) = outputs_json(&s.state) {
        out!("outputs: {}", serde_json::to_string_pretty(&o)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `updraft watch <exec> --stack S`.
pub async fn watch(target: &Target, name: &str) -> anyhow::Result<ExitCode> {
    let d = connect(target).await?;
    watch_execution(&d, name).await
}

/// Prints node phase changes as they happen until the execution ends; then its outputs as JSON
/// (stdout) or its error. Exit 0 when it succeeded.
async fn watch_execution(d: &Deployment, name: &str) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut phase = String::new();
    loop {
        let s = snapshot(d, name).await?;
        if s.item.phase != phase {
            phase = s.item.phase.clone();
            eprintln!(
                "  [{:>7.2}s] {name:<24} {phase}",
                started.elapsed().as_secs_f64()
            );
        }
        for (id, p) in &s.nodes {
            if shown.get(id) != Some(p) {
                eprintln!("  [{:>7.2}s] {id:<24} {p}", started.elapsed().as_secs_f64());
                shown.insert(id.clone(), p.clone());
            }
        }
        if matches!(phase.as_str(), "SUCCEEDED" | "FAILED" | "ABORTED") {
            if let Some(o) = outputs_json(&s.state) {
                out!("{}", serde_json::to_string_pretty(&o)?);
            }
            if let Some(e) = &s.item.error {
                eprintln!("updraft: {name} {phase}: {e}");
            }
            return Ok(if phase == "SUCCEEDED" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn running(d: &Deployment, name: &str) -> anyhow::Result<ExecutionItem> {
    let item = d
        .clients
        .store
        .execution(name)
        .await?
        .with_context(|| format!("no execution {name} in stack `{}`", d.stack))?;
    if matches!(item.phase.as_str(), "SUCCEEDED" | "FAILED" | "ABORTED") {
        bail!("execution {name} is {}; nothing to steer", item.phase);
    }
    Ok(item)
}

/// `updraft abort <exec> --stack S`.
pub async fn abort(target: &Target, name: &str, reason: &str) -> anyhow::Result<ExitCode> {
    let d = connect(target).await?;
    abort_on(&d, name, reason).await?;
    eprintln!("updraft: asked {name} to abort");
    Ok(ExitCode::SUCCESS)
}

/// Asks execution `name` of stack `d` to abort.
pub async fn abort_on(d: &Deployment, name: &str, reason: &str) -> anyhow::Result<()> {
    running(d, name).await?;
    d.clients
        .queue
        .send(
            &QueueMessage {
                execution: name.into(),
                kind: Some(queue_message::Kind::Abort(AbortMessage {
                    reason: reason.into(),
                })),
            },
            Duration::ZERO,
        )
        .await?;
    Ok(())
}

/// `updraft signal <exec> <id> <value> --stack S`: the value is typed as the gate that waits for it
/// declares (the execution's package says).
pub async fn signal(
    target: &Target,
    name: &str,
    id: &str,
    value: &str,
) -> anyhow::Result<ExitCode> {
    let d = connect(target).await?;
    signal_on(&d, name, id, value).await?;
    eprintln!("updraft: sent `{id}` to {name}");
    Ok(ExitCode::SUCCESS)
}

/// Sends signal `id` with `value` (JSON or text, typed as its gate declares) to execution `name` of
/// stack `d`.
pub async fn signal_on(d: &Deployment, name: &str, id: &str, value: &str) -> anyhow::Result<()> {
    let item = running(d, name).await?;
    let uri = d.clients.blobs.uri(&item.package);
    let bytes = d
        .clients
        .blobs
        .get(&uri)
        .await?
        .with_context(|| format!("execution {name}: its package {uri} is gone"))?;
    let pkg = updraft_engine::Package::decode(&item.package, &bytes, Default::default())
        .map_err(|p| anyhow::anyhow!("{uri}: {p}"))?;
    // The launch checked what the execution runs; the rest of the package need not compile.
    let compiled = updraft_engine::compile_lenient(&pkg).0;
    let types = compiled
        .workflows
        .values()
        .flat_map(crate::run::signal_types)
        .collect::<BTreeMap<_, _>>();
    let t = types
        .get(id)
        .with_context(|| format!("execution {name}: no gate waits for signal `{id}`"))?;
    let v: Value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    let literal = from_json(&v, t).map_err(|e| anyhow::anyhow!("signal `{id}`: {e}"))?;
    d.clients
        .queue
        .send(
            &QueueMessage {
                execution: name.into(),
                kind: Some(queue_message::Kind::Signal(SignalMessage {
                    id: id.into(),
                    value: Some(literal),
                })),
            },
            Duration::ZERO,
        )
        .await?;
    Ok(())
}

/// Starts a new execution on stack `d` of what execution `name` ran, its package and workflow, with
/// `inputs`; returns its name once the launch function has made it.
pub async fn relaunch_on(
    d: &Deployment,
    name: &str,
    inputs: std::collections::BTreeMap<String, Value>,
) -> anyhow::Result<String> {
    let item = d
        .clients
        .store
        .execution(name)
        .await?
        .with_context(|| format!("no execution {name} in stack `{}`", d.stack))?;
    if item.futures.is_some() || item.parent.is_some() {
        bail!("execution {name} is a child execution: relaunch its parent");
    }
    launch_on(
        d,
        Request {
            workflow: Some(item.workflow.clone()),
            package: Some(item.package.clone()),
            inputs,
            ..Default::default()
        },
    )
    .await
}

/// Drops `request` (named here) into stack `d`'s bucket; returns the new execution's name once the
/// launch function has made it, or the reason it refused the request.
pub async fn launch_on(d: &Deployment, mut request: Request) -> anyhow::Result<String> {
    let new = updraft_aws::request::made_up_name(&format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    request.name = Some(new.clone());
    let uri = d.clients.blobs.uri(&format!("requests/{new}.json"));
    d.clients
        .blobs
        .put(&uri, serde_json::to_vec(&request)?)
        .await?;
    wait_started(d, &new, Some(&format!("{uri}.error.txt"))).await?;
    Ok(new)
}

/// `updraft logs <exec> [node] --stack S`: the functions' log lines about the execution (and node),
/// from CloudWatch Logs.
pub async fn logs(target: &Target, name: &str, node: Option<&str>) -> anyhow::Result<ExitCode> {
    let d = connect(target).await?;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&d.clients.sdk);
    let mut found = 0;
    for function in [
        "LaunchFunctionName",
        "TransitionFunctionName",
        "EventsFunctionName",
    ] {
        let group = format!("/aws/lambda/{}", d.output(function)?);
        let mut token = None;
        loop {
            let out = logs
                .filter_log_events()
                .log_group_name(&group)
                .filter_pattern(format!("\"{name}\""))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "CloudWatch Logs FilterLogEvents {group}: {}",
                        aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
                    )
                })?;
            for e in out.events.unwrap_or_default() {
                let Some(line) = e.message else { continue };
                let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
                    continue;
                };
                if !mentions(&v, "execution", name) {
                    continue;
                }
                if let Some(n) = node
                    && !mentions(&v, "node", n)
                {
                    continue;
                }
                found += 1;
                out!("{}", render_log(&v));
            }
            token = out.next_token;
            if token.is_none() {
                break;
            }
        }
    }
    if found == 0 {
        eprintln!("updraft: no log lines about {name} (yet)");
    }
    Ok(ExitCode::SUCCESS)
}

/// True when a JSON log line carries `field` = `value`, at the top, in its fields or in a span.
fn mentions(v: &Value, field: &str, value: &str) -> bool {
    let here = |o: &Value| o.get(field).and_then(Value::as_str) == Some(value);
    here(v)
        || here(&v["fields"])
        || here(&v["span"])
        || v["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(here))
}

fn render_log(v: &Value) -> String {
    let time = v["timestamp"].as_str().unwrap_or_default();
    let level = v["level"].as_str().unwrap_or_default();
    let message = v["fields"]["message"].as_str().unwrap_or_default();
    let mut extra = Vec::new();
    if let Some(f) = v["fields"].as_object() {
        for (k, val) in f {
            if k != "message" {
                extra.push(format!(
                    "{k}={}",
                    val.as_str().map_or(val.to_string(), str::to_string)
                ));
            }
        }
    }
    for s in v["spans"].as_array().into_iter().flatten() {
        for k in ["node", "attempt"] {
            if let Some(val) = s.get(k) {
                extra.push(format!(
                    "{k}={}",
                    val.as_str().map_or(val.to_string(), str::to_string)
                ));
            }
        }
    }
    format!("{time} {level:<5} {message} {}", extra.join(" "))
}
