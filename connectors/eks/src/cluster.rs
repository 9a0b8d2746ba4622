//! A cluster, through kube-rs: start an attempt's objects (finding them when a redelivered start made them
//! already), observe them, delete them.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};

use crate::status::{self, Observed};
use crate::{CustomObject, Object};

/// Why talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {reason}")]
    Config {
        /// Its path (or `default`).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The API refused or failed.
    #[error("{kind} {name}: {source}")]
    Api {
        /// Object kind.
        kind: String,
        /// Object name.
        name: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

/// A connection to one cluster.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// How long a pod may wait for its image before the attempt fails (Flyte's
    /// `image-pull-backoff-grace-period`).
    pub image_pull_grace: Duration,
}

fn api_resource(c: &CustomObject) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&c.group, &c.version, &c.kind),
        &c.plural,
    )
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// An object's namespace and name.
fn place(o: &Object) -> (String, String) {
    let m = o.metadata();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// The result of a call on `o`, where the API answering `fine` (409 on create, 404 on delete) means the
/// call's aim already holds.
fn tolerating(made: Result<(), kube::Error>, fine: u16, o: &Object) -> Result<(), ClusterError> {
    match made {
        Err(e) if !is_code(&e, fine) => Err(ClusterError::Api {
            kind: o.kind().into(),
            name: place(o).1,
            source: e,
        }),
        _ => Ok(()),
    }
}

impl Cluster {
    /// A cluster reached through `client`.
    pub fn with_client(client: kube::Client) -> Self {
        Self {
            client,
            image_pull_grace: status::IMAGE_PULL_GRACE,
        }
    }

    /// Connects with a kubeconfig file (its current context), or the default one (`KUBECONFIG`,
    /// `~/.kube/config`, in-cluster) when `path` is `None`.
    pub async fn from_kubeconfig(path: Option<&Path>) -> Result<Self, ClusterError> {
        let name = path.map_or("default".to_string(), |p| p.display().to_string());
        let bad = |reason: String| ClusterError::Config {
            path: name.clone(),
            reason,
        };
        let config = match path {
            Some(p) => {
                let kc = Kubeconfig::read_from(p).map_err(|e| bad(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| bad(e.to_string()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| bad(e.to_string()))?,
        };
        let client = kube::Client::try_from(config).map_err(|e| bad(e.to_string()))?;
        Ok(Self::with_client(client))
    }

    /// Creates the objects; one that already exists (a start delivered again) is kept as it is.
    pub async fn start(&self, objects: &[Object]) -> Result<(), ClusterError> {
        for o in objects {
            let (ns, name) = place(o);
            let made = match o {
                Object::Pod(p) => Api::<Pod>::namespaced(self.client.clone(), &ns)
                    .create(&PostParams::default(), p)
                    .await
                    .map(|_| ()),
                Object::Custom(c) => {
                    let ar = api_resource(c);
                    let mut d = DynamicObject::new(&name, &ar).within(&ns);
                    d.metadata = c.metadata.clone();
                    d.data = serde_json::json!({ "spec": c.spec });
                    Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &ar)
                        .create(&PostParams::default(), &d)
                        .await
                        .map(|_| ())
                }
            };
            tolerating(made, 409, o)?;
        }
        Ok(())
    }

    /// The attempt's state, from its (first) object. `pending_for` is how long it has been pending.
    pub async fn check(
        &self,
        objects: &[Object],
        pending_for: Duration,
    ) -> Result<Observed, ClusterError> {
        let Some(o) = objects.first() else {
            return Ok(Observed::Succeeded);
        };
        let (ns, name) = place(o);
        let err = |source| ClusterError::Api {
            kind: o.kind().into(),
            name: name.clone(),
            source,
        };
        let gone = || Observed::Failed {
            code: "ObjectGone".into(),
            message: format!("{} {name} was deleted while it ran", o.kind()),
            kind: updraft_engine::exec::ErrorKind::System,
            recoverable: true,
        };
        Ok(match o {
            Object::Pod(_) => {
                match Api::<Pod>::namespaced(self.client.clone(), &ns)
                    .get(&name)
                    .await
                {
                    Ok(p) => status::pod(
                        &p,
                        &status::primary_container(&p),
                        pending_for,
                        self.image_pull_grace,
                    ),
                    Err(e) if is_code(&e, 404) => gone(),
                    Err(e) => return Err(err(e)),
                }
            }
            Object::Custom(c) => {
                let ar = api_resource(c);
                match Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &ar)
                    .get(&name)
                    .await
                {
                    Ok(d) => {
                        let v = serde_json::to_value(&d).unwrap_or_default();
                        if c.kind == "SparkApplication" {
                            status::spark_application(&v)
                        } else {
                            status::kubeflow_job(&v)
                        }
                    }
                    Err(e) if is_code(&e, 404) => gone(),
                    Err(e) => return Err(err(e)),
                }
            }
        })
    }

    /// Deletes the objects (and, through their owners, what they made); ones already gone are fine.
    pub async fn delete(&self, objects: &[Object]) -> Result<(), ClusterError> {
        for o in objects {
            let (ns, name) = place(o);
            let dp = DeleteParams::background();
            let done = match o {
                Object::Pod(_) => Api::<Pod>::namespaced(self.client.clone(), &ns)
                    .delete(&name, &dp)
                    .await
                    .map(|_| ()),
                Object::Custom(c) => Api::<DynamicObject>::namespaced_with(
                    self.client.clone(),
                    &ns,
                    &api_resource(c),
                )
                .delete(&name, &dp)
                .await
                .map(|_| ()),
            };
            tolerating(done, 404, o)?;
        }
        Ok(())
    }
}
