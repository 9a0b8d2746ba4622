//! Objects by resource, namespace and name, with the API server's rules for writes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::selector::Selector;
use crate::{Reply, status_body};

/// A resource type the server serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural name (URL segment).
    pub plural: String,
    /// Kind.
    pub kind: String,
}

const RESOURCES: [(&str, &str, &str, &str); 6] = [
    ("", "v1", "pods", "Pod"),
    ("", "v1", "secrets", "Secret"),
    ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    ("kubeflow.org", "v1", "tfjobs", "TFJob"),
    ("kubeflow.org", "v1", "mpijobs", "MPIJob"),
    (
        "sparkoperator.k8s.io",
        "v1beta2",
        "sparkapplications",
        "SparkApplication",
    ),
];

impl Resource {
    /// The resource a path (after `/api/v1` or `/apis/<group>/<version>`) addresses.
    pub fn find(group: &str, version: &str, rest: &[&str]) -> Option<Self> {
        let plural = match rest {
            [p, ..] if !p.is_empty() && *p != "namespaces" => *p,
            ["namespaces", _, p, ..] => *p,
            _ => return None,
        };
        Self::named(group, version, plural)
    }

    /// The served resource with this group, version and plural.
    pub fn named(group: &str, version: &str, plural: &str) -> Option<Self> {
        RESOURCES
            .iter()
            .find(|(g, v, p, _)| *g == group && *v == version && *p == plural)
            .map(|(g, v, p, k)| Self {
                group: (*g).into(),
                version: (*v).into(),
                plural: (*p).into(),
                kind: (*k).into(),
            })
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Its resource.
    pub resource: Resource,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Key {
    /// The key of `name` in `namespace`.
    pub fn new(resource: &Resource, namespace: &str, name: &str) -> Self {
        Self {
            resource: resource.clone(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Every object, the resourceVersion counter, and what containers printed.
#[derive(Debug, Default)]
pub struct Store {
    /// The objects.
    pub objects: BTreeMap<Key, Value>,
    /// Container logs by (pod key, container): kept for every container that ran, also after its pod is
    /// deleted (the API serves them only while the pod exists).
    pub logs: BTreeMap<(Key, String), String>,
    /// Who called, when bearer tokens are checked (their ARNs, as STS named them).
    pub callers: std::collections::BTreeSet<String>,
    /// How many times each object was created (a second creation after a deletion counts: a task
    /// launched twice shows here).
    pub creations: BTreeMap<Key, u32>,
    /// When each object was last created.
    pub created: BTreeMap<Key, std::time::Instant>,
    /// How many deletions of each object were asked for (of one already gone too: an abort sent
    /// twice shows here).
    pub deletions: BTreeMap<Key, u32>,
    /// When each pod's containers had all ended (as the kubelet saw it, within 10 ms): a task's end,
    /// for benchmarks that time what follows it.
    pub ends: BTreeMap<Key, std::time::Instant>,
    version: u64,
    uid: u64,
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

fn invalid(kind: &str, name: &str, detail: &str) -> (u16, Reply) {
    (
        422,
        status_body(
            422,
            "Invalid",
            &format!("{kind} \"{name}\" is invalid: {detail}"),
        ),
    )
}

/// The system clock as RFC 3339, second precision.
pub(crate) fn now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    updraft_engine::template::datetime_text(&updraft_proto::wkt::Timestamp { seconds, nanos: 0 })
}

impl Store {
    /// The names of the objects on the cluster.
    pub fn names(&self) -> Vec<String> {
        self.objects.keys().map(|k| k.name.clone()).collect()
    }

    fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Lists objects of a resource (in one namespace or all), filtered by a label selector.
    pub fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> (u16, Reply) {
        let selector = match selector.map(Selector::parse).transpose() {
            Ok(s) => s,
            Err(e) => {
                return (
                    400,
                    status_body(
                        400,
                        "BadRequest",
                        &format!("unable to parse requirement: {e}"),
                    ),
                );
            }
        };
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| k.resource == *resource)
            .filter(|(k, _)| namespace.is_none_or(|n| k.namespace == n))
            .filter(|(_, v)| {
                selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&v["metadata"]["labels"]))
            })
            .map(|(_, v)| v.clone())
            .collect();
        (
            200,
            Reply::Json(json!({
                "kind": format!("{}List", resource.kind),
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": self.version.to_string()},
                "items": items,
            })),
        )
    }

    /// One object.
    pub fn get(&self, key: &Key) -> (u16, Reply) {
        match self.objects.get(key) {
            Some(v) => (200, Reply::Json(v.clone())),
            None => not_found(key),
        }
    }

    /// Creates an object.
    pub fn create(&mut self, resource: &Resource, namespace: &str, mut v: Value) -> (u16, Reply) {
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        if !is_dns_subdomain(&name) {
            return invalid(
                &resource.kind,
                &name,
                &format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            );
        }
        if let Some(ns) = v["metadata"]["namespace"].as_str()
            && ns != namespace
        {
            return (
                400,
                status_body(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                ),
            );
        }
        for (k, val) in v["metadata"]["labels"].as_object().into_iter().flatten() {
            let ok = val.as_str().is_some_and(is_label_value);
            if !ok {
                return invalid(
                    &resource.kind,
                    &name,
                    &format!(
                        "metadata.labels: Invalid value: {val}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (label `{k}`)"
                    ),
                );
            }
        }
        let key = Key::new(resource, namespace, &name);
        if self.objects.contains_key(&key) {
            return (
                409,
                status_body(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", resource.plural),
                ),
            );
        }
        self.uid += 1;
        let rv = self.bump();
        let meta = &mut v["metadata"];
        meta["namespace"] = namespace.into();
        meta["uid"] = format!("00000000-0000-0000-0000-{:012}", self.uid).into();
        meta["resourceVersion"] = rv.into();
        meta["creationTimestamp"] = now().into();
        meta["generation"] = 1.into();
        v["apiVersion"] = resource.api_version().into();
        v["kind"] = resource.kind.clone().into();
        if let Some(m) = v.as_object_mut() {
            m.remove("status");
        }
        *self.creations.entry(key.clone()).or_default() += 1;
        self.created.insert(key.clone(), std::time::Instant::now());
        self.objects.insert(key, v.clone());
        (201, Reply::Json(v))
    }

    /// Replaces an object (`status_only`: through the status subresource, which changes only the status).
    pub fn replace(&mut self, key: &Key, v: Value, status_only: bool) -> (u16, Reply) {
        let Some(current) = self.objects.get(key) else {
            return not_found(key);
        };
        if let Some(rv) = v["metadata"]["resourceVersion"].as_str()
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return (
                409,
                status_body(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                        key.resource.plural, key.name
                    ),
                ),
            );
        }
        let mut next = current.clone();
        if status_only {
            next["status"] = v["status"].clone();
        } else {
            let status = current.get("status").cloned();
            next = v;
            // Labels and annotations are replaced; identity and bookkeeping fields are the server's.
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
            ] {
                next["metadata"][k] = current["metadata"][k].clone();
            }
            next["apiVersion"] = current["apiVersion"].clone();
            next["kind"] = current["kind"].clone();
            match status {
                Some(s) => next["status"] = s,
                None => {
                    if let Some(m) = next.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        self.commit(key, next)
    }

    /// Applies a JSON merge patch.
    pub fn patch(
        &mut self,
        key: &Key,
        body: &str,
        content_type: &str,
        status_only: bool,
    ) -> (u16, Reply) {
        if !content_type.starts_with("application/merge-patch+json") {
            return (
                415,
                status_body(
                    415,
                    "UnsupportedMediaType",
                    &format!("the body of the request was in an unknown format: {content_type}"),
                ),
            );
        }
        let Some(current) = self.objects.get(key).cloned() else {
            return not_found(key);
        };
        let patch: Value = match serde_json::from_str(body) {
            Ok(p) => p,
            Err(e) => {
                return (
                    400,
                    status_body(400, "BadRequest", &format!("invalid JSON: {e}")),
                );
            }
        };
        let mut next = current.clone();
        if status_only {
            merge(&mut next["status"], &patch["status"]);
        } else {
            merge(&mut next, &patch);
            next["status"] = current["status"].clone();
        }
        self.commit(key, next)
    }

    fn commit(&mut self, key: &Key, mut next: Value) -> (u16, Reply) {
        if next.get("status").is_some_and(Value::is_null)
            && let Some(m) = next.as_object_mut()
        {
            m.remove("status");
        }
        next["metadata"]["resourceVersion"] = self.bump().into();
        self.objects.insert(key.clone(), next.clone());
        (200, Reply::Json(next))
    }

    /// Deletes an object, and the objects it owns.
    pub fn delete(&mut self, key: &Key) -> (u16, Reply) {
        *self.deletions.entry(key.clone()).or_default() += 1;
        let Some(v) = self.objects.remove(key) else {
            return not_found(key);
        };
        let uid = v["metadata"]["uid"].clone();
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in owned {
            self.objects.remove(&k);
        }
        self.bump();
        (200, Reply::Json(v))
    }

    /// What a pod's container printed so far (its first `limit` bytes, when given).
    pub fn log(&self, key: &Key, container: Option<&str>, limit: Option<usize>) -> (u16, Reply) {
        let Some(pod) = self.objects.get(key) else {
            return not_found(key);
        };
        let name = match container {
            Some(c) => c.to_string(),
            None => pod["spec"]["containers"][0]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        };
        match self.logs.get(&(key.clone(), name.clone())) {
            Some(text) => {
                let mut end = limit.unwrap_or(text.len()).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                (200, Reply::Text(text[..end].to_string()))
            }
            None => (
                400,
                status_body(
                    400,
                    "BadRequest",
                    &format!(
                        "container \"{name}\" in pod \"{}\" is waiting to start",
                        key.name
                    ),
                ),
            ),
        }
    }

    /// Sets an object's status as a controller does (through the status subresource).
    pub fn set_status(&mut self, key: &Key, status: Value) {
        if let Some(mut v) = self.objects.get(key).cloned() {
            v["status"] = status;
            let _ = self.commit(key, v);
        }
    }

    /// Creates an object as a controller does (no validation beyond the name being free).
    pub fn create_owned(&mut self, resource: &Resource, namespace: &str, v: Value) -> bool {
        self.create(resource, namespace, v).0 == 201
    }
}

fn not_found(key: &Key) -> (u16, Reply) {
    (
        404,
        status_body(
            404,
            "NotFound",
            &format!("{} \"{}\" not found", key.resource.plural, key.name),
        ),
    )
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}
