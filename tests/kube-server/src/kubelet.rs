//! The kubelet: runs each pod's containers as local processes and reports their states.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Node;
use base64::Engine;

use crate::store::{Key, Resource, Store};

/// Watches for new pods and runs each in its own thread.
pub fn run(store: &Arc<Mutex<Store>>, stop: &Arc<AtomicBool>, work: &Path, node: &Node) {
    let Some(pods) = Resource::named("", "v1", "pods") else {
        return;
    };
    let mut started: BTreeSet<(Key, String)> = BTreeSet::new();
    let mut threads = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let new: Vec<(Key, Value)> = match store.lock() {
            Ok(s) => s
                .objects
                .iter()
                .filter(|(k, _)| k.resource == pods)
                .filter(|(k, v)| {
                    let uid = v["metadata"]["uid"].as_str().unwrap_or("").to_string();
                    !started.contains(&((*k).clone(), uid))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Err(_) => return,
        };
        for (key, pod) in new {
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
            started.insert((key.clone(), uid.clone()));
            let (store, stop) = (store.clone(), stop.clone());
            let dir = work.join(&key.namespace).join(&key.name);
            let node = node.clone();
            threads.push(std::thread::spawn(move || {
                let mut p = PodRun {
                    store,
                    stop,
                    key,
                    uid,
                    dir,
                    node,
                };
                p.run(&pod);
                // A deleted pod's volumes go with it, as a kubelet removes its emptyDirs (kept
                // while an object of its name is there; what it logged stays in `Store::logs`).
                while p.alive() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if !p.stop.load(Ordering::SeqCst)
                    && let Ok(s) = p.store.lock()
                    && !s.objects.contains_key(&p.key)
                {
                    let _ = std::fs::remove_dir_all(&p.dir);
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in threads {
        let _ = t.join();
    }
}

struct PodRun {
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
    key: Key,
    uid: String,
    dir: PathBuf,
    node: Node,
}

/// One container: its process, or its end.
struct Running {
    name: String,
    child: Option<Child>,
    /// An image whose entrypoint serves until stopped: no process, never ends.
    idle: bool,
    end: Option<(i32, &'static str)>,
}

/// When the pod's containers started (RFC 3339).
fn started_at() -> String {
    crate::store::now()
}

fn waiting(name: &str, reason: &str, message: &str) -> Value {
    json!({"name": name, "ready": false, "restartCount": 0, "image": "", "imageID": "",
           "state": {"waiting": {"reason": reason, "message": message}}})
}

fn containers(pod: &Value, field: &str) -> Vec<Value> {
    pod["spec"][field].as_array().cloned().unwrap_or_default()
}

impl PodRun {
    /// False once the pod is gone (deleted, or replaced by another of the same name) or the server stops.
    fn alive(&self) -> bool {
        if self.stop.load(Ordering::SeqCst) {
            return false;
        }
        self.store.lock().is_ok_and(|s| {
            s.objects
                .get(&self.key)
                .is_some_and(|v| v["metadata"]["uid"] == self.uid.as_str())
        })
    }

    fn status(&self, status: Value) {
        if let Ok(mut s) = self.store.lock() {
            let same = s
                .objects
                .get(&self.key)
                .is_some_and(|v| v["metadata"]["uid"] == self.uid.as_str());
            if same {
                s.set_status(&self.key, status);
            }
        }
    }

    fn log(&self, container: &str) {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{container}.log"))).unwrap_or_default();
        if let Ok(mut s) = self.store.lock() {
            s.logs
                .insert((self.key.clone(), container.to_string()), text);
        }
    }

    /// Key `key` of secret `name` in the pod's namespace (`data`, base64, or `stringData`), or what
    /// the kubelet says when it is not there.
    fn secret_value(&self, name: &str, key: &str) -> Result<Vec<u8>, String> {
        let ns = &self.key.namespace;
        let not_found = || format!("secret \"{name}\" not found");
        let res = Resource::named("", "v1", "secrets").ok_or_else(not_found)?;
        let obj = self
            .store
            .lock()
            .map_err(|_| not_found())?
            .objects
            .get(&Key::new(&res, ns, name))
            .cloned()
            .ok_or_else(not_found)?;
        if let Some(v) = obj["data"][key].as_str() {
            return base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| format!("secret {ns}/{name}: key {key}: {e}"));
        }
        if let Some(v) = obj["stringData"][key].as_str() {
            return Ok(v.as_bytes().to_vec());
        }
        Err(format!("couldn't find key {key} in Secret {ns}/{name}"))
    }

    /// The secret keys container `c` needs (its variables' `secretKeyRef`s, its mounted secret
    /// volumes' items): the first that is not there, as `CreateContainerConfigError` names it.
    fn config_error(&self, pod: &Value, c: &Value) -> Option<String> {
        for e in c["env"].as_array().into_iter().flatten() {
            let r = &e["valueFrom"]["secretKeyRef"];
            if let (Some(name), Some(key)) = (r["name"].as_str(), r["key"].as_str())
                && r["optional"] != true
                && let Err(why) = self.secret_value(name, key)
            {
                return Some(why);
            }
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let volume = containers(pod, "volumes")
                .into_iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_default();
            let Some(name) = volume["secret"]["secretName"].as_str() else {
                continue;
            };
            for item in volume["secret"]["items"].as_array().into_iter().flatten() {
                if let Some(key) = item["key"].as_str()
                    && let Err(why) = self.secret_value(name, key)
                {
                    return Some(why);
                }
            }
        }
        None
    }

    fn spawn(&self, pod: &Value, c: &Value) -> std::io::Result<Option<Child>> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let mut argv = strings(&c["command"]);
        argv.extend(strings(&c["args"]));
        let Some(program) = argv.first().cloned() else {
            return Ok(None);
        };
        let name = c["name"].as_str().unwrap_or("c");
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mounts = self.mounts(pod, c)?;
        let mut cmd = if mounts.is_empty() {
            let mut cmd = Command::new(program);
            cmd.args(&argv[1..]);
            cmd
        } else {
            let script = mount_script(&mounts, &self.dir.join("overlay").join(name))?;
            let mut cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                .arg(script)
                .arg("sh")
                .args(&argv);
            cmd
        };
        cmd.process_group(0)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.envs(self.node.env.iter().map(|(k, v)| (k, v)));
        for e in c["env"].as_array().into_iter().flatten() {
            let Some(k) = e["name"].as_str() else {
                continue;
            };
            if let Some(v) = e["value"].as_str() {
                cmd.env(k, v);
            }
            let r = &e["valueFrom"]["secretKeyRef"];
            if let (Some(name), Some(key)) = (r["name"].as_str(), r["key"].as_str())
                && let Ok(v) = self.secret_value(name, key)
            {
                cmd.env(k, String::from_utf8_lossy(&v).as_ref());
            }
        }
        cmd.spawn().map(Some)
    }

    fn run(&mut self, pod: &Value) {
        let _ = std::fs::create_dir_all(&self.dir);
        let init = containers(pod, "initContainers");
        let main = containers(pod, "containers");
        let name_of = |c: &Value| c["name"].as_str().unwrap_or("").to_string();
        let scheduled = json!([{"type": "PodScheduled", "status": "True"}]);
        self.status(json!({
            "phase": "Pending",
            "conditions": scheduled,
            "containerStatuses": main.iter().map(|c| waiting(&name_of(c), "ContainerCreating", "")).collect::<Vec<_>>(),
        }));
        // An image that cannot be pulled: the pod waits for ever.
        if let Some(c) = init
            .iter()
            .chain(&main)
            .find(|c| c["image"].as_str().is_some_and(|i| i.contains("missing")))
        {
            let image = c["image"].as_str().unwrap_or("");
            let msg = format!("failed to pull image \"{image}\": not found");
            let statuses = |reason: &str| {
                main.iter()
                    .map(|m| {
                        if name_of(m) == name_of(c) {
                            waiting(&name_of(m), reason, &msg)
                        } else {
                            waiting(&name_of(m), "PodInitializing", "")
                        }
                    })
                    .collect::<Vec<_>>()
            };
            self.status(json!({"phase": "Pending", "conditions": scheduled, "containerStatuses": statuses("ErrImagePull")}));
            let since = Instant::now();
            let mut backoff = false;
            while self.alive() {
                if !backoff && since.elapsed() > Duration::from_millis(500) {
                    backoff = true;
                    self.status(json!({"phase": "Pending", "conditions": scheduled, "containerStatuses": statuses("ImagePullBackOff")}));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        // A secret a container needs that is not there: the pod waits (and starts once it is).
        let mut said = String::new();
        while let Some((c, why)) = init
            .iter()
            .chain(&main)
            .find_map(|c| Some((c, self.config_error(pod, c)?)))
        {
            let statuses: Vec<Value> = main
                .iter()
                .map(|m| {
                    if name_of(m) == name_of(c) {
                        waiting(&name_of(m), "CreateContainerConfigError", &why)
                    } else {
                        waiting(&name_of(m), "ContainerCreating", "")
                    }
                })
                .collect();
            if said != why {
                self.status(json!({"phase": "Pending", "conditions": scheduled, "containerStatuses": statuses}));
                said = why;
            }
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Init containers, one after the other.
        for c in &init {
            let name = name_of(c);
            let child = match self.spawn(pod, c) {
                Ok(Some(ch)) => ch,
                Ok(None) => continue,
                Err(e) => {
                    self.status(json!({"phase": "Failed", "reason": "StartError", "message": format!("init container {name}: {e}")}));
                    return;
                }
            };
            let mut r = Running {
                name: name.clone(),
                child: Some(child),
                idle: false,
                end: None,
            };
            while r.end.is_none() {
                if !self.alive() {
                    kill(&mut r);
                    self.log(&name);
                    return;
                }
                poll(&mut r);
                std::thread::sleep(Duration::from_millis(10));
            }
            self.log(&name);
            if let Some((code, _)) = r.end.filter(|(code, _)| *code != 0) {
                self.status(json!({
                    "phase": "Failed",
                    "initContainerStatuses": [terminated(&name, code, "Error")],
                    "containerStatuses": main.iter().map(|c| waiting(&name_of(c), "PodInitializing", "")).collect::<Vec<_>>(),
                }));
                return;
            }
        }
        let mut runs: Vec<Running> = main
            .iter()
            .map(|c| {
                let name = name_of(c);
                if c["image"].as_str().is_some_and(|i| i.ends_with(":oom")) {
                    return Running {
                        name,
                        child: None,
                        idle: false,
                        end: Some((137, "OOMKilled")),
                    };
                }
                match self.spawn(pod, c) {
                    Ok(Some(child)) => Running {
                        name,
                        child: Some(child),
                        idle: false,
                        end: None,
                    },
                    Ok(None) => Running {
                        name,
                        child: None,
                        idle: true,
                        end: None,
                    },
                    Err(_) => Running {
                        name,
                        child: None,
                        idle: false,
                        end: Some((128, "ContainerCannotRun")),
                    },
                }
            })
            .collect();
        let mut last = Value::Null;
        let since = started_at();
        let mut rounds: u32 = 0;
        loop {
            rounds = rounds.wrapping_add(1);
            if !self.alive() {
                // What the killed containers printed stays readable to tests (`Store::logs`).
                for r in runs.iter_mut().filter(|r| r.end.is_none()) {
                    kill(r);
                    self.log(&r.name);
                }
                return;
            }
            for r in &mut runs {
                if r.end.is_none() && !r.idle {
                    poll(r);
                    // what a running container printed is readable as it prints (every ~200 ms)
                    if r.end.is_some() || rounds % 20 == 1 {
                        self.log(&r.name);
                    }
                }
            }
            let statuses: Vec<Value> = runs
                .iter()
                .map(|r| match r.end {
                    Some((code, reason)) => terminated(&r.name, code, reason),
                    None => json!({"name": r.name, "ready": true, "restartCount": 0, "image": "", "imageID": "",
                                   "state": {"running": {"startedAt": since}}}),
                })
                .collect();
            let all_ended = runs.iter().all(|r| r.end.is_some());
            let phase = if all_ended {
                if runs.iter().all(|r| r.end.is_some_and(|(c, _)| c == 0)) {
                    "Succeeded"
                } else {
                    "Failed"
                }
            } else {
                "Running"
            };
            let status =
                json!({"phase": phase, "conditions": scheduled, "containerStatuses": statuses});
            if status != last {
                self.status(status.clone());
                last = status;
            }
            if all_ended {
                if let Ok(mut s) = self.store.lock() {
                    s.ends.insert(self.key.clone(), Instant::now());
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn terminated(name: &str, code: i32, reason: &str) -> Value {
    json!({"name": name, "ready": false, "restartCount": 0, "image": "", "imageID": "",
           "state": {"terminated": {"exitCode": code, "reason": reason}}})
}

fn poll(r: &mut Running) {
    if let Some(child) = r.child.as_mut()
        && let Ok(Some(status)) = child.try_wait()
    {
        let code = status.code().unwrap_or(137);
        r.end = Some((code, if code == 0 { "Completed" } else { "Error" }));
        r.child = None;
    }
}

fn kill(r: &mut Running) {
    if let Some(mut child) = r.child.take() {
        // The whole process group: a wrapper's children go with it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A folder bound at a path in a container's mount namespace.
struct Mount {
    from: PathBuf,
    path: String,
    read_only: bool,
}

impl PodRun {
    /// The node's mounts and the container's volume mounts, with each volume's folder.
    fn mounts(&self, pod: &Value, c: &Value) -> std::io::Result<Vec<Mount>> {
        let mut out: Vec<Mount> = self
            .node
            .mounts
            .iter()
            .map(|(from, path)| Mount {
                from: from.clone(),
                path: path.clone(),
                read_only: false,
            })
            .collect();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let (Some(name), Some(path)) = (m["name"].as_str(), m["mountPath"].as_str()) else {
                continue;
            };
            let volume = containers(pod, "volumes")
                .into_iter()
                .find(|v| v["name"] == name)
                .ok_or_else(|| std::io::Error::other(format!("no volume named `{name}`")))?;
            let from = if volume["emptyDir"].is_object() {
                let dir = self.dir.join("volumes").join(name);
                std::fs::create_dir_all(&dir)?;
                dir
            } else if let Some(p) = volume["hostPath"]["path"].as_str() {
                PathBuf::from(p)
            } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
                // The secret's keys as files (its items, or every key), as the kubelet projects them.
                let dir = self.dir.join("secrets").join(name);
                std::fs::create_dir_all(&dir)?;
                let items: Vec<(String, String)> = match volume["secret"]["items"].as_array() {
                    Some(items) => items
                        .iter()
                        .filter_map(|i| {
                            Some((i["key"].as_str()?.into(), i["path"].as_str()?.into()))
                        })
                        .collect(),
                    None => {
                        let res = Resource::named("", "v1", "secrets");
                        let obj = res.and_then(|r| {
                            let s = self.store.lock().ok()?;
                            s.objects
                                .get(&Key::new(&r, &self.key.namespace, secret))
                                .cloned()
                        });
                        let keys = |f: &str| -> Vec<String> {
                            obj.as_ref()
                                .and_then(|o| o[f].as_object())
                                .map(|m| m.keys().cloned().collect())
                                .unwrap_or_default()
                        };
                        let mut all = keys("data");
                        all.extend(keys("stringData"));
                        all.into_iter().map(|k| (k.clone(), k)).collect()
                    }
                };
                for (key, path) in items {
                    let value = self
                        .secret_value(secret, &key)
                        .map_err(std::io::Error::other)?;
                    std::fs::write(dir.join(path), value)?;
                }
                dir
            } else {
                return Err(std::io::Error::other(format!(
                    "volume `{name}`: only emptyDir, hostPath and secret volumes are served here"
                )));
            };
            out.push(Mount {
                from,
                path: path.to_string(),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
            });
        }
        Ok(out)
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The shell script that binds `mounts` in a fresh mount namespace, then runs the container's command
/// (its positional parameters). Paths that do not exist are made in an overlay (upper layers under
/// `overlays`) of their nearest existing folder.
fn mount_script(mounts: &[Mount], overlays: &Path) -> std::io::Result<String> {
    let mut script = String::from("set -e\n");
    let mut overlaid: Vec<PathBuf> = Vec::new();
    for m in mounts {
        let path = Path::new(&m.path);
        if !path.is_absolute() {
            return Err(std::io::Error::other(format!(
                "mount path `{}` is not absolute",
                m.path
            )));
        }
        if !path.exists() {
            let base = path
                .ancestors()
                .find(|a| a.exists())
                .map(|a| a.canonicalize())
                .transpose()?
                .unwrap_or_default();
            if base == Path::new("/") || base.as_os_str().is_empty() {
                return Err(std::io::Error::other(format!(
                    "mount path `{}`: a folder directly under / must exist on the node",
                    m.path
                )));
            }
            if !overlaid.iter().any(|o| base.starts_with(o)) {
                let layer = overlays.join(overlaid.len().to_string());
                let (upper, work) = (layer.join("upper"), layer.join("work"));
                std::fs::create_dir_all(&upper)?;
                std::fs::create_dir_all(&work)?;
                let b = quote(&base.display().to_string());
                script.push_str(&format!(
                    "mount -t overlay overlay -o lowerdir={b},upperdir={},workdir={} {b}\n",
                    quote(&upper.display().to_string()),
                    quote(&work.display().to_string()),
                ));
                overlaid.push(base);
            }
        }
        let p = quote(&m.path);
        script.push_str(&format!(
            "mkdir -p {p}\nmount --bind {} {p}\n",
            quote(&m.from.display().to_string())
        ));
        if m.read_only {
            script.push_str(&format!("mount -o remount,bind,ro {p}\n"));
        }
    }
    script.push_str("exec \"$@\"\n");
    Ok(script)
}
