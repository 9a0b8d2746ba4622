//! Reaching an EKS cluster with an AWS identity (the Lambda functions' way): the cluster's endpoint and
//! certificate authority from `DescribeCluster` (or configuration), and a bearer token made as
//! aws-iam-authenticator and `aws eks get-token` make it — a presigned STS `GetCallerIdentity` URL whose
//! signature covers the `x-k8s-aws-id` header naming the cluster, as `k8s-aws-v1.` + base64url.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use serde::Deserialize;

/// The prefix of EKS bearer tokens.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// How long the presigned URL is valid for, as aws-iam-authenticator signs it (EKS accepts the token
/// for 15 minutes from its signing time).
pub const URL_EXPIRY: Duration = Duration::from_secs(60);

/// How long a token is used before a new one is made.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Which EKS cluster, and optionally where it is (otherwise `DescribeCluster` tells).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EksCluster {
    /// The cluster's name.
    pub name: String,
    /// Its region (default: the AWS configuration's).
    #[serde(default)]
    pub region: Option<String>,
    /// The API server's URL (default: from `DescribeCluster`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The base64 PEM of its certificate authority (default: from `DescribeCluster`).
    #[serde(default)]
    pub certificate_authority_data: Option<String>,
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("EKS token for cluster `{cluster}`: {reason}")]
pub struct TokenError {
    cluster: String,
    reason: String,
}

/// The bearer token for `cluster` in `region`, signed with `credentials` at `now`.
pub fn token(
    cluster: &str,
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String, TokenError> {
    let url = presigned_url(cluster, region, credentials, now)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    ))
}

/// The presigned `GetCallerIdentity` URL a token carries.
pub fn presigned_url(
    cluster: &str,
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String, TokenError> {
    let bad = |reason: String| TokenError {
        cluster: cluster.into(),
        reason,
    };
    let url =
        format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(URL_EXPIRY);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| bad(e.to_string()))?
        .into();
    let headers = [("x-k8s-aws-id", cluster)];
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| bad(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| bad(e.to_string()))?
        .into_parts();
    let mut request = http::Request::builder()
        .uri(&url)
        .header("x-k8s-aws-id", cluster)
        .body(())
        .map_err(|e| bad(e.to_string()))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request.uri().to_string())
}
