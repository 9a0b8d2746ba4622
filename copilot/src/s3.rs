//! `s3://` data locations: where an attempt's inputs and outputs live on the serverless runtime (and on
//! any cluster whose data is in S3).
//!
//! The client is configured as the AWS SDKs are: credentials from the environment, a profile, web
//! identity (IRSA), EKS Pod Identity or instance metadata; the region from `AWS_REGION` or
//! `AWS_DEFAULT_REGION` (else us-east-1); an endpoint from `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3`,
//! with buckets then addressed path-style, as S3-compatible stores and LocalStack want. flytekit's
//! `FLYTE_AWS_ENDPOINT`, `FLYTE_AWS_ACCESS_KEY_ID` and `FLYTE_AWS_SECRET_ACCESS_KEY` stand in when the
//! AWS ones are not set, so a deployment set up for flytekit's tasks serves raw containers too.
//!
//! Certificates: the system's (`SSL_CERT_FILE`, `SSL_CERT_DIR`, the usual files) when it has any, else
//! Mozilla's roots built into the program — the copilot image is empty, and a task's image may hold no
//! certificates at all.
//!
//! Files stream to and from disk; a file larger than the part size (64 MiB) is uploaded in parts.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::{CopilotError, LocalFiles, Store, io_at};

/// Files larger than this are uploaded in parts of this size (or larger, to stay within S3's 10,000
/// parts).
pub const DEFAULT_PART_SIZE: u64 = 64 * 1024 * 1024;

/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// A bucket and key from `s3://bucket/key`.
pub fn parse_uri(uri: &str) -> Result<(&str, &str), CopilotError> {
    uri.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or(CopilotError::Unsupported(
            uri.to_string(),
            "not an s3://bucket/key URI",
        ))
}

fn remote(uri: &str, reason: impl std::fmt::Display) -> CopilotError {
    CopilotError::Remote {
        uri: uri.to_string(),
        reason: reason.to_string(),
    }
}

/// A call's error: the service's code and message, else the error with its causes (why the request
/// never got an answer).
fn sdk_error<E: std::error::Error + ProvideErrorMetadata>(call: &str, e: E) -> String {
    match e.code() {
        Some(code) => format!("S3 {call}: {code}: {}", e.message().unwrap_or("no message")),
        None => causes(call, e),
    }
}

/// An error with its causes.
fn causes<E: std::error::Error>(call: &str, e: E) -> String {
    let mut text = format!("S3 {call}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The AWS configuration this machine's environment describes (see the module's documentation);
/// flytekit's `FLYTE_AWS_ENDPOINT` is the endpoint only when `flyte_endpoint` (it names a data store).
pub(crate) fn environment(
    runtime: &tokio::runtime::Runtime,
    flyte_endpoint: bool,
) -> aws_config::SdkConfig {
    runtime.block_on(async {
        let region =
            aws_config::meta::region::RegionProviderChain::default_provider().or_else("us-east-1");
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region)
            .http_client(https_client());
        if flyte_endpoint
            && env("AWS_ENDPOINT_URL").is_none()
            && env("AWS_ENDPOINT_URL_S3").is_none()
            && let Some(endpoint) = env("FLYTE_AWS_ENDPOINT")
        {
            loader = loader.endpoint_url(endpoint);
        }
        if env("AWS_ACCESS_KEY_ID").is_none()
            && let (Some(id), Some(secret)) = (
                env("FLYTE_AWS_ACCESS_KEY_ID"),
                env("FLYTE_AWS_SECRET_ACCESS_KEY"),
            )
        {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id,
                secret,
                None,
                None,
                "FLYTE_AWS_ACCESS_KEY_ID",
            ));
        }
        loader.load().await
    })
}

/// S3, through a client of its own (with its own runtime, so its calls can be made from plain code).
#[derive(Debug)]
pub struct S3 {
    runtime: tokio::runtime::Runtime,
    client: Client,
    part_size: u64,
}

impl S3 {
    /// S3 as this machine's environment describes it (see the module's documentation).
    pub fn from_env() -> Result<S3, CopilotError> {
        let runtime = runtime()?;
        let sdk = environment(&runtime, true);
        let path_style = sdk.endpoint_url().is_some() || env("AWS_ENDPOINT_URL_S3").is_some();
        Ok(Self::build(runtime, &sdk, path_style))
    }

    /// S3 as `sdk` describes it; buckets are addressed path-style when it names an endpoint.
    pub fn new(sdk: &aws_config::SdkConfig) -> Result<S3, CopilotError> {
        Ok(Self::build(runtime()?, sdk, sdk.endpoint_url().is_some()))
    }

    fn build(
        runtime: tokio::runtime::Runtime,
        sdk: &aws_config::SdkConfig,
        path_style: bool,
    ) -> S3 {
        let client = Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk)
                .force_path_style(path_style)
                .build(),
        );
        S3 {
            runtime,
            client,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Uploads files larger than `bytes` in parts of that size (S3 wants at least 5 MiB).
    pub fn with_part_size(mut self, bytes: u64) -> S3 {
        self.part_size = bytes.max(1);
        self
    }

    /// The object at `uri`, its body still to be read.
    async fn get(&self, uri: &str) -> Result<ByteStream, CopilotError> {
        let (bucket, key) = parse_uri(uri)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let missing = e
                    .as_service_error()
                    .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key);
                if missing {
                    remote(uri, "no such object")
                } else {
                    remote(uri, sdk_error("GetObject", e))
                }
            })?;
        Ok(out.body)
    }

    /// Writes the object at `uri` to the file `to`, streaming; returns its size.
    async fn get_file(&self, uri: &str, to: &Path) -> Result<u64, CopilotError> {
        let mut body = self.get(uri).await?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        let mut file = std::fs::File::create(to).map_err(io_at(to))?;
        let mut size = 0;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| remote(uri, causes("GetObject", e)))?
        {
            file.write_all(&chunk).map_err(io_at(to))?;
            size += chunk.len() as u64;
        }
        file.flush().map_err(io_at(to))?;
        Ok(size)
    }

    /// The objects under the folder `uri` (`<uri>/…`), each as its URI and its path relative to the
    /// folder.
    async fn list(&self, uri: &str) -> Result<Vec<(String, PathBuf)>, CopilotError> {
        let (bucket, key) = parse_uri(uri)?;
        let prefix = format!("{}/", key.trim_end_matches('/'));
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| remote(uri, sdk_error("ListObjectsV2", e)))?;
            for object in page.contents() {
                let Some(rel) = object.key().and_then(|k| k.strip_prefix(&prefix)) else {
                    continue;
                };
                // Folder markers hold nothing.
                if rel.is_empty() || rel.ends_with('/') {
                    continue;
                }
                let at = format!("s3://{bucket}/{prefix}{rel}");
                found.push((at, safe_relative(uri, rel)?));
            }
        }
        Ok(found)
    }

    /// Uploads the file `from` as the object at `uri`: in one request, or in parts when it is larger
    /// than the part size. Returns its size.
    async fn put_file(&self, from: &Path, uri: &str) -> Result<u64, CopilotError> {
        let (bucket, key) = parse_uri(uri)?;
        let size = std::fs::metadata(from).map_err(io_at(from))?.len();
        if size <= self.part_size {
            let body = ByteStream::from_path(from)
                .await
                .map_err(|e| remote(uri, format!("{}: {e}", from.display())))?;
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .map_err(|e| remote(uri, sdk_error("PutObject", e)))?;
            return Ok(size);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| remote(uri, sdk_error("CreateMultipartUpload", e)))?;
        let Some(id) = created.upload_id() else {
            return Err(remote(uri, "S3 CreateMultipartUpload: no upload id"));
        };
        let done = self.put_parts(from, size, bucket, key, id, uri).await;
        if done.is_err() {
            // Best effort: the bucket's lifecycle rules clear what is left.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await;
        }
        done.map(|()| size)
    }

    async fn put_parts(
        &self,
        from: &Path,
        size: u64,
        bucket: &str,
        key: &str,
        id: &str,
        uri: &str,
    ) -> Result<(), CopilotError> {
        let part_size = self.part_size.max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let length = part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(from)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| remote(uri, format!("{}: {e}", from.display())))?;
            let part = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(|e| remote(uri, sdk_error("UploadPart", e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            offset += length;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| remote(uri, sdk_error("CompleteMultipartUpload", e)))?;
        Ok(())
    }
}

/// An HTTPS client trusting the system's certificates, or the built-in roots where the system has none.
fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    let system = !rustls_native_certs::load_native_certs().certs.is_empty();
    let trust = if system {
        tls::TrustStore::default()
    } else {
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .fold(tls::TrustStore::empty(), |t, der| {
                t.with_pem_certificate(pem(der.as_ref()))
            })
    };
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https()
}

/// A DER certificate as PEM.
fn pem(der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out.into_bytes()
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CopilotError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CopilotError::Io {
            path: "(the S3 client's runtime)".into(),
            source,
        })
}

/// A key's path below its folder, refused when it would leave the folder.
fn safe_relative(uri: &str, rel: &str) -> Result<PathBuf, CopilotError> {
    let path = PathBuf::from(rel);
    if path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(path)
    } else {
        Err(remote(
            uri,
            format!("the key `{rel}` would be written outside the folder"),
        ))
    }
}

/// The files under `dir`, each with its path relative to `dir`, in a stable order.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, CopilotError> {
    let mut found = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let at = dir.join(&rel);
        for entry in std::fs::read_dir(&at).map_err(io_at(&at))? {
            let entry = entry.map_err(io_at(&at))?;
            let rel = rel.join(entry.file_name());
            if entry.path().is_dir() {
                todo.push(rel);
            } else {
                found.push(rel);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The key suffix of a relative path (`/`-separated).
fn key_of(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Says what was moved: one file (`files` None) or a folder's files, and how much.
fn moved(
    from: impl std::fmt::Display,
    to: impl std::fmt::Display,
    files: Option<usize>,
    bytes: u64,
) {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    match files {
        None => eprintln!("updraft-copilot: {from} → {to} ({mib:.1} MiB)"),
        Some(n) => eprintln!("updraft-copilot: {from}/ → {to}/ ({n} file(s), {mib:.1} MiB)"),
    }
}

impl Store for S3 {
    fn read(&self, uri: &str) -> Result<Vec<u8>, CopilotError> {
        self.runtime.block_on(async {
            let data = self
                .get(uri)
                .await?
                .collect()
                .await
                .map_err(|e| remote(uri, causes("GetObject", e)))?;
            Ok(data.into_bytes().to_vec())
        })
    }

    fn write(&self, uri: &str, bytes: &[u8]) -> Result<(), CopilotError> {
        let (bucket, key) = parse_uri(uri)?;
        self.runtime.block_on(async {
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(bytes.to_vec()))
                .send()
                .await
                .map_err(|e| remote(uri, sdk_error("PutObject", e)))?;
            Ok(())
        })
    }

    fn download(&self, uri: &str, multipart: bool, to: &Path) -> Result<(), CopilotError> {
        self.runtime.block_on(async {
            if !multipart {
                let size = self.get_file(uri, to).await?;
                moved(uri, to.display(), None, size);
                return Ok(());
            }
            std::fs::create_dir_all(to).map_err(io_at(to))?;
            let objects = self.list(uri).await?;
            let mut total = 0;
            for (at, rel) in &objects {
                total += self.get_file(at, &to.join(rel)).await?;
            }
            moved(uri, to.display(), Some(objects.len()), total);
            Ok(())
        })
    }

    fn upload(&self, from: &Path, uri: &str) -> Result<(), CopilotError> {
        parse_uri(uri)?;
        self.runtime.block_on(async {
            if !from.is_dir() {
                let size = self.put_file(from, uri).await?;
                moved(from.display(), uri, None, size);
                return Ok(());
            }
            let files = files_under(from)?;
            let mut total = 0;
            for rel in &files {
                let to = crate::join_uri(uri, &key_of(rel));
                total += self.put_file(&from.join(rel), &to).await?;
            }
            moved(from.display(), uri, Some(files.len()), total);
            Ok(())
        })
    }
}

/// Data locations of the copilot program: `s3://` URIs in S3 (its client made at first use, from the
/// environment), anything else a local path.
#[derive(Debug, Default)]
pub struct Data {
    s3: OnceLock<Result<S3, String>>,
}

impl Data {
    /// The store for `uri`.
    fn store(&self, uri: &str) -> Result<&dyn Store, CopilotError> {
        if uri.starts_with("s3://") {
            match self
                .s3
                .get_or_init(|| S3::from_env().map_err(|e| e.to_string()))
            {
                Ok(s3) => Ok(s3),
                Err(reason) => Err(remote(uri, reason)),
            }
        } else if !uri.starts_with("file://") && uri.contains("://") {
            Err(CopilotError::Unsupported(
                uri.to_string(),
                "only s3:// and local paths are data locations of this copilot",
            ))
        } else {
            Ok(&LocalFiles)
        }
    }
}

impl Store for Data {
    fn read(&self, uri: &str) -> Result<Vec<u8>, CopilotError> {
        self.store(uri)?.read(uri)
    }

    fn write(&self, uri: &str, bytes: &[u8]) -> Result<(), CopilotError> {
        self.store(uri)?.write(uri, bytes)
    }

    fn download(&self, uri: &str, multipart: bool, to: &Path) -> Result<(), CopilotError> {
        self.store(uri)?.download(uri, multipart, to)
    }

    fn upload(&self, from: &Path, uri: &str) -> Result<(), CopilotError> {
        self.store(uri)?.upload(from, uri)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roots_become_pem_that_reads_back() {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        assert!(roots.len() > 100);
        for der in roots {
            let back: Vec<_> = CertificateDer::pem_slice_iter(&pem(der.as_ref()))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(back, vec![der.clone()]);
        }
    }

    #[test]
    fn keys_stay_inside_their_folder() {
        assert_eq!(
            safe_relative("s3://b/f", "a/b.txt").unwrap(),
            PathBuf::from("a/b.txt")
        );
        for bad in ["../x", "a/../../x", "/etc/passwd"] {
            assert!(safe_relative("s3://b/f", bad).is_err(), "{bad}");
        }
        assert_eq!(key_of(Path::new("a/b/c")), "a/b/c");
        assert_eq!(parse_uri("s3://b/k/x").unwrap(), ("b", "k/x"));
        for bad in ["s3://b", "s3:///k", "b/k", "gs://b/k"] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }
}
