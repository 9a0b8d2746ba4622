//! HTTP calls of the services Updraft's connectors drive.
//!
//! - [`Aws`]: AWS services called as boto3 calls them, for requests that arrive as JSON (a boto3 dict,
//!   a connector's request): a JSON-protocol request (`X-Amz-Target: <prefix>.<Operation>`,
//!   [`Aws::call`]), a REST-JSON request ([`Aws::rest`], EMR Serverless) or a REST call of SageMaker
//!   Runtime, signed with Signature Version 4 under the SDK's credentials, the answer returned as JSON.
//!   Mapping every field of hundreds of request shapes onto the SDK's typed builders would only turn the
//!   JSON back into the same JSON, and each service's SDK crate would add minutes to every build.
//! - [`Http`]: plain HTTPS (or HTTP) calls of a service's own API (Qubole's).
//!
//! Both trust the system's root certificates (else the built-in ones), read on the first call.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};

/// How a service takes its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AWS JSON 1.0 or 1.1: `POST /`, the operation in `X-Amz-Target: <target>.<Operation>`.
    Json {
        /// The target prefix (SageMaker's is `SageMaker`).
        target: &'static str,
        /// `1.0` or `1.1`.
        version: &'static str,
    },
    /// SageMaker Runtime's REST operations (`invoke_endpoint`, `invoke_endpoint_async`).
    SageMakerRuntime,
    /// REST-JSON: the operation is a method and a path, the request and answer JSON
    /// ([`Aws::rest`]).
    RestJson,
}

/// An AWS service boto3 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// boto3's name for it (`sagemaker`).
    pub name: &'static str,
    /// The first label of its endpoint's host (`api.sagemaker`).
    pub host: &'static str,
    /// The name requests are signed for.
    pub signing_name: &'static str,
    /// How it takes requests.
    pub protocol: Protocol,
}

const fn json(
    name: &'static str,
    host: &'static str,
    signing_name: &'static str,
    target: &'static str,
    version: &'static str,
) -> Service {
    Service {
        name,
        host,
        signing_name,
        protocol: Protocol::Json { target, version },
    }
}

/// SageMaker's control plane.
pub const SAGEMAKER: Service = json(
    "sagemaker",
    "api.sagemaker",
    "sagemaker",
    "SageMaker",
    "1.1",
);

/// EMR Serverless (REST-JSON).
pub const EMR_SERVERLESS: Service = Service {
    name: "emr-serverless",
    host: "emr-serverless",
    signing_name: "emr-serverless",
    protocol: Protocol::RestJson,
};

/// Athena.
pub const ATHENA: Service = json("athena", "athena", "athena", "AmazonAthena", "1.1");

/// Secrets Manager.
pub const SECRETS_MANAGER: Service = json(
    "secretsmanager",
    "secretsmanager",
    "secretsmanager",
    "secretsmanager",
    "1.1",
);

/// The services a `boto` task can call: every JSON-protocol service below, and SageMaker Runtime.
pub const SERVICES: &[Service] = &[
    SAGEMAKER,
    Service {
        name: "sagemaker-runtime",
        host: "runtime.sagemaker",
        signing_name: "sagemaker",
        protocol: Protocol::SageMakerRuntime,
    },
    ATHENA,
    json(
        "dynamodb",
        "dynamodb",
        "dynamodb",
        "DynamoDB_20120810",
        "1.0",
    ),
    json(
        "ecr",
        "api.ecr",
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921",
        "1.1",
    ),
    json(
        "ecs",
        "ecs",
        "ecs",
        "AmazonEC2ContainerServiceV20141113",
        "1.1",
    ),
    json("events", "events", "events", "AWSEvents", "1.1"),
    json("glue", "glue", "glue", "AWSGlue", "1.1"),
    json("kinesis", "kinesis", "kinesis", "Kinesis_20131202", "1.1"),
    json("logs", "logs", "logs", "Logs_20140328", "1.1"),
    SECRETS_MANAGER,
    json("sqs", "sqs", "sqs", "AmazonSQS", "1.0"),
    json("ssm", "ssm", "ssm", "AmazonSSM", "1.1"),
    json(
        "stepfunctions",
        "states",
        "states",
        "AWSStepFunctions",
        "1.0",
    ),
];

/// The service boto3 calls `name`, if a `boto` task can call it.
pub fn service(name: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.name == name)
}

/// A boto3 method's operation name: `create_training_job` → `CreateTrainingJob`.
pub fn operation(method: &str) -> String {
    method
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A refused or failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The service's error code (`ValidationException`, `ResourceInUse`), or `Unreachable` when no
    /// answer came.
    pub code: String,
    /// Its message.
    pub message: String,
    /// The HTTP status (0 when no answer came).
    pub status: u16,
}

impl ApiError {
    /// Whether calling again later may succeed: no answer, a server error, throttling.
    pub fn passing(&self) -> bool {
        self.status == 0
            || self.status >= 500
            || self.code.contains("Throttl")
            || self.code == "RequestLimitExceeded"
            || self.code == "ServiceUnavailable"
    }

    fn unreachable(message: String) -> Self {
        Self {
            code: "Unreachable".into(),
            message,
            status: 0,
        }
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Sends HTTP(S) requests, unsigned.
#[derive(Default)]
pub struct Http {
    /// Made on the first call: reading the system's root certificates takes tens of milliseconds, which
    /// a function that never calls these services should not pay at its cold start.
    client: std::sync::OnceLock<Client<Https, Full<Bytes>>>,
}

/// An answer: its status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The headers, as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON: `{}` when empty, `{"message": <text>}` when not JSON.
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&self.body).unwrap_or_else(
                |_| json!({"message": String::from_utf8_lossy(&self.body).to_string()}),
            )
        }
    }
}

impl Http {
    fn client(&self) -> &Client<Https, Full<Bytes>> {
        self.client.get_or_init(|| {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config())
                .https_or_http()
                .enable_http1()
                .build();
            Client::builder(TokioExecutor::new()).build(https)
        })
    }

    /// Sends one request with `headers` and `body`, waiting at most `timeout` for the whole answer.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Answer, ApiError> {
        let url = request.uri().to_string();
        let answer = tokio::time::timeout(timeout, async {
            let answer = self
                .client()
                .request(request)
                .await
                .map_err(|e| ApiError::unreachable(format!("{url}: {e}")))?;
            let status = answer.status().as_u16();
            let headers = answer
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let body = answer
                .into_body()
                .collect()
                .await
                .map_err(|e| ApiError::unreachable(format!("{url}: reading the answer: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(Answer {
                status,
                headers,
                body,
            })
        })
        .await
        .map_err(|_| {
            ApiError::unreachable(format!("{url}: no answer in {} s", timeout.as_secs()))
        })??;
        Ok(answer)
    }

    /// Sends `method url` with `headers` and a body, unsigned.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, ApiError> {
        let mut request = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ApiError::unreachable(format!("{url}: {e}")))?;
        self.send(request, Duration::from_secs(60)).await
    }
}

/// Signs and sends requests to AWS services.
pub struct Aws {
    http: Http,
    credentials: Option<SharedCredentialsProvider>,
    cached: Mutex<Option<Credentials>>,
    endpoint: Option<String>,
    region: Option<String>,
}

impl Aws {
    /// A client with `sdk`'s credentials, region and endpoint, under the settings' `aws.region` and
    /// `aws.endpoint` (which win; the endpoint then serves every service, as LocalStack and moto do).
    pub fn new(sdk: &aws_config::SdkConfig, settings: &updraft_settings::Settings) -> Self {
        Self {
            http: Http::default(),
            credentials: sdk.credentials_provider(),
            cached: Mutex::default(),
            endpoint: settings
                .aws
                .endpoint
                .clone()
                .or_else(|| sdk.endpoint_url().map(str::to_string)),
            region: settings
                .aws
                .region
                .clone()
                .or_else(|| sdk.region().map(|r| r.to_string())),
        }
    }

    /// The region calls go to when the task names none.
    pub fn default_region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The region of Secrets Manager secret `id`: its ARN's, else the default.
    pub fn secret_region(&self, id: &str) -> String {
        id.strip_prefix("arn:")
            .and_then(|a| a.split(':').nth(2))
            .filter(|r| !r.is_empty())
            .or(self.default_region())
            .unwrap_or_default()
            .to_string()
    }

    /// The ARN of Secrets Manager secret `id` (a name or an ARN), from `DescribeSecret`, which reads
    /// no value.
    pub async fn secret_arn(&self, id: &str) -> Result<String, ApiError> {
        let answer = self
            .call(
                &SECRETS_MANAGER,
                &self.secret_region(id),
                "DescribeSecret",
                &json!({"SecretId": id}),
            )
            .await?;
        answer["ARN"].as_str().map(str::to_string).ok_or(ApiError {
            code: "NoArn".into(),
            message: format!("DescribeSecret of {id} gave no ARN"),
            status: 200,
        })
    }

    fn url(&self, service: &Service, region: &str) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => {
                let base = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                format!("https://{}.{region}.{base}", service.host)
            }
        }
    }

    async fn credentials(&self) -> Result<Credentials, ApiError> {
        if let Some(c) = lock(&self.cached).clone()
            && c.expiry()
                .is_none_or(|e| e > SystemTime::now() + Duration::from_secs(300))
        {
            return Ok(c);
        }
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| ApiError::unreachable("no AWS credentials are configured".into()))?;
        let c = provider
            .provide_credentials()
            .await
            .map_err(|e| ApiError::unreachable(format!("AWS credentials: {e}")))?;
        *lock(&self.cached) = Some(c.clone());
        Ok(c)
    }

    /// Calls `operation` (e.g. `CreateTrainingJob`) of a JSON-protocol `service` in `region` with the
    /// request `body`; the answer's JSON.
    pub async fn call(
        &self,
        service: &Service,
        region: &str,
        operation: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let (target, version) = match service.protocol {
            Protocol::Json { target, version } => (target, version),
            Protocol::SageMakerRuntime => return self.call_runtime(region, operation, body).await,
            Protocol::RestJson => {
                return Err(ApiError {
                    code: "UnknownOperation".into(),
                    message: format!(
                        "{} takes REST requests, not {operation} as a JSON-protocol call",
                        service.name
                    ),
                    status: 400,
                });
            }
        };
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let headers = vec![
            (
                "content-type".to_string(),
                format!("application/x-amz-json-{version}"),
            ),
            ("x-amz-target".to_string(), format!("{target}.{operation}")),
        ];
        let url = format!("{}/", self.url(service, region));
        let (status, _, answer) = self
            .send(service, region, "POST", &url, headers, bytes)
            .await?;
        let parsed: Value = if answer.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&answer).unwrap_or_else(
                |_| json!({"message": String::from_utf8_lossy(&answer).to_string()}),
            )
        };
        if (200..300).contains(&status) {
            return Ok(parsed);
        }
        Err(error_of(status, &parsed))
    }

    /// Calls a REST-JSON `service` in `region`: `method path` (the path with its query, its segments
    /// escaped with [`path_segment`]) with `body` as JSON; the answer's JSON.
    pub async fn rest(
        &self,
        service: &Service,
        region: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.url(service, region));
        let (headers, bytes) = match body {
            Some(b) => (
                vec![("content-type".to_string(), "application/json".to_string())],
                serde_json::to_vec(b).unwrap_or_default(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let (status, answer_headers, body) = self
            .send(service, region, method, &url, headers, bytes)
            .await?;
        let mut parsed = Answer {
            status,
            headers: Vec::new(),
            body,
        }
        .json();
        if (200..300).contains(&status) {
            return Ok(parsed);
        }
        if let (Some(t), Value::Object(m)) = (
            answer_headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-amzn-errortype")),
            &mut parsed,
        ) {
            m.entry("__type")
                .or_insert_with(|| Value::from(t.1.clone()));
        }
        Err(error_of(status, &parsed))
    }

    /// SageMaker Runtime's `InvokeEndpoint` and `InvokeEndpointAsync`, from boto3's request fields to
    /// the REST call and back.
    async fn call_runtime(
        &self,
        region: &str,
        operation: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let service = service("sagemaker-runtime").unwrap_or(&SAGEMAKER);
        let text = |k: &str| body[k].as_str().map(str::to_string);
        let name = text("EndpointName").ok_or_else(|| ApiError {
            code: "ParamValidationError".into(),
            message: "EndpointName is required".into(),
            status: 400,
        })?;
        let path_name = percent_encode(&name);
        let (path, fields, payload): (String, &[(&str, &str)], Vec<u8>) = match operation {
            "InvokeEndpoint" => (
                format!("/endpoints/{path_name}/invocations"),
                &[
                    ("ContentType", "content-type"),
                    ("Accept", "accept"),
                    ("CustomAttributes", "x-amzn-sagemaker-custom-attributes"),
                    ("TargetModel", "x-amzn-sagemaker-target-model"),
                    ("TargetVariant", "x-amzn-sagemaker-target-variant"),
                    (
                        "TargetContainerHostname",
                        "x-amzn-sagemaker-target-container-hostname",
                    ),
                    ("InferenceId", "x-amzn-sagemaker-inference-id"),
                    ("EnableExplanations", "x-amzn-sagemaker-enable-explanations"),
                    (
                        "InferenceComponentName",
                        "x-amzn-sagemaker-inference-component",
                    ),
                    ("SessionId", "x-amzn-sagemaker-session-id"),
                ],
                match &body["Body"] {
                    Value::String(s) => s.clone().into_bytes(),
                    Value::Null => Vec::new(),
                    other => serde_json::to_vec(other).unwrap_or_default(),
                },
            ),
            "InvokeEndpointAsync" => (
                format!("/endpoints/{path_name}/async-invocations"),
                &[
                    ("ContentType", "x-amzn-sagemaker-content-type"),
                    ("Accept", "x-amzn-sagemaker-accept"),
                    ("CustomAttributes", "x-amzn-sagemaker-custom-attributes"),
                    ("InferenceId", "x-amzn-sagemaker-inference-id"),
                    ("InputLocation", "x-amzn-sagemaker-inputlocation"),
                    ("RequestTTLSeconds", "x-amzn-sagemaker-requestttlseconds"),
                    (
                        "InvocationTimeoutSeconds",
                        "x-amzn-sagemaker-invocationtimeoutseconds",
                    ),
                ],
                Vec::new(),
            ),
            other => {
                return Err(ApiError {
                    code: "UnknownOperation".into(),
                    message: format!(
                        "sagemaker-runtime has no operation {other} a boto task can call \
                         (invoke_endpoint, invoke_endpoint_async)"
                    ),
                    status: 400,
                });
            }
        };
        let mut headers = Vec::new();
        for (field, header) in fields {
            match &body[*field] {
                Value::Null => {}
                Value::String(s) => headers.push((header.to_string(), s.clone())),
                other => headers.push((header.to_string(), other.to_string())),
            }
        }
        let url = format!("{}{path}", self.url(service, region));
        let (status, answer_headers, answer) = self
            .send(service, region, "POST", &url, headers, payload)
            .await?;
        if !(200..300).contains(&status) {
            let parsed: Value = serde_json::from_slice(&answer).unwrap_or_else(
                |_| json!({"message": String::from_utf8_lossy(&answer).to_string()}),
            );
            return Err(error_of(status, &parsed));
        }
        let header = |h: &str| {
            answer_headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(h))
                .map(|(_, v)| Value::from(v.clone()))
        };
        let mut out = Map::new();
        if operation == "InvokeEndpoint" {
            out.insert(
                "Body".into(),
                Value::from(String::from_utf8_lossy(&answer).to_string()),
            );
            for (k, h) in [
                ("ContentType", "content-type"),
                (
                    "InvokedProductionVariant",
                    "x-amzn-invoked-production-variant",
                ),
                ("CustomAttributes", "x-amzn-sagemaker-custom-attributes"),
            ] {
                if let Some(v) = header(h) {
                    out.insert(k.into(), v);
                }
            }
        } else {
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&answer) {
                out.extend(m);
            }
            for (k, h) in [
                ("OutputLocation", "x-amzn-sagemaker-outputlocation"),
                ("FailureLocation", "x-amzn-sagemaker-failurelocation"),
            ] {
                if let Some(v) = header(h) {
                    out.insert(k.into(), v);
                }
            }
        }
        Ok(Value::Object(out))
    }

    /// Signs and sends one request; (status, headers, body).
    async fn send(
        &self,
        service: &Service,
        region: &str,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>), ApiError> {
        let credentials = self.credentials().await?;
        let identity = credentials.into();
        let bad = |e: String| ApiError::unreachable(format!("signing {url}: {e}"));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service.signing_name)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| bad(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| bad(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| bad(e.to_string()))?
            .into_parts();
        let mut request = http::Request::builder().method(method).uri(url);
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let mut request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| bad(e.to_string()))?;
        instructions.apply_to_request_http1x(&mut request);
        let a = self.http.send(request, Duration::from_secs(60)).await?;
        Ok((a.status, a.headers, a.body))
    }
}

/// TLS trusting the system's certificates, or the built-in roots where the system has none.
fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        // The default provider supports the default versions; kept for the type's sake.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The error a JSON answer describes: its `__type` (without a namespace before `#` or a URL after
/// `:`) and its `message` or `Message`.
fn error_of(status: u16, body: &Value) -> ApiError {
    let raw = body["__type"]
        .as_str()
        .or_else(|| body["code"].as_str())
        .or_else(|| body["Code"].as_str())
        .unwrap_or("");
    let code = raw.rsplit('#').next().unwrap_or(raw);
    let code = code.split(':').next().unwrap_or(code);
    let code = if code.is_empty() {
        format!("HTTP{status}")
    } else {
        code.to_string()
    };
    let message = body["message"]
        .as_str()
        .or_else(|| body["Message"].as_str())
        .unwrap_or("")
        .to_string();
    ApiError {
        code,
        message,
        status,
    }
}

/// `s` escaped for one segment of a URL's path (or a query value).
pub fn path_segment(s: &str) -> String {
    percent_encode(s)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_boto3s_methods_in_pascal_case() {
        assert_eq!(operation("create_training_job"), "CreateTrainingJob");
        assert_eq!(
            operation("describe_hyper_parameter_tuning_job"),
            "DescribeHyperParameterTuningJob"
        );
    }

    #[test]
    fn errors_keep_their_code_without_a_namespace() {
        let e = error_of(
            400,
            &json!({"__type": "com.amazonaws.sagemaker#ResourceInUse", "message": "taken"}),
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("ResourceInUse", "taken")
        );
        assert!(!e.passing());
        let e = error_of(503, &json!({}));
        assert_eq!(e.code, "HTTP503");
        assert!(e.passing());
        let e = error_of(
            400,
            &json!({"__type": "ThrottlingException:http://x", "Message": "m"}),
        );
        assert_eq!(e.code, "ThrottlingException");
        assert!(e.passing());
    }
}
