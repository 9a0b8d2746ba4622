//! A cluster, through kube-rs: start an attempt's objects (finding them when a redelivered start made them
//! already), observe them, delete them.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};

use crate::auth::{self, EksCluster};
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
    /// The cluster could not be found or reached with the AWS identity.
    #[error("EKS cluster {name}: {reason}")]
    Eks {
        /// The cluster's name.
        name: String,
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
    client: Arc<Mutex<(kube::Client, Instant)>>,
    /// Where a new client comes from when the token ages (EKS tokens last 15 minutes).
    eks: Option<Arc<EksSource>>,
    /// How long a pod may wait for its image before the attempt fails (Flyte's
    /// `image-pull-backoff-grace-period`).
    pub image_pull_grace: Duration,
}

/// An EKS cluster reached with an AWS identity.
struct EksSource {
    cluster: EksCluster,
    region: String,
    endpoint: String,
    ca: String,
    sdk: aws_config::SdkConfig,
}

impl EksSource {
    /// A client with a fresh token.
    async fn client(&self) -> Result<kube::Client, ClusterError> {
        use aws_credential_types::provider::ProvideCredentials;
        let bad = |reason: String| ClusterError::Eks {
            name: self.cluster.name.clone(),
            reason,
        };
        let provider = self
            .sdk
            .credentials_provider()
            .ok_or_else(|| bad("no AWS credentials are configured".into()))?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| bad(format!("AWS credentials: {e}")))?;
        let token = auth::token(&self.cluster.name, &self.region, &creds, SystemTime::now())
            .map_err(|e| bad(e.to_string()))?;
        let name = &self.cluster.name;
        let mut server = serde_json::json!({ "server": self.endpoint });
        if !self.ca.is_empty() {
            server["certificate-authority-data"] = self.ca.clone().into();
        }
        let yaml = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": server}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        });
        let kc: Kubeconfig =
            serde_json::from_value(yaml).map_err(|e| bad(format!("kubeconfig: {e}")))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| bad(e.to_string()))
    }
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

/// Whether a pod has not started its containers yet (the API answers 400 for their logs then).
fn is_pending(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending")
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
            client: Arc::new(Mutex::new((client, Instant::now()))),
            eks: None,
            image_pull_grace: status::IMAGE_PULL_GRACE,
        }
    }

    /// An EKS cluster reached with the AWS identity of `sdk` (the Lambda functions' role): its endpoint
    /// and certificate authority from the configuration or `DescribeCluster`, a bearer token from the
    /// identity, made again before it expires.
    pub async fn from_eks(
        cluster: &EksCluster,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, ClusterError> {
        let bad = |reason: String| ClusterError::Eks {
            name: cluster.name.clone(),
            reason,
        };
        let region = cluster
            .region
            .clone()
            .or_else(|| sdk.region().map(|r| r.to_string()))
            .ok_or_else(|| bad("no region: set `region` or AWS_REGION".into()))?;
        let (endpoint, ca) = match (&cluster.endpoint, &cluster.certificate_authority_data) {
            (Some(e), Some(c)) => (e.clone(), c.clone()),
            _ => {
                let conf = aws_sdk_eks::config::Builder::from(sdk)
                    .region(aws_sdk_eks::config::Region::new(region.clone()))
                    .build();
                let out = aws_sdk_eks::Client::from_conf(conf)
                    .describe_cluster()
                    .name(&cluster.name)
                    .send()
                    .await
                    .map_err(|e| {
                        bad(format!(
                            "DescribeCluster: {}",
                            aws_sdk_eks::error::DisplayErrorContext(&e)
                        ))
                    })?;
                let c = out
                    .cluster
                    .ok_or_else(|| bad("DescribeCluster returned no cluster".into()))?;
                let endpoint = cluster
                    .endpoint
                    .clone()
                    .or(c.endpoint)
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| bad("the cluster has no endpoint yet (is it ACTIVE?)".into()))?;
                let ca = cluster
                    .certificate_authority_data
                    .clone()
                    .or(c.certificate_authority.and_then(|a| a.data))
                    .unwrap_or_default();
                (endpoint, ca)
            }
        };
        let source = EksSource {
            cluster: cluster.clone(),
            region,
            endpoint,
            ca,
            sdk: sdk.clone(),
        };
        let client = source.client().await?;
        Ok(Self {
            client: Arc::new(Mutex::new((client, Instant::now()))),
            eks: Some(Arc::new(source)),
            image_pull_grace: status::IMAGE_PULL_GRACE,
        })
    }

    /// The client, made again with a new token when the one it has is old.
    async fn client(&self) -> Result<kube::Client, ClusterError> {
        let current = self
            .client
            .lock()
            .map(|g| g.clone())
            .map_err(|_| ClusterError::Eks {
                name: "cluster".into(),
                reason: "client lock poisoned".into(),
            })?;
        match &self.eks {
            Some(source) if current.1.elapsed() >= auth::TOKEN_LIFETIME => {
                let fresh = source.client().await?;
                if let Ok(mut g) = self.client.lock() {
                    *g = (fresh.clone(), Instant::now());
                }
                Ok(fresh)
            }
            _ => Ok(current.0),
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
                Object::Pod(p) => Api::<Pod>::namespaced(self.client().await?, &ns)
                    .create(&PostParams::default(), p)
                    .await
                    .map(|_| ()),
                Object::Custom(c) => {
                    let ar = api_resource(c);
                    let mut d = DynamicObject::new(&name, &ar).within(&ns);
                    d.metadata = c.metadata.clone();
                    d.data = serde_json::json!({ "spec": c.spec });
                    Api::<DynamicObject>::namespaced_with(self.client().await?, &ns, &ar)
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
                match Api::<Pod>::namespaced(self.client().await?, &ns)
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
                match Api::<DynamicObject>::namespaced_with(self.client().await?, &ns, &ar)
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

    /// The first `limit` bytes (at most) of what the primary container of pod `name` printed so far;
    /// empty while the container has not started.
    pub async fn pod_log(
        &self,
        namespace: &str,
        name: &str,
        limit: u64,
    ) -> Result<String, ClusterError> {
        let err = |source| ClusterError::Api {
            kind: "Pod".into(),
            name: name.into(),
            source,
        };
        let api = Api::<Pod>::namespaced(self.client().await?, namespace);
        let pod = api.get(name).await.map_err(err)?;
        let params = kube::api::LogParams {
            container: Some(status::primary_container(&pod)).filter(|c| !c.is_empty()),
            limit_bytes: i64::try_from(limit).ok(),
            ..Default::default()
        };
        match api.logs(name, &params).await {
            Ok(text) => Ok(text),
            // a container that has not started yet has nothing to show
            Err(e) if is_code(&e, 400) && is_pending(&pod) => Ok(String::new()),
            Err(e) => Err(err(e)),
        }
    }

    /// Deletes the objects (and, through their owners, what they made); ones already gone are fine.
    pub async fn delete(&self, objects: &[Object]) -> Result<(), ClusterError> {
        for o in objects {
            let (ns, name) = place(o);
            let dp = DeleteParams::background();
            let done = match o {
                Object::Pod(_) => Api::<Pod>::namespaced(self.client().await?, &ns)
                    .delete(&name, &dp)
                    .await
                    .map(|_| ()),
                Object::Custom(c) => Api::<DynamicObject>::namespaced_with(
                    self.client().await?,
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
