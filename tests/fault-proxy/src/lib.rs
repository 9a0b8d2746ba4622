//! A fault-injecting proxy for tests: put it between an AWS SDK client and LocalStack (or any HTTP/1.1
//! endpoint) and a share of the requests meet what AWS does under load or failure:
//!
//! - **throttling**, as each service answers it: DynamoDB's `ProvisionedThroughputExceededException`
//!   (HTTP 400), `ThrottlingException` (HTTP 400) for the other JSON services (SQS and the rest), S3's
//!   `SlowDown` (HTTP 503);
//! - **server errors**: `InternalServerError` (DynamoDB), `InternalError` (SQS, S3), HTTP 500;
//! - **latency**: the request waits 20–250 ms before it goes on;
//! - **dropped connections**, two ways: before the request reaches the service (it never happens),
//!   and after (it happens, the answer is lost: the caller cannot tell it did).
//!
//! With no fault asked for, it is a counting proxy: [`FaultProxy::requests_by_service`].
//!
//! Faults are drawn from a seeded generator, request by request. Everything else passes unchanged,
//! one request at a time per connection, as HTTP/1.1 clients send them (`Content-Length` bodies, which
//! the AWS SDKs send). The service of a request is read from its `X-Amz-Target` or its signature's
//! credential scope.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often each fault happens, as a share of requests (0.0–1.0), and the generator's seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Throttled.
    pub throttle: f64,
    /// Answered with a server error.
    pub server_error: f64,
    /// Delayed.
    pub latency: f64,
    /// Connection closed before the request goes on.
    pub drop_request: f64,
    /// Request sent on, connection closed before its answer comes back.
    pub drop_answer: f64,
    /// Seed of the generator that draws them.
    pub seed: u64,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Throttled.
    Throttle,
    /// Answered with a server error.
    ServerError,
    /// Delayed, then sent on.
    Latency,
    /// Dropped before it went on.
    DropRequest,
    /// Sent on; its answer dropped.
    DropAnswer,
}

/// A running proxy (it stops with the test process).
#[derive(Debug, Clone)]
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: the endpoint to give clients.
    pub url: String,
    requests: Arc<AtomicU64>,
    by_service: Arc<Mutex<BTreeMap<String, u64>>>,
    by_operation: Arc<Mutex<BTreeMap<String, Traffic>>>,
    injected: Arc<Mutex<BTreeMap<(Fault, String), u64>>>,
}

/// Requests of one operation and their bytes, both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Requests.
    pub requests: u64,
    /// Bytes of the requests (head and body).
    pub sent: u64,
    /// Bytes of their answers.
    pub received: u64,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`, or a URL `http://host:port`).
    pub fn start(upstream: &str, faults: Faults) -> std::io::Result<Self> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let proxy = Self {
            url,
            requests: Arc::default(),
            by_service: Arc::default(),
            by_operation: Arc::default(),
            injected: Arc::default(),
        };
        let p = proxy.clone();
        let rng = Arc::new(Mutex::new(Rng(faults
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            | 1)));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (p, rng, upstream) = (p.clone(), rng.clone(), upstream.clone());
                std::thread::spawn(move || p.serve(conn, &upstream, faults, &rng));
            }
        });
        Ok(proxy)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests seen so far by service (`dynamodb`, `sqs`, …; S3's as `s3 GET` for reads and
    /// `s3 PUT` for the rest, as S3 prices them), faulted or not.
    pub fn requests_by_service(&self) -> BTreeMap<String, u64> {
        self.by_service
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Requests and bytes so far by operation: `dynamodb Query`, `sqs SendMessage`, `s3 GET`, …
    /// (the operation of a JSON service from its `X-Amz-Target`; S3's by method).
    pub fn traffic(&self) -> BTreeMap<String, Traffic> {
        self.by_operation
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Faults injected so far, by fault and service.
    pub fn injected(&self) -> BTreeMap<(Fault, String), u64> {
        self.injected.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn note(&self, fault: Fault, service: &str) {
        if let Ok(mut m) = self.injected.lock() {
            *m.entry((fault, service.to_string())).or_default() += 1;
        }
    }

    /// One client connection, with its own connection upstream (opened again after a drop).
    fn serve(&self, client: TcpStream, upstream: &str, faults: Faults, rng: &Mutex<Rng>) {
        let _ = client.set_nodelay(true);
        let Ok(mut writer) = client.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(client);
        let mut up: Option<(TcpStream, Arc<AtomicBool>)> = None;
        // The operation whose answer is on its way (one at a time per connection).
        let current: Arc<Mutex<String>> = Arc::default();
        while let Some(request) = read_request(&mut reader) {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let service = service_of(&request.head);
            let priced = match service.as_str() {
                "s3" if request.head.starts_with("get ") || request.head.starts_with("head ") => {
                    "s3 GET".to_string()
                }
                "s3" => "s3 PUT".to_string(),
                s => s.to_string(),
            };
            let operation = operation_of(&request.head, &priced);
            if let Ok(mut m) = self.by_service.lock() {
                *m.entry(priced).or_default() += 1;
            }
            if let Ok(mut m) = self.by_operation.lock() {
                let t = m.entry(operation.clone()).or_default();
                t.requests += 1;
                t.sent += request.bytes.len() as u64;
            }
            if let Ok(mut c) = current.lock() {
                *c = operation;
            }
            let fault = rng.lock().ok().and_then(|mut r| r.draw(&faults));
            if let Some(f) = fault {
                self.note(f, &service);
            }
            match fault {
                Some(Fault::Throttle) => {
                    if writer.write_all(&throttled(&service)).is_err() {
                        return;
                    }
                    continue;
                }
                Some(Fault::ServerError) => {
                    if writer.write_all(&server_error(&service)).is_err() {
                        return;
                    }
                    continue;
                }
                Some(Fault::DropRequest) => {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
                Some(Fault::Latency) => {
                    let ms = rng.lock().map(|mut r| 20 + r.below(230)).unwrap_or(100);
                    std::thread::sleep(Duration::from_millis(ms));
                }
                Some(Fault::DropAnswer) | None => {}
            }
            if up.is_none() {
                let Ok(stream) = TcpStream::connect(upstream) else {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                };
                let _ = stream.set_nodelay(true);
                let swallow = Arc::new(AtomicBool::new(false));
                let (Ok(from_up), Ok(to_client)) = (stream.try_clone(), writer.try_clone()) else {
                    return;
                };
                let s = swallow.clone();
                let (ops, cur) = (self.by_operation.clone(), current.clone());
                std::thread::spawn(move || relay(from_up, to_client, &s, &ops, &cur));
                up = Some((stream, swallow));
            }
            let Some((stream, swallow)) = up.as_mut() else {
                return;
            };
            if fault == Some(Fault::DropAnswer) {
                swallow.store(true, Ordering::SeqCst);
            }
            if stream.write_all(&request.bytes).is_err() {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            if fault == Some(Fault::DropAnswer) {
                // The answer's first bytes close the client's connection (see `relay`); this one is
                // done with.
                return;
            }
        }
        if let Some((stream, _)) = up {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A request as read: its head (lowercased, for matching) and every byte to send on.
struct Request {
    head: String,
    bytes: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut bytes = Vec::new();
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(v) = text.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&text);
        bytes.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let start = bytes.len();
    bytes.resize(start + length, 0);
    r.read_exact(&mut bytes[start..]).ok()?;
    Some(Request { head, bytes })
}

/// Copies answers from upstream to the client, counting their bytes for the operation under way;
/// once `swallow` is set, the next answer is dropped and the client's connection closed.
fn relay(
    mut up: TcpStream,
    mut client: TcpStream,
    swallow: &AtomicBool,
    ops: &Mutex<BTreeMap<String, Traffic>>,
    current: &Mutex<String>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match up.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Ok(n) => n,
        };
        if swallow.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
            return;
        }
        if let (Ok(op), Ok(mut m)) = (current.lock(), ops.lock()) {
            m.entry(op.clone()).or_default().received += n as u64;
        }
        if client.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// `<service> <operation>` of a request: the JSON services' from `X-Amz-Target`
/// (`DynamoDB_20120810.Query` → `dynamodb Query`), S3's as priced (`s3 GET`, `s3 PUT`).
fn operation_of(head: &str, priced: &str) -> String {
    let target = head
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-target:"))
        .map(str::trim);
    match target {
        Some(t) if !priced.starts_with("s3") => {
            let op = t.rsplit('.').next().unwrap_or(t);
            format!("{priced} {op}")
        }
        _ => priced.to_string(),
    }
}

/// The AWS service a request is for: `dynamodb`, `sqs`, `s3`, … (`other` when unsigned).
fn service_of(head: &str) -> String {
    for line in head.lines() {
        if let Some(t) = line.strip_prefix("x-amz-target:") {
            let t = t.trim();
            if t.starts_with("dynamodb") {
                return "dynamodb".into();
            }
            if t.starts_with("amazonsqs") {
                return "sqs".into();
            }
        }
    }
    head.lines()
        .find_map(|l| l.strip_prefix("authorization:"))
        .and_then(|a| a.split("credential=").nth(1))
        .and_then(|scope| scope.split('/').nth(3))
        .map_or_else(|| "other".into(), str::to_string)
}

fn answer(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         x-amzn-RequestId: fault-proxy\r\nx-amz-request-id: fault-proxy\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn s3_error(status: &str, code: &str, message: &str) -> Vec<u8> {
    answer(
        status,
        "application/xml",
        &format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
        ),
    )
}

fn json_error(status: &str, kind: &str, message: &str) -> Vec<u8> {
    answer(
        status,
        "application/x-amz-json-1.0",
        &format!("{{\"__type\":\"{kind}\",\"message\":\"{message}\"}}"),
    )
}

/// A throttling answer as `service` gives it.
fn throttled(service: &str) -> Vec<u8> {
    match service {
        "s3" => s3_error(
            "503 Slow Down",
            "SlowDown",
            "Please reduce your request rate. (fault proxy)",
        ),
        "dynamodb" => json_error(
            "400 Bad Request",
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. (fault proxy)",
        ),
        _ => json_error(
            "400 Bad Request",
            "ThrottlingException",
            "Rate exceeded (fault proxy)",
        ),
    }
}

/// A server error as `service` gives it.
fn server_error(service: &str) -> Vec<u8> {
    match service {
        "s3" => s3_error(
            "500 Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again. (fault proxy)",
        ),
        "dynamodb" => json_error(
            "500 Internal Server Error",
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "Internal server error (fault proxy)",
        ),
        _ => json_error(
            "500 Internal Server Error",
            "InternalError",
            "Internal error (fault proxy)",
        ),
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The fault for the next request, if any.
    fn draw(&mut self, f: &Faults) -> Option<Fault> {
        let x = self.unit();
        let mut edge = 0.0;
        for (share, fault) in [
            (f.throttle, Fault::Throttle),
            (f.server_error, Fault::ServerError),
            (f.latency, Fault::Latency),
            (f.drop_request, Fault::DropRequest),
            (f.drop_answer, Fault::DropAnswer),
        ] {
            edge += share;
            if x < edge {
                return Some(fault);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_told_apart() {
        assert_eq!(
            service_of("post / http/1.1\r\nx-amz-target: dynamodb_20120810.getitem\r\n"),
            "dynamodb"
        );
        assert_eq!(
            service_of("post / http/1.1\r\nx-amz-target: amazonsqs.sendmessage\r\n"),
            "sqs"
        );
        assert_eq!(
            service_of(
                "put /b/k http/1.1\r\nauthorization: aws4-hmac-sha256 credential=test/20260101/us-east-1/s3/aws4_request, signedheaders=host\r\n"
            ),
            "s3"
        );
        assert_eq!(service_of("get / http/1.1\r\n"), "other");
    }

    #[test]
    fn shares_are_drawn_as_asked() {
        let f = Faults {
            throttle: 0.1,
            server_error: 0.1,
            latency: 0.0,
            drop_request: 0.05,
            drop_answer: 0.05,
            seed: 7,
        };
        let mut rng = Rng(f.seed | 1);
        let mut seen: BTreeMap<Option<Fault>, u32> = BTreeMap::new();
        for _ in 0..100_000 {
            *seen.entry(rng.draw(&f)).or_default() += 1;
        }
        let share = |k| f64::from(seen.get(&k).copied().unwrap_or(0)) / 100_000.0;
        assert!(
            (share(Some(Fault::Throttle)) - 0.1).abs() < 0.01,
            "{seen:?}"
        );
        assert!(
            (share(Some(Fault::ServerError)) - 0.1).abs() < 0.01,
            "{seen:?}"
        );
        assert!(
            (share(Some(Fault::DropAnswer)) - 0.05).abs() < 0.01,
            "{seen:?}"
        );
        assert_eq!(share(Some(Fault::Latency)), 0.0);
        assert!((share(None) - 0.7).abs() < 0.01, "{seen:?}");
    }
}
