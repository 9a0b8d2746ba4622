//! Pods: from a container target, from a `k8s_pod` target, over a named pod template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::{TaskLaunch, dns_name};
use updraft_engine::literal::struct_json;
use updraft_engine::template::render_args;
use updraft_proto::core::Resources;
use updraft_proto::core::resources::ResourceName;
use updraft_proto::core::task_template::Target;

use crate::{AttemptPaths, BuildError, EksConfig, task_error};

/// Label keys Updraft puts on every object.
pub const LABEL_EXECUTION: &str = "updraft.run/execution";
/// The node id (label-safe).
pub const LABEL_NODE: &str = "updraft.run/node";
/// The attempt number.
pub const LABEL_ATTEMPT: &str = "updraft.run/attempt";
/// The array element, for map tasks.
pub const LABEL_INDEX: &str = "updraft.run/index";
/// The task (label-safe).
pub const LABEL_TASK: &str = "updraft.run/task";
/// Annotation naming the primary container: its end is the task's end.
pub const ANNOTATION_PRIMARY: &str = "updraft.run/primary-container";

/// What every native object of one attempt starts from: its metadata and its pod spec, with the primary
/// container complete.
pub(crate) struct Base<'a> {
    pub task: &'a CompiledTask,
    pub spark_version: String,
    pub meta: ObjectMeta,
    pub spec: PodSpec,
    /// Index of the primary container in `spec.containers`.
    pub primary: usize,
}

impl<'a> Base<'a> {
    pub fn new(
        task: &'a CompiledTask,
        launch: &TaskLaunch,
        paths: &AttemptPaths,
        config: &EksConfig,
    ) -> Result<Self, BuildError> {
        let name = &task.name;
        let namespace = config.namespace();
        let vars = paths.vars(launch, &namespace);
        let render = |field: &str, args: &[String]| {
            render_args(args, &vars).map_err(|e| task_error(name, field, e.to_string()))
        };
        let mut labels = config.labels.clone();
        let mut annotations = config.annotations.clone();
        let t = &task.template;
        let (mut spec, primary) = match &t.target {
            Some(Target::Container(c)) => {
                let container = Container {
                    name: container_name(task),
                    image: Some(c.image.clone()),
                    command: non_empty(render("container.command", &c.command)?),
                    args: non_empty(render("container.args", &c.args)?),
                    env: non_empty(
                        c.env
                            .iter()
                            .map(|kv| env(&kv.key, &kv.value))
                            .collect::<Vec<_>>(),
                    ),
                    resources: resources(c.resources.as_ref()),
                    ..Default::default()
                };
                let mut spec = PodSpec {
                    containers: vec![container],
                    ..Default::default()
                };
                if let Some(data) = c.data_config.as_ref().filter(|d| d.enabled) {
                    with_copilot(&mut spec, task, paths, config, data)?;
                }
                (spec, 0)
            }
            Some(Target::K8sPod(p)) => {
                let json = p.pod_spec.as_ref().map(struct_json).unwrap_or(Value::Null);
                let mut spec: PodSpec = serde_json::from_value(json).map_err(|e| {
                    task_error(name, "k8s_pod.pod_spec", format!("not a pod spec: {e}"))
                })?;
                let wanted = updraft_engine::plugins::primary_container_name(t, p);
                let primary = spec
                    .containers
                    .iter()
                    .position(|c| c.name == wanted)
                    .ok_or_else(|| {
                        task_error(
                            name,
                            "k8s_pod.pod_spec.containers",
                            format!("no container named `{wanted}` (the primary container)"),
                        )
                    })?;
                let c = &mut spec.containers[primary];
                if let Some(cmd) = &c.command {
                    c.command = non_empty(render("k8s_pod primary command", cmd)?);
                }
                if let Some(args) = &c.args {
                    c.args = non_empty(render("k8s_pod primary args", args)?);
                }
                if let Some(m) = &p.metadata {
                    labels.extend(m.labels.clone());
                    annotations.extend(m.annotations.clone());
                }
                (spec, primary)
            }
            _ => {
                return Err(task_error(
                    name,
                    "target",
                    "a native task needs a container or a k8s_pod target",
                ));
            }
        };
        if let Some(tpl) = t
            .metadata
            .as_ref()
            .map(|m| m.pod_template_name.as_str())
            .filter(|n| !n.is_empty())
        {
            let base = config.pod_templates.get(tpl).ok_or_else(|| {
                task_error(
                    name,
                    "metadata.pod_template_name",
                    format!(
                        "no pod template `{tpl}` is configured (known: {:?})",
                        config.pod_templates.keys().collect::<Vec<_>>()
                    ),
                )
            })?;
            spec = over_template(base.spec.clone().unwrap_or_default(), spec, primary);
            if let Some(m) = &base.metadata {
                for (k, v) in m.labels.clone().unwrap_or_default() {
                    labels.entry(k).or_insert(v);
                }
                for (k, v) in m.annotations.clone().unwrap_or_default() {
                    annotations.entry(k).or_insert(v);
                }
            }
        }
        // Updraft's variables, as flytekit reads them.
        let vars_env: Vec<EnvVar> = launch
            .flyte_env(&config.project, &config.domain)
            .iter()
            .map(|(k, v)| env(k, v))
            .collect();
        let c = &mut spec.containers[primary];
        let mut all = c.env.take().unwrap_or_default();
        all.retain(|e| !vars_env.iter().any(|v| v.name == e.name));
        all.extend(vars_env);
        c.env = Some(all);
        with_secrets(&mut spec, t);
        // The deployment's variables, in every container where the task sets none of that name.
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            let mut all = c.env.take().unwrap_or_default();
            for (k, v) in &config.env {
                if !all.iter().any(|e| &e.name == k) {
                    all.push(env(k, v));
                }
            }
            c.env = non_empty(all);
        }
        if spec.restart_policy.is_none() {
            spec.restart_policy = Some("Never".into());
        }
        let account = t
            .security_context
            .as_ref()
            .and_then(|s| s.run_as.as_ref())
            .map(|r| r.k8s_service_account.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| config.service_account.clone());
        if spec.service_account_name.is_none() {
            spec.service_account_name = account;
        }
        if launch.interruptible {
            let sel = spec.node_selector.get_or_insert_with(BTreeMap::new);
            sel.extend(config.interruptible.node_selector.clone());
            let tol = spec.tolerations.get_or_insert_with(Vec::new);
            tol.extend(config.interruptible.tolerations.clone());
            annotations.insert("updraft.run/interruptible".into(), "true".into());
        }
        annotations.insert(
            ANNOTATION_PRIMARY.into(),
            spec.containers[primary].name.clone(),
        );
        labels.insert(LABEL_EXECUTION.into(), label(&launch.execution));
        labels.insert(LABEL_NODE.into(), label(&launch.node_id));
        labels.insert(LABEL_ATTEMPT.into(), launch.attempt.to_string());
        labels.insert(LABEL_TASK.into(), label(&launch.task));
        if let Some(i) = launch.index {
            labels.insert(LABEL_INDEX.into(), i.to_string());
        }
        let meta = ObjectMeta {
            name: Some(launch.name.clone()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: non_empty_map(annotations),
            ..Default::default()
        };
        Ok(Self {
            task,
            spark_version: config.spark_version.clone(),
            meta,
            spec,
            primary,
        })
    }

    /// The attempt as one Pod.
    pub fn pod(&self) -> Pod {
        Pod {
            metadata: self.meta.clone(),
            spec: Some(self.spec.clone()),
            status: None,
        }
    }

    /// The primary container.
    pub fn primary(&self) -> &Container {
        &self.spec.containers[self.primary]
    }

    /// The template's plugin configuration (`custom`) as JSON; `null` when it has none.
    pub fn custom(&self) -> Value {
        self.task
            .template
            .custom
            .as_ref()
            .map(struct_json)
            .unwrap_or(Value::Null)
    }
}

/// Where secret files are mounted, as Flyte's secret injector mounts them: `<dir>/<group>/<key>`.
pub const SECRETS_DIR: &str = "/etc/flyte/secrets";

/// The secrets the task asks for (`security_context.secrets`), from Kubernetes secrets named by their
/// group, as Flyte's secret injector provides them: `ENV_VAR` requests as `_FSEC_<GROUP>_<KEY>`
/// variables referring to the secret's key; `ANY` and `FILE` requests as the secret's keys mounted
/// read-only at `/etc/flyte/secrets/<group>/`, with `FLYTE_SECRETS_DEFAULT_DIR` saying so; a request's
/// `env_var` gets the value (`ENV_VAR`) or the file's path. In every container and init container.
/// Values never appear in the pod spec: Kubernetes fills them in, and a missing secret or key keeps the
/// container from starting (`CreateContainerConfigError`), which fails the attempt naming it.
fn with_secrets(spec: &mut PodSpec, template: &updraft_proto::core::TaskTemplate) {
    use k8s_openapi::api::core::v1::{
        EnvVarSource, KeyToPath, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
    };
    use updraft_proto::core::secret::MountType;
    let requests = updraft_connector::secrets::requests(template);
    if requests.is_empty() {
        return;
    }
    let mut env: Vec<EnvVar> = Vec::new();
    let mut volumes: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let from_secret = |name: &str, r: &updraft_connector::secrets::SecretRequest| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.group.clone(),
                key: r.key.clone(),
                optional: None,
            }),
            ..Default::default()
        }),
    };
    let set = |e: EnvVar, env: &mut Vec<EnvVar>| {
        env.retain(|x| x.name != e.name);
        env.push(e);
    };
    for r in &requests {
        if r.mount == MountType::EnvVar {
            set(
                from_secret(&r.env_name(updraft_connector::secrets::ENV_PREFIX), r),
                &mut env,
            );
            set(
                self::env(
                    "FLYTE_SECRETS_ENV_PREFIX",
                    updraft_connector::secrets::ENV_PREFIX,
                ),
                &mut env,
            );
            if !r.env_var.is_empty() {
                set(from_secret(&r.env_var, r), &mut env);
            }
        } else {
            let group = r.group.to_lowercase();
            let keys = &mut volumes
                .entry(group.clone())
                .or_insert_with(|| (r.group.clone(), Vec::new()))
                .1;
            if !keys.contains(&r.key) {
                keys.push(r.key.clone());
            }
            set(
                self::env("FLYTE_SECRETS_DEFAULT_DIR", SECRETS_DIR),
                &mut env,
            );
            set(self::env("FLYTE_SECRETS_FILE_PREFIX", ""), &mut env);
            if !r.env_var.is_empty() {
                let path = format!("{SECRETS_DIR}/{group}/{}", r.key.to_lowercase());
                set(self::env(&r.env_var, &path), &mut env);
            }
        }
    }
    let mut mounts = Vec::new();
    for (group, (secret, keys)) in &volumes {
        let name = format!("flyte-secret-{}", dns_name(group));
        mounts.push(VolumeMount {
            name: name.clone(),
            mount_path: format!("{SECRETS_DIR}/{group}"),
            read_only: Some(true),
            ..Default::default()
        });
        let volume = Volume {
            name,
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(
                    keys.iter()
                        .map(|k| KeyToPath {
                            key: k.clone(),
                            path: k.to_lowercase(),
                            mode: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let all = spec.volumes.get_or_insert_with(Vec::new);
        all.retain(|v| v.name != volume.name);
        all.push(volume);
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        let mut all = c.env.take().unwrap_or_default();
        for e in &env {
            all.retain(|x| x.name != e.name);
            all.push(e.clone());
        }
        c.env = Some(all);
        if !mounts.is_empty() {
            let all = c.volume_mounts.get_or_insert_with(Vec::new);
            for m in &mounts {
                all.retain(|x| x.name != m.name);
                all.push(m.clone());
            }
        }
    }
}

/// The name of a raw container's init container, which writes its inputs.
pub const COPILOT_INIT: &str = "updraft-download";

/// Where the copilot is installed in a raw container's pod (an `emptyDir` both containers mount).
pub const COPILOT_DIR: &str = "/var/updraft";

/// A raw container's pod with its data side: an init container (`updraft-copilot download`) writes the
/// inputs into the input folder and installs the copilot; the task's command runs under
/// `updraft-copilot run`, which leaves its outputs at the output prefix. Input, output and copilot folders
/// are `emptyDir` volumes.
fn with_copilot(
    spec: &mut PodSpec,
    task: &CompiledTask,
    paths: &AttemptPaths,
    config: &EksConfig,
    data: &updraft_proto::core::DataLoadingConfig,
) -> Result<(), BuildError> {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume, VolumeMount};
    let name = &task.name;
    let image = config.copilot_image.clone();
    for (field, path) in [
        ("input_path", &data.input_path),
        ("output_path", &data.output_path),
    ] {
        if !path.starts_with('/') {
            return Err(task_error(
                name,
                &format!("container.data_config.{field}"),
                format!("`{path}` is not an absolute path"),
            ));
        }
    }
    let c = &mut spec.containers[0];
    let mut argv = c.command.take().unwrap_or_default();
    if argv.is_empty() {
        return Err(task_error(
            name,
            "container.command",
            "a raw container on a cluster needs a command (its image's entrypoint cannot be run \
             under the copilot)",
        ));
    }
    argv.extend(c.args.take().unwrap_or_default());
    let outputs = task
        .template
        .interface
        .as_ref()
        .and_then(|i| i.outputs.clone())
        .unwrap_or_default();
    let copilot = format!("{COPILOT_DIR}/updraft-copilot");
    let mut command = vec![
        copilot,
        "run".into(),
        "--output-prefix".into(),
        paths.output_prefix.clone(),
        "--raw-output-prefix".into(),
        paths.raw_output_prefix.clone(),
        "--from".into(),
        data.output_path.clone(),
        "--interface".into(),
        updraft_copilot_data::encode_interface(&outputs),
        "--".into(),
    ];
    command.extend(argv);
    c.command = Some(command);
    let mount = |volume: &str, path: &str, read_only: bool| VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
    mounts.push(mount("updraft-inputs", &data.input_path, true));
    mounts.push(mount("updraft-outputs", &data.output_path, false));
    mounts.push(mount("updraft-copilot", COPILOT_DIR, true));
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for v in ["updraft-inputs", "updraft-outputs", "updraft-copilot"] {
        volumes.push(Volume {
            name: v.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    spec.init_containers
        .get_or_insert_with(Vec::new)
        .push(Container {
            name: COPILOT_INIT.into(),
            image: Some(image),
            command: Some(vec![
                "updraft-copilot".into(),
                "download".into(),
                "--inputs".into(),
                paths.input.clone(),
                "--to".into(),
                data.input_path.clone(),
                "--install".into(),
                COPILOT_DIR.into(),
            ]),
            volume_mounts: Some(vec![
                mount("updraft-inputs", &data.input_path, false),
                mount("updraft-copilot", COPILOT_DIR, false),
            ]),
            ..Default::default()
        });
    Ok(())
}

/// A label value: at most 63 characters of `[A-Za-z0-9-_.]`, starting and ending alphanumeric. Other
/// characters become `-`; a value too long keeps its start and ends with a digest of the whole.
pub fn label(raw: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if s.len() <= 63 {
        return s.to_string();
    }
    // dns_name gives a short, valid name with a digest of the whole.
    dns_name(raw)
}

fn container_name(task: &CompiledTask) -> String {
    let short = task.name.rsplit('.').next().unwrap_or(&task.name);
    dns_name(short)
}

pub(crate) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn non_empty_map(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// Kubernetes resource requirements from Flyte's (`GPU` becomes `nvidia.com/gpu`).
pub(crate) fn resources(r: Option<&Resources>) -> Option<ResourceRequirements> {
    let r = r?;
    let conv = |entries: &[updraft_proto::core::resources::ResourceEntry]| {
        let m: BTreeMap<String, Quantity> = entries
            .iter()
            .filter_map(|e| {
                let key = match ResourceName::try_from(e.name).ok()? {
                    ResourceName::Cpu => "cpu",
                    ResourceName::Gpu => "nvidia.com/gpu",
                    ResourceName::Memory => "memory",
                    ResourceName::Storage | ResourceName::EphemeralStorage => "ephemeral-storage",
                    ResourceName::Unknown => return None,
                };
                Some((key.to_string(), Quantity(e.value.clone())))
            })
            .collect();
        non_empty_map_q(m)
    };
    let out = ResourceRequirements {
        requests: conv(&r.requests),
        limits: conv(&r.limits),
        ..Default::default()
    };
    (out.requests.is_some() || out.limits.is_some()).then_some(out)
}

fn non_empty_map_q(m: BTreeMap<String, Quantity>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then_some(m)
}

/// The task's pod spec over a pod template's: the task's fields win; the template's `primary` container
/// underlies the primary container and its `default` container every container; lists of environment
/// variables, volume mounts, volumes and tolerations are joined.
fn over_template(base: PodSpec, task: PodSpec, primary: usize) -> PodSpec {
    let find = |n: &str| base.containers.iter().find(|c| c.name == n).cloned();
    let (tpl_primary, tpl_default) = (find("primary"), find("default"));
    let mut merged = merge_json(
        serde_json::to_value(&base).unwrap_or(Value::Null),
        serde_json::to_value(&task).unwrap_or(Value::Null),
    );
    let containers: Vec<Value> = task
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let under = if i == primary {
                tpl_primary.clone().or_else(|| tpl_default.clone())
            } else {
                tpl_default.clone()
            };
            let mine = serde_json::to_value(c).unwrap_or(Value::Null);
            match under {
                Some(u) => {
                    let mut u = serde_json::to_value(u).unwrap_or(Value::Null);
                    u["name"] = Value::String(c.name.clone());
                    merge_json(u, mine)
                }
                None => mine,
            }
        })
        .collect();
    merged["containers"] = Value::Array(containers);
    serde_json::from_value(merged).unwrap_or(task)
}

/// `top` over `base`: objects merge key by key, the lists named in [`JOINED`] are concatenated, anything
/// else in `top` replaces what `base` has.
fn merge_json(base: Value, top: Value) -> Value {
    const JOINED: [&str; 5] = [
        "env",
        "volumeMounts",
        "volumes",
        "tolerations",
        "initContainers",
    ];
    match (base, top) {
        (Value::Object(mut b), Value::Object(t)) => {
            for (k, v) in t {
                let merged = match (b.remove(&k), v) {
                    (Some(Value::Array(mut x)), Value::Array(y))
                        if JOINED.contains(&k.as_str()) =>
                    {
                        x.extend(y);
                        Value::Array(x)
                    }
                    (Some(old), new) => merge_json(old, new),
                    (None, new) => new,
                };
                b.insert(k, merged);
            }
            Value::Object(b)
        }
        (b, Value::Null) => b,
        (_, t) => t,
    }
}
