//! Launching an execution: the request, its validation against the registered package, the execution
//! item and its start message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use updraft_engine::exec::{ExecConfig, Execution, Program, exec_phase_code};
use updraft_engine::launch::{choose_launch_plan, launch_inputs, reachable_tasks};
use updraft_engine::{CompiledPackage, Limits, Package};
use updraft_proto::Message;
use updraft_proto::updraft::{QueueMessage, StartMessage, queue_message};

use crate::store::ExecutionItem;
use crate::{Clients, Error, Settings, now_ms};

pub use updraft_aws::request::{Request, made_up_name, valid_name};
pub use updraft_wire::launch::{Source, url_decode};

/// A package's problems as one error, one line.
fn invalid(p: updraft_engine::Problems) -> Error {
    Error::Invalid(
        p.0.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Reads package bytes stored under `key` (`.yaml`/`.yml`: Updraft YAML; otherwise a flytekit package).
pub fn decode_package(key: &str, bytes: &[u8]) -> Result<Package, Error> {
    Package::decode(key, bytes, Limits::default()).map_err(invalid)
}

/// Packages by key, decoded and compiled, kept while the function stays warm (packages never change
/// under a key); and dynamic tasks' sub-workflows, compiled, by child execution.
#[derive(Debug, Default)]
pub struct Packages(
    Mutex<HashMap<String, Loaded>>,
    Mutex<HashMap<String, Program>>,
);

/// A package and every entity of it that compiles.
type Loaded = (Arc<Package>, Arc<CompiledPackage>);

impl Packages {
    /// The package at `key` in the bucket, and every entity of it that compiles.
    async fn load(&self, clients: &Clients, key: &str) -> Result<Loaded, Error> {
        if let Some(p) = self.0.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(p);
        }
        let uri = clients.blobs.uri(key);
        let bytes = clients
            .blobs
            .get(&uri)
            .await?
            .ok_or_else(|| Error::Invalid(format!("no package at {uri}")))?;
        let pkg = decode_package(key, &bytes)?;
        let compiled = Arc::new(updraft_engine::compile_lenient(&pkg).0);
        let both = (Arc::new(pkg), compiled);
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_string(), both.clone());
        }
        Ok(both)
    }

    /// The compiled sub-workflow of dynamic child execution `name`, if kept.
    pub fn dynamic(&self, name: &str) -> Option<Program> {
        self.1.lock().ok().and_then(|m| m.get(name).cloned())
    }

    /// Keeps the compiled sub-workflow of dynamic child execution `name`.
    pub fn keep_dynamic(&self, name: &str, program: &Program) {
        if let Ok(mut m) = self.1.lock() {
            m.insert(name.to_string(), program.clone());
        }
    }

    /// The compiled package at `key` in the bucket (every entity of it that compiles; a launch has
    /// checked that what its execution runs does).
    pub async fn get(&self, clients: &Clients, key: &str) -> Result<Arc<CompiledPackage>, Error> {
        Ok(self.load(clients, key).await?.1)
    }

    /// The compiled package at `key`, once everything `roots` reach compiles (problems elsewhere in
    /// the package do not matter to them).
    pub async fn get_for(
        &self,
        clients: &Clients,
        key: &str,
        roots: impl FnOnce(&Package) -> Vec<updraft_engine::EntityRef>,
    ) -> Result<Arc<CompiledPackage>, Error> {
        let (pkg, compiled) = self.load(clients, key).await?;
        updraft_engine::compile(&pkg.closure(&roots(&pkg))).map_err(invalid)?;
        Ok(compiled)
    }
}

/// Starts the execution `req` asks for; returns its name. `seed` makes the name of a request that has
/// none (the same seed, the same name: an S3 object's key and ETag make a dropped request start once).
/// Everything is checked before anything is made: the package, the launch plan, the inputs, and that
/// every task can run here.
pub async fn launch(
    settings: &Settings,
    clients: &Clients,
    packages: &Packages,
    req: &Request,
    seed: &str,
) -> Result<String, Error> {
    let name = match &req.name {
        Some(n) if valid_name(n) => n.clone(),
        Some(n) => {
            return Err(Error::Invalid(format!(
                "request: name `{n}`: use 1 to 40 lowercase letters, digits and `-`"
            )));
        }
        None => made_up_name(seed),
    };
    let target = req
        .launch_plan
        .as_deref()
        .or(req.workflow.as_deref())
        .ok_or_else(|| Error::Invalid("request: give `workflow` or `launchPlan`".into()))?;
    let key = match &req.package {
        Some(k) => k.clone(),
        None => clients.store.registered(target).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "request: `{target}` is not registered (run `updraft register` first)"
            ))
        })?,
    };
    let pkg = packages
        .get_for(clients, &key, |p| {
            p.launch_roots(req.launch_plan.as_deref(), req.workflow.as_deref())
        })
        .await?;
    let lp = choose_launch_plan(
        &pkg,
        req.launch_plan.as_deref(),
        req.workflow.as_deref(),
        None,
    )
    .map_err(|e| Error::Invalid(format!("request: {e}")))?;
    let inputs = launch_inputs(&pkg, &lp, req.inputs.clone())
        .map_err(|e| Error::Invalid(format!("request: {e}")))?;
    let workflow = pkg.launch_plans[&lp].workflow.clone();
    check_tasks(settings, &clients.sdk, &pkg, &workflow)?;
    let mut config = ExecConfig::new(&name);
    config.overwrite_cache = req.overwrite_cache;
    config.max_parallelism = req.max_parallelism.filter(|m| *m > 0);
    let program = Program {
        package: pkg,
        workflow: workflow.clone(),
    };
    let exec = Execution::new(&program, config).map_err(Error::Invalid)?;
    let now = now_ms();
    let mut item = ExecutionItem {
        name: name.clone(),
        phase: crate::transition::phase_name(exec_phase_code(exec.phase())).into(),
        workflow,
        package: key,
        state: exec.state_record().encode_to_vec(),
        inputs: inputs.encode_to_vec(),
        created: now,
        ..Default::default()
    };
    clients.offload_inputs(&mut item).await?;
    let created = clients.store.create_execution(&item).await?;
    // A start message even when the execution already existed: a launch that stopped between the two
    // is finished by its redelivery, and a second start changes nothing.
    clients
        .queue
        .send(
            &QueueMessage {
                execution: name.clone(),
                kind: Some(queue_message::Kind::Start(StartMessage {})),
            },
            Duration::ZERO,
        )
        .await?;
    tracing::info!(execution = %name, created, "launched");
    Ok(name)
}

/// Refuses a workflow with tasks this deployment cannot run, each problem named: every task goes
/// through the registry the transition function runs it with (the cluster's connector checking native
/// tasks against the cluster settings without reaching the cluster, the AWS services' connectors their
/// queues, roles and configurations); a task no connector here serves is named with its type.
pub fn check_tasks(
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
    pkg: &CompiledPackage,
    workflow: &str,
) -> Result<(), Error> {
    let tasks = reachable_tasks(pkg, workflow);
    let eks = settings
        .eks
        .clone()
        .map(|c| std::sync::Arc::new(updraft_connector_eks::EksConnector::checking(c)));
    let registry = settings.registry(eks, sdk);
    let bad: Vec<String> = registry
        .preflight(tasks.values().copied().filter(|t| !t.runs_in_engine()))
        .iter()
        .map(|p| match p {
            updraft_connector::RegistryError::Unserved { .. } if settings.eks.is_none() => format!(
                "{p} (without cluster settings, EksClusterName and EksSettings, the stack runs no \
                 native task)"
            ),
            updraft_connector::RegistryError::Invalid { task, .. } => {
                let nodes = updraft_engine::launch::task_nodes_text(pkg, workflow, task);
                if nodes.is_empty() {
                    p.to_string()
                } else {
                    format!("{nodes}: {p}")
                }
            }
            p => p.to_string(),
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "request: `{workflow}` has tasks that cannot run here: {}; nothing was started",
        bad.join("; ")
    )))
}

/// The request `source` holds (read from the bucket for S3 sources) and the seed of its name; None
/// when there is none to launch (an error note, an object gone, a bad request from an object: its
/// error is written next to it).
async fn request_of(
    clients: &Clients,
    source: &Source,
    req: Option<Request>,
) -> Result<Option<(Request, String)>, Error> {
    Ok(Some(match (source, req) {
        (_, Some(r)) => {
            let seed = match source {
                Source::Message { id } => id.clone(),
                Source::Object { bucket, key, etag } => format!("{bucket}/{key}/{etag}"),
            };
            (r, seed)
        }
        (Source::Object { bucket, key, etag }, None) => {
            if key.ends_with(".error.txt") {
                return Ok(None);
            }
            let uri = format!("s3://{bucket}/{key}");
            let Some(bytes) = clients.blobs.get(&uri).await? else {
                return Ok(None);
            };
            match serde_json::from_slice::<Request>(&bytes) {
                Ok(r) => (r, format!("{bucket}/{key}/{etag}")),
                Err(e) => {
                    let err = Error::Invalid(format!("{uri}: not a request: {e}"));
                    report(clients, &uri, &err).await?;
                    return Ok(None);
                }
            }
        }
        (Source::Message { id }, None) => {
            return Err(Error::Invalid(format!("launch message {id}: no request")));
        }
    }))
}

/// Launches the request `source` holds (reading it from the bucket for S3 sources). A bad request from
/// an object gets its error written to `<key>.error.txt` and counts as handled; other errors are
/// returned.
pub async fn launch_from(
    settings: &Settings,
    clients: &Clients,
    packages: &Packages,
    source: &Source,
    req: Option<Request>,
) -> Result<Option<String>, Error> {
    let Some((req, seed)) = request_of(clients, source, req).await? else {
        return Ok(None);
    };
    match launch(settings, clients, packages, &req, &seed).await {
        Ok(name) => Ok(Some(name)),
        Err(e @ Error::Invalid(_)) => match source {
            Source::Object { bucket, key, .. } => {
                report(clients, &format!("s3://{bucket}/{key}"), &e).await?;
                Ok(None)
            }
            Source::Message { .. } => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The requests a launch-queue message holds (see [`updraft_wire::launch::requests_in`]).
pub fn requests_in(body: &str, message_id: &str) -> Result<Vec<(Source, Option<Request>)>, Error> {
    updraft_wire::launch::requests_in(body, message_id).map_err(|e| Error::Invalid(e.0))
}

/// Where launch dead letter `id` is kept in the bucket.
pub fn launch_dead_letter_key(id: &str) -> String {
    format!("dead-letters/launch/{id}.json")
}

/// Handles a launch-queue message that used up its `deliveries` (the launch function timed out,
/// crashed, ran out of memory or failed each time): it is kept in the bucket
/// ([`launch_dead_letter_key`]: its body and when), then each request in it ends: the execution it
/// made, if any and still QUEUED (nothing of it started), is failed with the code `DeadLetter` and
/// the reason; a request from an object gets the reason in `<key>.error.txt`. Returns the executions
/// failed. Idempotent; an error leaves the message for a later handling.
pub async fn launch_dead_letter(
    clients: &Clients,
    id: &str,
    body: &str,
    deliveries: u32,
) -> Result<Vec<String>, Error> {
    let key = launch_dead_letter_key(id);
    let uri = clients.blobs.uri(&key);
    let kept = serde_json::json!({
        "messageId": id,
        "deliveries": deliveries,
        "body": body,
        "keptMs": now_ms(),
    });
    clients
        .blobs
        .put(&uri, serde_json::to_vec_pretty(&kept).unwrap_or_default())
        .await?;
    let reason = format!(
        "the launch request could not be processed after {deliveries} deliveries and went to the \
         dead-letter queue (kept at {uri})"
    );
    let found = match requests_in(body, id) {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(message_id = %id, error = %e, kept = %uri, "an undecodable launch dead letter");
            return Ok(Vec::new());
        }
    };
    let mut failed = Vec::new();
    for (source, req) in found {
        let Some((req, seed)) = request_of(clients, &source, req).await? else {
            continue;
        };
        let name = req
            .name
            .clone()
            .filter(|n| valid_name(n))
            .unwrap_or_else(|| made_up_name(&seed));
        let error = format!("[{}] {reason}", crate::transition::DEAD_LETTER);
        if clients.store.fail_queued(&name, &error, now_ms()).await? {
            failed.push(name.clone());
        }
        tracing::error!(message_id = %id, execution = %name, kept = %uri, "a launch request used up its deliveries");
        if let Source::Object { bucket, key, .. } = &source {
            report(
                clients,
                &format!("s3://{bucket}/{key}"),
                &Error::Invalid(reason.clone()),
            )
            .await?;
        }
    }
    Ok(failed)
}

async fn report(clients: &Clients, uri: &str, e: &Error) -> Result<(), Error> {
    tracing::error!(request = %uri, error = %e, "bad request");
    clients
        .blobs
        .put(&format!("{uri}.error.txt"), format!("{e}\n").into_bytes())
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn package(names: &[&str]) -> CompiledPackage {
        let mut pkg = updraft_engine::package::Package::default();
        for n in names {
            let path = format!(
                "{}/../tests/fixtures/flytekit/{n}",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes = std::fs::read(&path).unwrap();
            pkg.merge(
                updraft_engine::package::Package::from_tgz(n, &bytes, Default::default()).unwrap(),
            )
            .unwrap();
        }
        updraft_engine::compile::compile(&pkg).unwrap()
    }

    fn settings(eks: Option<&str>, services: &str) -> Settings {
        let mut services = updraft_settings::Settings::parse("test", services).unwrap();
        // As the functions' settings have it: the stack's bucket.
        services.data.prefix = Some("s3://b/executions".into());
        Settings {
            table: "t".into(),
            bucket: "b".into(),
            transitions_url: "q".into(),
            eks: eks.map(|e| serde_json::from_str(e).unwrap()),
            max_check_delay: Duration::from_secs(60),
            lease: Duration::from_secs(120),
            max_receives: 5,
            max_starts: 100,
            services,
            fault: None,
        }
    }

    fn sdk() -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build()
    }

    #[test]
    fn every_task_is_checked_by_the_connector_that_would_run_it() {
        let pkg = package(&["branches.tgz", "batch.tgz"]);
        // No cluster: native tasks are named, with what the stack lacks.
        let e = check_tasks(
            &settings(None, "{}"),
            &sdk(),
            &pkg,
            "fixtures.branches.branch_wf",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no connector here runs this task type"), "{e}");
        assert!(e.contains("EksClusterName"), "{e}");
        assert!(e.contains("nothing was started"), "{e}");
        // With the cluster's settings, they pass without reaching a cluster.
        let eks = r#"{"namespace": "flyte"}"#;
        check_tasks(
            &settings(Some(eks), "{}"),
            &sdk(),
            &pkg,
            "fixtures.branches.branch_wf",
        )
        .unwrap();
        // A Batch task is checked against the Batch settings.
        let e = check_tasks(
            &settings(Some(eks), "{}"),
            &sdk(),
            &pkg,
            "fixtures.batch.batch_wf",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("fixtures.batch.transcode") && e.contains("batch.jobQueue"),
            "{e}"
        );
        check_tasks(
            &settings(
                Some(eks),
                "{batch: {jobQueue: q, jobRoleArn: 'arn:aws:iam::1:role/r'}}",
            ),
            &sdk(),
            &pkg,
            "fixtures.batch.batch_wf",
        )
        .unwrap();
    }
}
