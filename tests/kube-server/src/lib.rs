//! A Kubernetes API server for tests, where no real one can run.
//!
//! It serves core/v1 Pods and the custom resources Updraft creates — `kubeflow.org/v1` PyTorchJob, TFJob,
//! MPIJob and `sparkoperator.k8s.io/v1beta2` SparkApplication — over plain HTTP, with the documented
//! behaviour of the real API server:
//!
//! - `POST` a collection creates (201); an existing name is `409 AlreadyExists`; a name or label value that
//!   is not valid is `422 Invalid`; a namespace in the body that differs from the path's is `400 BadRequest`;
//! - `GET` an object (`404 NotFound` with a `Status` body when missing), or a list, filtered by
//!   `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated);
//! - `PUT` replaces; a `metadata.resourceVersion` that is not the current one is `409 Conflict`; the
//!   object's `status` is kept (it changes only through the `/status` subresource);
//! - `PATCH` with `application/merge-patch+json` merges (RFC 7386);
//! - `DELETE` removes and returns the object; objects a custom resource owns are deleted with it;
//! - every write bumps the object's `resourceVersion`; creation sets `uid` and `creationTimestamp`;
//! - `GET …/pods/<name>/log[?container=c][&limitBytes=n]` returns what the container printed so far (its
//!   first `n` bytes); `400 BadRequest` while the container waits to start.
//!
//! Status advances as a cluster's would:
//!
//! - **kubelet**: each pod's init containers, then its containers, really run as local processes with the
//!   container's environment (the image is ignored): `command` + `args`, or `args` alone when there is no
//!   command (an image whose entrypoint runs its arguments, as flytekit's does); a container with neither
//!   stands for an image whose entrypoint serves until stopped. Container states and the pod phase follow:
//!   Pending (ContainerCreating) → Running → Succeeded / Failed (restart policy Never). Two image
//!   conventions inject failures: an image whose name contains `missing` never pulls (ErrImagePull, then
//!   ImagePullBackOff); an image tagged `:oom` is OOMKilled (exit code 137). Volume mounts are real: a
//!   container with `volumeMounts` (or on a node with [`Node::mounts`]) runs in its own mount namespace
//!   (`unshare`, so root) where each `emptyDir` volume — a folder of the pod's — `hostPath`, and `secret`
//!   volume (the Secret's keys, or its `items`, as files) is bound at its mount path (read-only when
//!   asked); a path that does not exist is made in an overlay of its nearest existing folder, so the
//!   node's own files are never touched. Containers run in their own process group, killed whole when
//!   the pod goes.
//! - **Secrets** (`/api/v1/namespaces/<ns>/secrets`) are stored as given; a variable's
//!   `valueFrom.secretKeyRef` takes the key's value (`data`, base64, or `stringData`). A secret or key a
//!   container needs that is not there keeps the pod Pending with that container waiting in
//!   `CreateContainerConfigError`, the message the kubelet gives (`secret "x" not found`, `couldn't find
//!   key k in Secret ns/x`), until it appears.
//! - **training operator**: a PyTorchJob, TFJob or MPIJob becomes one pod per replica (`<job>-<role>-<i>`,
//!   with the operator's environment: MASTER_ADDR/WORLD_SIZE/RANK, TF_CONFIG), and its conditions follow the
//!   decisive pod (PyTorch master, TF chief or first worker, MPI launcher): Created → Running → Succeeded
//!   or Failed. An elastic PyTorchJob (`elasticPolicy`) has workers only, each given torchrun's settings
//!   as the operator gives them (`PET_RDZV_ENDPOINT` at the first worker, `PET_RDZV_BACKEND`,
//!   `PET_NNODES` `min:max`, `PET_MAX_RESTARTS`, `PET_NPROC_PER_NODE`); a PyTorchJob without a master
//!   succeeds when every worker has and fails when one fails.
//! - **Spark operator**: a SparkApplication becomes its driver pod (`<app>-driver`, running the
//!   application's arguments), and `status.applicationState.state` follows it: SUBMITTED → RUNNING →
//!   COMPLETED or FAILED.

mod auth;
pub mod http;
mod kubelet;
mod operators;
mod selector;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{Value, json};

pub use auth::EksAuth;
pub use store::{Key, Resource, Store};

/// What every container of the test node gets, standing in for what its image would hold.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Environment set before the container's own (`PATH`, `PYTHONPATH`, …).
    pub env: Vec<(String, String)>,
    /// Host folders every container sees at a path, `(folder, path)`: a Python environment where the
    /// image would have it (`/opt/venv`), say. Like volume mounts, they need mount namespaces (root).
    pub mounts: Vec<(PathBuf, String)>,
}

impl Node {
    /// A node whose image has the Python environment of interpreter `python` (its `bin/` first on
    /// `PATH`, then `extra_path`, then this process's `PATH`; the environment itself at `/opt/venv`,
    /// where flytekit's default image keeps it) and `pythonpath` as `PYTHONPATH`.
    pub fn python(python: &Path, pythonpath: &Path, extra_path: &[PathBuf]) -> Self {
        let venv_bin = python.parent().map(Path::to_path_buf).unwrap_or_default();
        let venv = venv_bin.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut dirs = vec![venv_bin];
        dirs.extend(extra_path.iter().cloned());
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(dirs).unwrap_or_default();
        Self {
            env: vec![
                ("PATH".into(), path.to_string_lossy().into_owned()),
                ("PYTHONPATH".into(), pythonpath.display().to_string()),
            ],
            mounts: vec![(venv, "/opt/venv".into())],
        }
    }
}

/// A running test server.
pub struct Server {
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// The shared state (tests may look at it directly).
    pub store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
    /// When set, every request needs an EKS bearer token for this cluster (401 without one).
    pub auth: Arc<Mutex<Option<EksAuth>>>,
    /// The creations (`POST`s) under way: how many were answered at once at most, and a delay each
    /// may be held for (how a test sees whether a client creates several objects at once).
    pub creations: Arc<Creations>,
    threads: Vec<JoinHandle<()>>,
    http: http::Listener,
}

impl Server {
    /// Starts a server on `127.0.0.1` (port 0: any free port), with containers running in folders under
    /// `work`.
    pub fn start(port: u16, work: PathBuf) -> std::io::Result<Self> {
        Self::start_node(port, work, Node::default())
    }

    /// As [`Server::start`], on a node that gives every container `node`'s environment and mounts.
    pub fn start_node(port: u16, work: PathBuf, node: Node) -> std::io::Result<Self> {
        std::fs::create_dir_all(&work)?;
        let store = Arc::new(Mutex::new(Store::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let auth: Arc<Mutex<Option<EksAuth>>> = Arc::default();
        let creations: Arc<Creations> = Arc::default();
        let http = {
            let (store, auth, creations) = (store.clone(), auth.clone(), creations.clone());
            http::Listener::bind(
                port,
                Arc::new(move |req: &http::Request| {
                    if req.method != "POST" {
                        return serve(req, &store, &auth);
                    }
                    creations.enter();
                    let reply = serve(req, &store, &auth);
                    creations.leave();
                    reply
                }),
            )?
        };
        let url = format!("http://{}", http.addr());
        {
            let (store, stop) = (store.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                kubelet::run(&store, &stop, &work, &node);
            }));
        }
        {
            let (store, stop) = (store.clone(), stop.clone());
            threads.push(std::thread::spawn(move || operators::run(&store, &stop)));
        }
        Ok(Self {
            url,
            store,
            stop,
            auth,
            creations,
            threads,
            http,
        })
    }

    /// Writes a kubeconfig at `path` whose current context is this server, with no credentials.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n",
                self.url
            ),
        )
    }

    /// Stops the server, killing the containers it runs.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.http.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The creations a server is answering (see [`Server::creations`]).
#[derive(Debug, Default)]
pub struct Creations {
    /// How long each creation is held before it is answered (none by default); held outside the
    /// store's lock, so that creations sent at once are under way at once.
    pub delay: Mutex<Option<std::time::Duration>>,
    under_way: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Creations {
    /// The most creations that were under way at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn enter(&self) {
        let now = self.under_way.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let delay = self.delay.lock().ok().and_then(|d| *d);
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
    }

    fn leave(&self) {
        self.under_way.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers one request against the store (checking its bearer token when the server requires one).
fn serve(
    req: &http::Request,
    store: &Mutex<Store>,
    auth: &Mutex<Option<EksAuth>>,
) -> http::Response {
    let body = String::from_utf8_lossy(&req.body);
    let content_type = req.header("Content-Type").unwrap_or_default();
    let required = auth.lock().ok().and_then(|a| a.clone());
    let caller = required.map(|a| auth::check(&a, req.header("Authorization")));
    let (code, reply) = match (caller, store.lock()) {
        (Some(Err(why)), _) => (
            401,
            status_body(401, "Unauthorized", &format!("Unauthorized: {why}")),
        ),
        (caller, Ok(mut s)) => {
            if let Some(Ok(arn)) = caller {
                s.callers.insert(arn);
            }
            handle(&mut s, &req.method, &req.url, &body, content_type)
        }
        (_, Err(_)) => (
            500,
            status_body(500, "InternalError", "state lock poisoned"),
        ),
    };
    match reply {
        Reply::Json(v) => (code, "application/json", v.to_string().into_bytes()),
        Reply::Text(t) => (code, "text/plain", t.into_bytes()),
    }
}

/// A response body.
pub enum Reply {
    /// JSON (objects, lists, Status).
    Json(Value),
    /// Plain text (logs).
    Text(String),
}

/// The `Status` body of an error, as the API server writes it.
pub fn status_body(code: u16, reason: &str, message: &str) -> Reply {
    Reply::Json(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }))
}

/// Serves one request against the store.
pub fn handle(
    s: &mut Store,
    method: &str,
    url: &str,
    body: &str,
    content_type: &str,
) -> (u16, Reply) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (resource, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (Resource::find("", "v1", rest), rest),
        ["apis", group, version, rest @ ..] => (Resource::find(group, version, rest), rest),
        _ => (None, &[][..]),
    };
    let Some(resource) = resource else {
        return (
            404,
            status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    let selector = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
        .map(decode);
    let container = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("container="))
        .map(decode);
    let limit_bytes = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("limitBytes="))
        .and_then(|v| v.parse().ok());
    match rest {
        [plural] if *plural == resource.plural && method == "GET" => {
            s.list(&resource, None, selector.as_deref())
        }
        ["namespaces", ns, plural] if *plural == resource.plural => match method {
            "GET" => s.list(&resource, Some(ns), selector.as_deref()),
            "POST" => match serde_json::from_str(body) {
                Ok(v) => s.create(&resource, ns, v),
                Err(e) => (
                    400,
                    status_body(400, "BadRequest", &format!("invalid JSON: {e}")),
                ),
            },
            _ => (
                405,
                status_body(405, "MethodNotAllowed", "method not allowed"),
            ),
        },
        ["namespaces", ns, plural, name] if *plural == resource.plural => {
            let key = Key::new(&resource, ns, name);
            match method {
                "GET" => s.get(&key),
                "PUT" => match serde_json::from_str(body) {
                    Ok(v) => s.replace(&key, v, false),
                    Err(e) => (
                        400,
                        status_body(400, "BadRequest", &format!("invalid JSON: {e}")),
                    ),
                },
                "PATCH" => s.patch(&key, body, content_type, false),
                "DELETE" => s.delete(&key),
                _ => (
                    405,
                    status_body(405, "MethodNotAllowed", "method not allowed"),
                ),
            }
        }
        ["namespaces", ns, plural, name, "status"] if *plural == resource.plural => {
            let key = Key::new(&resource, ns, name);
            match method {
                "GET" => s.get(&key),
                "PUT" => match serde_json::from_str(body) {
                    Ok(v) => s.replace(&key, v, true),
                    Err(e) => (
                        400,
                        status_body(400, "BadRequest", &format!("invalid JSON: {e}")),
                    ),
                },
                "PATCH" => s.patch(&key, body, content_type, true),
                _ => (
                    405,
                    status_body(405, "MethodNotAllowed", "method not allowed"),
                ),
            }
        }
        ["namespaces", ns, "pods", name, "log"] if resource.plural == "pods" && method == "GET" => {
            s.log(
                &Key::new(&resource, ns, name),
                container.as_deref(),
                limit_bytes,
            )
        }
        _ => (
            404,
            status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

/// Decodes a URL query value (`%XX` and `+`).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The folder of this workspace's built programs (`target/<profile>`), found from the running test's
/// own path, after checking that `program` (`updraft-copilot`, say) is there — tests put it on the
/// node's `PATH`. `cargo test --workspace` builds every program; alone, `cargo build -p <its package>`.
pub fn programs_dir(program: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .map(PathBuf::from)
        .unwrap_or_default();
    assert!(
        dir.join(program).is_file(),
        "`{program}` is not built in {}: run `cargo build --workspace` (scripts/test does)",
        dir.display()
    );
    dir
}
