//! Reaching an EKS cluster with an AWS identity: the bearer token's shape, and the whole path against
//! moto (DescribeCluster, STS) and the Kubernetes API test server checking tokens as EKS's authenticator
//! does.
//!
//! The moto part needs `UPDRAFT_TEST_MOTO` (the Python of `localstack/moto-env`, set by `scripts/test`); it
//! fails, saying so, without it.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use base64::Engine;
use updraft_connector_eks::auth::{EksCluster, TOKEN_PREFIX, token};
use updraft_connector_eks::{Cluster, ClusterError, Object};
use updraft_test_kube::{EksAuth, Server};

fn query(url: &str) -> Vec<(String, String)> {
    url.split_once('?')
        .unwrap()
        .1
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.replace("%2F", "/").replace("%3B", ";"))
        })
        .collect()
}

#[test]
fn tokens_are_presigned_get_caller_identity_urls() {
    let creds = Credentials::new(
        "AKIDEXAMPLE",
        "secret",
        Some("session".into()),
        None,
        "test",
    );
    let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let t = token("ml", "eu-west-1", &creds, at).unwrap();
    let encoded = t.strip_prefix(TOKEN_PREFIX).unwrap();
    assert!(!encoded.contains('='), "base64url without padding");
    let url = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert!(
        url.starts_with(
            "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
        ),
        "{url}"
    );
    let q = query(&url);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
    assert_eq!(
        get("X-Amz-Credential"),
        Some("AKIDEXAMPLE/20261118/eu-west-1/sts/aws4_request")
    );
    assert_eq!(get("X-Amz-Date"), Some("20261118T110640Z"));
    assert_eq!(get("X-Amz-SignedHeaders"), Some("host;x-k8s-aws-id"));
    assert_eq!(get("X-Amz-Expires"), Some("60"));
    assert_eq!(get("X-Amz-Security-Token"), Some("session"));
    assert_eq!(get("X-Amz-Signature").unwrap().len(), 64);
    // The same inputs sign the same; another cluster signs differently.
    assert_eq!(token("ml", "eu-west-1", &creds, at).unwrap(), t);
    assert_ne!(token("other", "eu-west-1", &creds, at).unwrap(), t);
}

/// moto's server on a free port, started by `localstack/moto-up` (which waits for it and shows its
/// log if it does not answer) and stopped by `localstack/moto-down` on drop.
struct Moto {
    port: u16,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("moto-down"))
            .args(["--port", &self.port.to_string()])
            .output();
    }
}

/// A script of `localstack/`.
fn script(name: &str) -> String {
    format!("{}/../../localstack/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn moto(eks_endpoint: &str) -> Moto {
    let python = std::env::var("UPDRAFT_TEST_MOTO").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_MOTO is not set: run the tests with `bash scripts/test`, which prepares moto (localstack/moto-env)")
    });
    let venv = Path::new(&python).parent().and_then(Path::parent).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("bash")
        .arg(script("moto-up"))
        .args(["--port", &port.to_string()])
        .env("UPDRAFT_MOTO_VENV", venv)
        .env("UPDRAFT_MOTO_EKS_ENDPOINT", eks_endpoint)
        .env_remove("UPDRAFT_MOTO_LIFECYCLE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run localstack/moto-up: {e}"));
    assert!(
        out.status.success(),
        "localstack/moto-up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Moto {
        port,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn pod(name: &str) -> Object {
    let v = serde_json::json!({
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]},
    });
    Object::Pod(Box::new(serde_json::from_value(v).unwrap()))
}

#[test]
fn an_aws_identity_reaches_the_cluster_describe_cluster_names() {
    let work = std::env::temp_dir().join(format!("updraft-eks-auth-{}", std::process::id()));
    let mut server = Server::start(0, work.clone()).unwrap();
    let moto = moto(&server.url);
    *server.auth.lock().unwrap() = Some(EksAuth {
        cluster_id: "ml".into(),
        sts: moto.url.trim_start_matches("http://").into(),
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sdk = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&moto.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .load(),
    );
    let eks = aws_sdk_eks::Client::new(&sdk);
    rt.block_on(
        eks.create_cluster()
            .name("ml")
            .role_arn("arn:aws:iam::123456789012:role/eks")
            .resources_vpc_config(
                aws_sdk_eks::types::VpcConfigRequest::builder()
                    .subnet_ids("subnet-1")
                    .build(),
            )
            .send(),
    )
    .unwrap();

    // Endpoint and certificate authority from DescribeCluster; a token from the identity.
    let config = EksCluster {
        name: "ml".into(),
        region: None,
        endpoint: None,
        certificate_authority_data: None,
    };
    let cluster = rt.block_on(Cluster::from_eks(&config, &sdk)).unwrap();
    let p = pod("first");
    rt.block_on(cluster.start(std::slice::from_ref(&p)))
        .unwrap();
    assert!(
        server
            .store
            .lock()
            .unwrap()
            .callers
            .contains("arn:aws:sts::123456789012:user/moto"),
        "STS named the caller"
    );
    assert_eq!(server.store.lock().unwrap().objects.len(), 1);

    // Without a token the API server refuses (401).
    let kubeconfig = work.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let anonymous = rt
        .block_on(Cluster::from_kubeconfig(Some(&kubeconfig)))
        .unwrap();
    let err = rt.block_on(anonymous.start(&[pod("second")])).unwrap_err();
    assert!(
        err.to_string().contains("401") || err.to_string().contains("Unauthorized"),
        "{err}"
    );

    // A cluster EKS does not know is named in the error.
    let missing = EksCluster {
        name: "nope".into(),
        ..config
    };
    match rt.block_on(Cluster::from_eks(&missing, &sdk)) {
        Err(ClusterError::Eks { name, reason }) => {
            assert_eq!(name, "nope");
            assert!(
                reason.contains("DescribeCluster") && reason.contains("ResourceNotFound"),
                "{reason}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an unknown cluster was reached"),
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&work);
}
