//! `updraft ui`: the console, a web server on this machine over the local store or a deployed stack.
//! Pages are rendered by `updraft-console`; this serves them and carries out their actions (abort,
//! approve or reject a gate, send a signal, relaunch) as the commands of the same names do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use updraft_connector::LogPlace;
use updraft_console::pages::{self, Actions, ExecutionRow, Filter};
use updraft_engine::exec::history::ExecutionView;

use crate::cloud::{self, Deployment, Target};
use crate::store;
use crate::tasklogs::{CHUNK, TaskLogs};

/// Where the console reads executions from.
enum Source {
    /// The local store of `updraft run`.
    Local(PathBuf),
    /// A deployed stack.
    Stack(Box<Deployment>),
}

struct Ui {
    source: Source,
    /// What the pages' headers say it shows.
    label: String,
    /// Packages and YAML files whose launch plans the workflows page offers (beside the registry's).
    files: Vec<PathBuf>,
    /// `--python` and `--settings` of local launches.
    python: Option<PathBuf>,
    settings: Option<PathBuf>,
    /// Reads attempts' logs.
    logs: TaskLogs,
}

/// What the console runs locally: `updraft run`'s files, launch plan, Python and settings.
pub struct LocalRuns {
    /// Packages and YAML files.
    pub files: Vec<PathBuf>,
    /// `--python`.
    pub python: Option<PathBuf>,
    /// `--settings`: also the AWS endpoint and region and the cluster attempts' logs are read from.
    pub settings: Option<PathBuf>,
    /// `--kubeconfig`: the cluster pods' logs are read from (over the settings' `eks.cluster`).
    pub kubeconfig: Option<PathBuf>,
}

type Shared = Arc<Ui>;

/// An error shown as a page: its status, title and message.
struct Failure(StatusCode, &'static str, String);

impl Failure {
    fn not_found(e: impl std::fmt::Display) -> Self {
        Self(StatusCode::NOT_FOUND, "Not found", e.to_string())
    }

    fn bad(e: impl std::fmt::Display) -> Self {
        Self(StatusCode::BAD_REQUEST, "Not done", e.to_string())
    }
}

fn failure_page(ui: &Ui, f: Failure) -> Response {
    (f.0, Html(pages::error_page(&ui.label, f.1, &f.2))).into_response()
}

/// `updraft ui`: serves the console until interrupted.
pub fn serve(
    state_dir: &Path,
    target: &Target,
    port: u16,
    runs: LocalRuns,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let settings = crate::load_settings(runs.settings.as_deref(), None)?;
    rt.block_on(async {
        let reader = TaskLogs::of(target, &settings, runs.kubeconfig.clone()).await?;
        let (source, label) = match &target.stack {
            Some(_) => (
                Source::Stack(Box::new(cloud::connect(target).await?)),
                format!("stack {}", target.stack()),
            ),
            None => (
                Source::Local(state_dir.to_path_buf()),
                format!("local ({})", state_dir.display()),
            ),
        };
        let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        let ui = Arc::new(Ui {
            source,
            label,
            files: runs.files.iter().map(absolute).collect(),
            python: runs.python.as_ref().map(absolute),
            settings: runs.settings.as_ref().map(absolute),
            logs: reader,
        });
        let app = Router::new()
            .route("/", get(executions))
            .route("/executions/{name}", get(execution))
            .route("/executions/{name}/nodes/{node}", get(node))
            .route("/executions/{name}/logs", get(logs))
            .route("/executions/{name}/abort", post(abort))
            .route("/executions/{name}/signal", post(signal))
            .route("/executions/{name}/relaunch", post(relaunch))
            .route("/workflows", get(workflows))
            .route("/launch-plans/{name}", get(launch_plan))
            .route("/launch-plans/{name}/launch", post(launch))
            .fallback(not_found)
            .layer(axum::middleware::from_fn(local_only))
            .with_state(ui.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "updraft: the console of {} is at http://{addr}/ (Ctrl-C to stop)",
            ui.label
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the console's server")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Answers only requests made for this machine's console: a `Host` other than 127.0.0.1 or localhost
/// (a name rebound to this machine by another site) is refused, and so is a form posted from another
/// site's page (its `Origin` is not the console's), so no page elsewhere can steer executions through
/// a browser that has the console open.
async fn local_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host.as_str(),
    };
    if !matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
        return (
            StatusCode::FORBIDDEN,
            format!("the console answers requests for 127.0.0.1 or localhost only, not `{host}`"),
        )
            .into_response();
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if req.method() == axum::http::Method::POST
        && origin.is_some_and(|o| o != format!("http://{host}"))
    {
        return (
            StatusCode::FORBIDDEN,
            "refused: the form was posted from another site's page",
        )
            .into_response();
    }
    next.run(req).await
}

async fn not_found(State(ui): State<Shared>) -> Response {
    failure_page(&ui, Failure::not_found("no such page"))
}

/// A stack's phase name (`SUCCEEDED`) as the engine names it (`Succeeded`).
fn phase_title(p: &str) -> String {
    let mut c = p.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    within: String,
}

async fn executions(State(ui): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    let rows = match rows(&ui).await {
        Ok(r) => r,
        Err(e) => return failure_page(&ui, Failure(StatusCode::BAD_GATEWAY, "Cannot list", e)),
    };
    let filter = Filter {
        workflow: q.workflow,
        phase: q.phase,
        within_ms: pages::WITHIN
            .iter()
            .find(|(v, ..)| *v == q.within)
            .map(|(.., ms)| *ms),
    };
    Html(pages::executions_page(
        &ui.label,
        &rows,
        &filter,
        crate::run::now_ms(),
    ))
    .into_response()
}

async fn rows(ui: &Ui) -> Result<Vec<ExecutionRow>, String> {
    match &ui.source {
        Source::Local(state) => Ok(store::summaries(state)
            .into_iter()
            .map(|s| ExecutionRow {
                name: s.name,
                workflow: s.workflow,
                phase: s.phase,
                started_ms: Some(s.started * 1000),
                parent: None,
            })
            .collect()),
        Source::Stack(d) => Ok(d
            .clients
            .store
            .executions()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| ExecutionRow {
                phase: phase_title(&e.phase),
                started_ms: u64::try_from(e.created).ok(),
                parent: e.parent.map(|(p, _)| p),
                name: e.name,
                workflow: e.workflow,
            })
            .collect()),
    }
}

async fn history(ui: &Ui, name: &str) -> Result<ExecutionView, Failure> {
    match &ui.source {
        Source::Local(state) => store::history(state, name).map_err(Failure::not_found),
        Source::Stack(d) => cloud::ops::history_on(d, name)
            .await
            .map_err(Failure::not_found),
    }
}

fn actions(ui: &Ui, view: &ExecutionView) -> Actions {
    let top = match &ui.source {
        // A local child runs within its parent's `updraft run`: steered through its parent.
        Source::Local(state) => store::exec_dir(state, &view.name).is_dir(),
        Source::Stack(_) => true,
    };
    Actions {
        steer: top,
        relaunch: top,
    }
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    fragment: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

async fn execution(
    State(ui): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let view = match history(&ui, &name).await {
        Ok(v) => v,
        Err(f) => return failure_page(&ui, f),
    };
    let actions = actions(&ui, &view);
    let notice = q.notice.as_deref();
    if q.fragment.is_some() {
        return Html(pages::execution_fragment(&view, actions, notice)).into_response();
    }
    Html(pages::execution_page(&ui.label, &view, actions, notice)).into_response()
}

#[derive(Deserialize, Default)]
struct NodeQuery {
    #[serde(default)]
    index: Option<u32>,
}

async fn node(
    State(ui): State<Shared>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    Query(q): Query<NodeQuery>,
) -> Response {
    let view = match history(&ui, &name).await {
        Ok(v) => v,
        Err(f) => return failure_page(&ui, f),
    };
    let Some(node) = view.nodes.iter().find(|n| n.id == id) else {
        return failure_page(
            &ui,
            Failure::not_found(format!("execution {name} has no node `{id}`")),
        );
    };
    let attempts = node.attempts_of(q.index);
    // The last attempt's logs, followed as they grow.
    let logs: Vec<(String, String)> = match attempts.last() {
        Some(a) => a
            .logs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let place = LogPlace::parse(l);
                ui.logs.can_read(&place).then(|| {
                    (
                        place.label(),
                        format!(
                            "/executions/{}/logs?node={}&attempt={}{}&log={i}",
                            pages::url_part(&name),
                            pages::url_part(&id),
                            a.attempt,
                            q.index.map(|i| format!("&index={i}")).unwrap_or_default()
                        ),
                    )
                })
            })
            .collect(),
        None => Vec::new(),
    };
    Html(pages::node_page(&ui.label, &view, node, q.index, &logs)).into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    node: String,
    attempt: u32,
    #[serde(default)]
    index: Option<u32>,
    /// Which of the attempt's log places.
    log: usize,
    #[serde(default)]
    offset: u64,
}

/// The text of one of an attempt's logs from `offset` on (a file, a pod's, a CloudWatch stream's), with
/// the next offset (`X-Offset`) and whether the attempt still runs (`X-Running`); only places the
/// execution's history names are read.
async fn logs(
    State(ui): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let view = match history(&ui, &name).await {
        Ok(v) => v,
        Err(f) => return (f.0, f.2).into_response(),
    };
    let attempt = view.nodes.iter().find(|n| n.id == q.node).and_then(|n| {
        n.attempts_of(q.index)
            .iter()
            .find(|a| a.attempt == q.attempt)
            .cloned()
    });
    let Some(a) = attempt else {
        return (StatusCode::NOT_FOUND, "no such attempt").into_response();
    };
    let place = match a.logs.get(q.log).map(|l| LogPlace::parse(l)) {
        Some(p) if ui.logs.can_read(&p) => p,
        _ => return (StatusCode::NOT_FOUND, "the attempt keeps no such log").into_response(),
    };
    let chunk = match ui.logs.read(&place, q.offset).await {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("[{e}]")).into_response(),
    };
    // more to come: the attempt runs, or this read stopped short of the end
    let more = a.ended_ms.is_none() || chunk.next - q.offset.min(chunk.next) >= CHUNK - 3;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("X-Offset", HeaderValue::from(chunk.next));
    headers.insert(
        "X-Running",
        HeaderValue::from_static(if more { "1" } else { "0" }),
    );
    (headers, chunk.text).into_response()
}

fn back(name: &str, notice: &str) -> Response {
    let q: String = pages::url_part(notice);
    Redirect::to(&format!("/executions/{name}?notice={q}")).into_response()
}

#[derive(Deserialize)]
struct AbortForm {
    #[serde(default)]
    reason: String,
}

async fn abort(
    State(ui): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Form(f): Form<AbortForm>,
) -> Response {
    let reason = if f.reason.trim().is_empty() {
        "aborted from the console".to_string()
    } else {
        f.reason
    };
    let done = match &ui.source {
        Source::Local(state) => store::abort(state, &name, &reason).map(|_| ()),
        Source::Stack(d) => cloud::ops::abort_on(d, &name, &reason).await,
    };
    match done {
        Ok(()) => back(&name, "asked to abort"),
        Err(e) => failure_page(&ui, Failure::bad(format!("{e:#}"))),
    }
}

#[derive(Deserialize)]
struct SignalForm {
    id: String,
    #[serde(default)]
    value: String,
}

async fn signal(
    State(ui): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Form(f): Form<SignalForm>,
) -> Response {
    let done = match &ui.source {
        Source::Local(state) => store::signal(state, &name, &f.id, &f.value).map(|_| ()),
        Source::Stack(d) => cloud::ops::signal_on(d, &name, &f.id, &f.value).await,
    };
    match done {
        Ok(()) => back(&name, &format!("sent `{}`", f.id)),
        Err(e) => failure_page(&ui, Failure::bad(format!("{e:#}"))),
    }
}

/// The inputs a launch or relaunch form holds: a JSON object of input names to values.
fn form_inputs(text: &str) -> Result<BTreeMap<String, Value>, Failure> {
    serde_json::from_str(text).map_err(|e| {
        Failure::bad(format!(
            "the inputs must be a JSON object of input names to values: {e}"
        ))
    })
}

#[derive(Deserialize)]
struct RelaunchForm {
    inputs: String,
}

async fn relaunch(
    State(ui): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Form(f): Form<RelaunchForm>,
) -> Response {
    let inputs = match form_inputs(&f.inputs) {
        Ok(i) => i,
        Err(f) => return failure_page(&ui, f),
    };
    let started = match &ui.source {
        Source::Local(state) => match store::summaries(state)
            .into_iter()
            .find(|s| s.name == name)
            .and_then(|s| s.launch)
        {
            Some(l) => run_local(state, &l, &inputs).await,
            None => Err(anyhow::anyhow!(
                "execution {name} does not say what ran it (a child, or an execution from an \
                 Updraft that kept no record of it)"
            )),
        },
        Source::Stack(d) => cloud::ops::relaunch_on(d, &name, inputs).await,
    };
    match started {
        Ok(new) => back(&new, &format!("relaunched from {name}")),
        Err(e) => failure_page(&ui, Failure::bad(format!("{e:#}"))),
    }
}

/// Runs `launch` with `inputs` (`updraft run` in the background, its output in
/// `<state>/console/run-<time>.log`); returns the new execution's name once it exists.
async fn run_local(
    state: &Path,
    launch: &store::Launch,
    inputs: &BTreeMap<String, Value>,
) -> anyhow::Result<String> {
    let dir = state.join("console");
    std::fs::create_dir_all(&dir)?;
    let stamp = crate::run::now_ms();
    let inputs_file = dir.join(format!("inputs-{stamp}.json"));
    std::fs::write(&inputs_file, serde_json::to_vec(inputs)?)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("run")
        .args(&launch.files)
        .args(["-l", &launch.launch_plan])
        .arg("--inputs-file")
        .arg(&inputs_file)
        .arg("--state-dir")
        .arg(state);
    if let Some(p) = &launch.python {
        cmd.arg("--python").arg(p);
    }
    if let Some(s) = &launch.settings {
        cmd.arg("--settings").arg(s);
    }
    let log = dir.join(format!("run-{stamp}.log"));
    let out = std::fs::File::create(&log)?;
    cmd.stdout(out.try_clone()?).stderr(out);
    let mut child = cmd.spawn().context("cannot start `updraft run`")?;
    let suffix = format!("-{:x}", child.id());
    for _ in 0..200 {
        if let Some(s) = store::summaries(state)
            .into_iter()
            .find(|s| s.name.ends_with(&suffix))
        {
            // Reaped when it ends, so it leaves no zombie behind.
            std::thread::spawn(move || child.wait());
            return Ok(s.name);
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!(
                "`updraft run` ended ({status}) before starting: {}",
                text.trim()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "`updraft run` did not start within 10 s (its output: {})",
        log.display()
    )
}

/// A launch plan the console offers, and where it comes from.
struct Offered {
    view: pages::LaunchPlanView,
    /// Local: the files it was loaded from; a stack: its package's key.
    origin: Origin,
}

enum Origin {
    Files(Vec<PathBuf>),
    Package(String),
}

/// The launch plans of `pkg` (those named in `only`, when given) as the console shows them.
fn offered(
    pkg: &updraft_engine::CompiledPackage,
    origin: &str,
    only: Option<&[String]>,
) -> Vec<pages::LaunchPlanView> {
    use updraft_engine::exec::history::GraphView;
    use updraft_engine::literal::to_json;
    use updraft_engine::types::display;
    pkg.launch_plans
        .values()
        .filter(|lp| only.is_none_or(|o| o.contains(&lp.name)))
        .filter_map(|lp| {
            let wf = pkg.workflows.get(&lp.workflow)?;
            let mut inputs: Vec<_> = lp
                .interface
                .inputs
                .iter()
                .map(|(n, t)| {
                    (
                        n.clone(),
                        display(t),
                        lp.defaults.get(n).map(to_json),
                        lp.required.contains(n),
                        false,
                    )
                })
                .collect();
            for (n, v) in &lp.fixed {
                let t = wf.interface.inputs.get(n).map(display).unwrap_or_default();
                inputs.push((n.clone(), t, Some(to_json(v)), false, true));
            }
            Some(pages::LaunchPlanView {
                name: lp.name.clone(),
                workflow: lp.workflow.clone(),
                origin: origin.to_string(),
                inputs,
                outputs: lp
                    .interface
                    .outputs
                    .iter()
                    .map(|(n, t)| (n.clone(), display(t)))
                    .collect(),
                graph: GraphView::of(wf),
            })
        })
        .collect()
}

/// Every launch plan the console offers: locally, those of the files `updraft ui` was given and of
/// the packages registered under the state folder; on a stack, those registered on it.
async fn catalog(ui: &Ui) -> Result<Vec<Offered>, String> {
    let mut out = Vec::new();
    match &ui.source {
        Source::Local(state) => {
            let mut sets: Vec<Vec<PathBuf>> = Vec::new();
            if !ui.files.is_empty() {
                sets.push(ui.files.clone());
            }
            let registered = crate::registry::packages(state).map_err(|e| format!("{e:#}"))?;
            sets.extend(registered.into_iter().map(|p| vec![p]));
            for files in sets {
                let pkg = crate::load::load(&files).map_err(|p| p.to_string())?;
                let compiled = updraft_engine::compile_lenient(&pkg).0;
                let origin = files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                for view in offered(&compiled, &origin, None) {
                    out.push(Offered {
                        view,
                        origin: Origin::Files(files.clone()),
                    });
                }
            }
        }
        Source::Stack(d) => {
            let regs = d
                .clients
                .store
                .registrations()
                .await
                .map_err(|e| e.to_string())?;
            let mut by_package: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, key) in regs {
                by_package.entry(key).or_default().push(name);
            }
            for (key, names) in by_package {
                let uri = d.clients.blobs.uri(&key);
                let Some(bytes) = d.clients.blobs.get(&uri).await.map_err(|e| e.to_string())?
                else {
                    continue;
                };
                let Ok(pkg) = updraft_engine::Package::decode(&key, &bytes, Default::default())
                else {
                    continue;
                };
                let compiled = updraft_engine::compile_lenient(&pkg).0;
                for view in offered(&compiled, &key, Some(&names)) {
                    out.push(Offered {
                        view,
                        origin: Origin::Package(key.clone()),
                    });
                }
            }
        }
    }
    // The same name from two places: the first (the files given, then the registry's latest).
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|o| seen.insert(o.view.name.clone()));
    out.sort_by(|a, b| a.view.name.cmp(&b.view.name));
    Ok(out)
}

async fn workflows(State(ui): State<Shared>) -> Response {
    match catalog(&ui).await {
        Ok(c) => {
            let rows: Vec<(String, String, String)> = c
                .into_iter()
                .map(|o| (o.view.name, o.view.workflow, o.view.origin))
                .collect();
            Html(pages::launch_plans_page(&ui.label, &rows)).into_response()
        }
        Err(e) => failure_page(&ui, Failure(StatusCode::BAD_GATEWAY, "Cannot list", e)),
    }
}

async fn find_offered(ui: &Ui, name: &str) -> Result<Offered, Failure> {
    catalog(ui)
        .await
        .map_err(|e| Failure(StatusCode::BAD_GATEWAY, "Cannot list", e))?
        .into_iter()
        .find(|o| o.view.name == name)
        .ok_or_else(|| Failure::not_found(format!("no launch plan `{name}`")))
}

async fn launch_plan(State(ui): State<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    match find_offered(&ui, &name).await {
        Ok(o) => Html(pages::launch_plan_page(
            &ui.label,
            &o.view,
            &o.view.form_inputs(),
        ))
        .into_response(),
        Err(f) => failure_page(&ui, f),
    }
}

async fn launch(
    State(ui): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Form(f): Form<RelaunchForm>,
) -> Response {
    let o = match find_offered(&ui, &name).await {
        Ok(o) => o,
        Err(f) => return failure_page(&ui, f),
    };
    let inputs = match form_inputs(&f.inputs) {
        Ok(i) => i,
        Err(f) => return failure_page(&ui, f),
    };
    // Inputs left null take their defaults.
    let inputs: BTreeMap<String, Value> =
        inputs.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let started = match (&ui.source, &o.origin) {
        (Source::Local(state), Origin::Files(files)) => {
            let l = store::Launch {
                files: files.clone(),
                launch_plan: name.clone(),
                python: ui.python.clone(),
                settings: ui.settings.clone(),
            };
            run_local(state, &l, &inputs).await
        }
        (Source::Stack(d), Origin::Package(key)) => {
            cloud::ops::launch_on(
                d,
                updraft_aws::request::Request {
                    launch_plan: Some(name.clone()),
                    package: Some(key.clone()),
                    inputs,
                    ..Default::default()
                },
            )
            .await
        }
        _ => Err(anyhow::anyhow!("launch plan `{name}` cannot run here")),
    };
    match started {
        Ok(new) => back(&new, &format!("launched {name}")),
        Err(e) => failure_page(&ui, Failure::bad(format!("{e:#}"))),
    }
}
