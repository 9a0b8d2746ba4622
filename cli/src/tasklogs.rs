//! Reads what a task attempt printed, from where the execution's history says its logs are: a local
//! file, a pod's primary container (the Kubernetes API), an AWS Batch job's CloudWatch log stream (named
//! by `DescribeJobs` once the job runs), a SageMaker job's or an EMR Serverless run's CloudWatch log
//! streams, a Qubole command's log (its API, with the settings' token), the `stdout` and `stderr` files
//! of an S3 log folder (an EMR Serverless run's). The console follows a running attempt's logs with
//! it, and `updraft logs --stack` prints them.
//!
//! Every source is read as one text that only grows; a reader asks for the bytes from an offset on and
//! gets at most [`CHUNK`] of them with the offset to ask from next.

use std::path::PathBuf;

use anyhow::Context;
use aws_config::SdkConfig;
use tokio::sync::OnceCell;
use updraft_connector::LogPlace;
use updraft_connector_eks::Cluster;
use updraft_connector_eks::EksConfig;
use updraft_connector_qubole::QuboleConnector;
use updraft_engine::exec::history::ExecutionView;

/// Most bytes one read returns.
pub const CHUNK: u64 = 1 << 20;

/// Log streams of one prefix read at most (a SageMaker job with more instances shows the first).
const MAX_STREAMS: i32 = 50;

/// Keys of an S3 log folder looked at, at most.
const MAX_KEYS: i32 = 1000;

/// Most bytes of one followed log kept between reads (a longer one is read again from its start
/// each time, as far as asked).
const KEEP_FOLLOWED: usize = 64 << 20;

/// What has been read of a log of several sources — a CloudWatch stream or the streams of a prefix,
/// the files of an S3 folder: what they printed in the order it was read, and where each source was
/// left. The text only grows, so offsets into it stay true while several sources grow at once (a
/// Spark driver's stdout and stderr).
#[derive(Default)]
struct Followed {
    text: Vec<u8>,
    /// Each CloudWatch stream's token to go on from.
    next: std::collections::HashMap<String, Option<String>>,
    /// Each S3 file read so far: its ETag, and the length and digest of its text appended.
    files: std::collections::HashMap<String, (String, usize, String)>,
    /// The source whose text was appended last.
    last: Option<String>,
}

impl Followed {
    /// The text so far from `offset` on (see [`slice`]); all of it forgotten past
    /// [`KEEP_FOLLOWED`] (read again from the start next time).
    fn chunk(&mut self, offset: u64) -> Chunk {
        let chunk = slice(&self.text, offset);
        if self.text.len() > KEEP_FOLLOWED {
            *self = Followed::default();
        }
        chunk
    }

    /// Appends what `source` printed since the last read, after a line naming it when the text
    /// turns to it from another source of a log that has several.
    fn append(&mut self, source: &str, several: bool, more: &[u8]) {
        if more.is_empty() {
            return;
        }
        if several && self.last.as_deref() != Some(source) {
            self.text
                .extend_from_slice(format!("== {source} ==\n").as_bytes());
        }
        self.text.extend_from_slice(more);
        self.last = Some(source.to_string());
    }
}

/// A followed log.
#[derive(Clone, PartialEq, Eq, Hash)]
enum FollowKey {
    /// A CloudWatch stream (`prefix` false) or the streams of a prefix: region, group, name.
    CloudWatch(Option<String>, String, String, bool),
    /// An S3 folder: bucket, prefix.
    S3(String, String),
}

/// Bytes read from `offset` on and the offset to read from next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The text (whole UTF-8 characters).
    pub text: String,
    /// The offset after it.
    pub next: u64,
}

/// What reads logs: the AWS identity, the cluster's settings (connected to on first use) and the
/// Qubole settings.
pub struct TaskLogs {
    sdk: SdkConfig,
    qubole: QuboleConnector,
    eks: Option<EksConfig>,
    kubeconfig: Option<PathBuf>,
    /// Whether files on this machine may be read (the local store's attempts; never a stack's).
    files: bool,
    cluster: OnceCell<Result<Cluster, String>>,
    /// The CloudWatch logs and S3 log folders read so far: a log followed while it runs is read on
    /// from where the last read stopped, not from its start again.
    followed: std::sync::Mutex<
        std::collections::HashMap<FollowKey, std::sync::Arc<tokio::sync::Mutex<Followed>>>,
    >,
}

/// The part of `bytes` from `offset` on, at most [`CHUNK`] long and cut at a character's end.
fn slice(bytes: &[u8], offset: u64) -> Chunk {
    let from = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let mut to = from.saturating_add(CHUNK as usize).min(bytes.len());
    // back to the start of a character the cut would split (a UTF-8 continuation byte is 10xxxxxx)
    while to > from && to < bytes.len() && bytes[to] & 0xC0 == 0x80 {
        to -= 1;
    }
    Chunk {
        text: String::from_utf8_lossy(&bytes[from..to]).into_owned(),
        next: to as u64,
    }
}

fn aws_error(what: &str, e: impl std::error::Error) -> String {
    format!(
        "{what}: {}",
        aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e)
    )
}

impl TaskLogs {
    /// A reader with the AWS identity `sdk`, the cluster of `eks` (its `cluster`, reached with that
    /// identity) or of `kubeconfig` (default: KUBECONFIG, `~/.kube/config`) and the `qubole` section of
    /// `settings`; `files`: whether a local file may be read.
    pub fn new(
        sdk: SdkConfig,
        settings: &updraft_settings::Settings,
        eks: Option<EksConfig>,
        kubeconfig: Option<PathBuf>,
        files: bool,
    ) -> Self {
        Self {
            qubole: QuboleConnector::new(&sdk, settings),
            sdk,
            eks,
            kubeconfig,
            files,
            cluster: OnceCell::new(),
            followed: std::sync::Mutex::default(),
        }
    }

    /// The reader of `updraft ui` and `updraft logs`: the AWS endpoint and region of `settings`'s `aws`
    /// section when it names them, else the stack's (or the environment's); the cluster of its `eks`
    /// section or of `kubeconfig`; Qubole's endpoint and token of its `qubole` section; local files
    /// only without a stack.
    pub async fn of(
        target: &crate::cloud::Target,
        settings: &updraft_settings::Settings,
        kubeconfig: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let eks = match &settings.eks {
            Some(_) => Some(crate::plan::eks_config(settings)?),
            None => None,
        };
        let sdk = if target.stack.is_some()
            && settings.aws.region.is_none()
            && settings.aws.endpoint.is_none()
        {
            target.sdk().await
        } else {
            updraft_connectors::sdk_config(settings).await
        };
        Ok(Self::new(
            sdk,
            settings,
            eks,
            kubeconfig,
            target.stack.is_none(),
        ))
    }

    /// Whether this reader can read `place` at all.
    pub fn can_read(&self, place: &LogPlace) -> bool {
        match place {
            LogPlace::File(_) => self.files,
            p => p.readable(),
        }
    }

    /// The text at `place` from `offset` on.
    pub async fn read(&self, place: &LogPlace, offset: u64) -> Result<Chunk, String> {
        let want = offset.saturating_add(CHUNK);
        let bytes = match place {
            LogPlace::File(p) if self.files => match std::fs::read(p) {
                Ok(b) => b,
                // not made yet: the attempt has printed nothing
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(format!("{}: {e}", p.display())),
            },
            LogPlace::Pod { namespace, name } => self
                .cluster()
                .await?
                .pod_log(namespace, name, want)
                .await
                .map_err(|e| e.to_string())?
                .into_bytes(),
            LogPlace::CloudWatch {
                region,
                group,
                prefix,
            } => return self.streams(Some(region), group, prefix, offset).await,
            LogPlace::BatchJob { region, job } => {
                return self.batch(region.as_deref(), job, offset).await;
            }
            LogPlace::QuboleCommand { endpoint, id } => {
                self.qubole.command_log(endpoint, *id).await?.into_bytes()
            }
            LogPlace::S3Folder { bucket, prefix } => {
                return self.s3_folder(bucket, prefix, offset).await;
            }
            p => return Err(format!("cannot read `{p}` from here")),
        };
        Ok(slice(&bytes, offset))
    }

    async fn cluster(&self) -> Result<&Cluster, String> {
        self.cluster
            .get_or_init(|| async {
                let eks = self.eks.as_ref().and_then(|e| e.cluster.as_ref());
                let made = match (&self.kubeconfig, eks) {
                    (None, Some(c)) => Cluster::from_eks(c, &self.sdk).await,
                    (k, _) => Cluster::from_kubeconfig(k.as_deref()).await,
                };
                made.map_err(|e| format!("cannot reach the cluster for a pod's logs: {e}"))
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    fn logs_client(&self, region: Option<&str>) -> aws_sdk_cloudwatchlogs::Client {
        let mut conf = aws_sdk_cloudwatchlogs::config::Builder::from(&self.sdk);
        if let Some(r) = region {
            conf = conf.region(aws_sdk_cloudwatchlogs::config::Region::new(r.to_string()));
        }
        aws_sdk_cloudwatchlogs::Client::from_conf(conf.build())
    }

    /// An AWS Batch job's log stream (the job's `awslogs-group`, default `/aws/batch/job`); nothing
    /// before the job runs.
    async fn batch(&self, region: Option<&str>, job: &str, offset: u64) -> Result<Chunk, String> {
        let mut conf = aws_sdk_batch::config::Builder::from(&self.sdk);
        if let Some(r) = region {
            conf = conf.region(aws_sdk_batch::config::Region::new(r.to_string()));
        }
        let out = aws_sdk_batch::Client::from_conf(conf.build())
            .describe_jobs()
            .jobs(job)
            .send()
            .await
            .map_err(|e| aws_error(&format!("DescribeJobs {job}"), e))?;
        let Some(container) = out.jobs().first().and_then(|j| j.container()) else {
            return Err(format!(
                "AWS Batch has no job {job} (or it is an array's parent)"
            ));
        };
        let Some(stream) = container.log_stream_name().filter(|s| !s.is_empty()) else {
            return Ok(slice(&[], offset));
        };
        let group = container
            .log_configuration()
            .and_then(|c| c.options())
            .and_then(|o| o.get("awslogs-group"))
            .map_or("/aws/batch/job", String::as_str);
        let key = FollowKey::CloudWatch(
            region.map(String::from),
            group.to_string(),
            stream.to_string(),
            false,
        );
        let client = self.logs_client(region);
        self.follow(
            key,
            &client,
            group,
            async { Ok(vec![stream.to_string()]) },
            offset,
        )
        .await
    }

    /// A followed CloudWatch log from `offset` on: what earlier reads found and, while that ends
    /// before the chunk asked for, the events that came since in each of its `streams` (from the
    /// token each stopped at), a stream's after a line naming it when the log has several.
    async fn follow(
        &self,
        key: FollowKey,
        client: &aws_sdk_cloudwatchlogs::Client,
        group: &str,
        streams: impl std::future::Future<Output = Result<Vec<String>, String>>,
        offset: u64,
    ) -> Result<Chunk, String> {
        let want = offset.saturating_add(CHUNK);
        let log = self.followed(&key);
        let mut read = log.lock().await;
        if (read.text.len() as u64) < want {
            let streams = streams.await?;
            for s in &streams {
                read.next.entry(s.clone()).or_default();
            }
            for s in &streams {
                if read.text.len() as u64 >= want {
                    break;
                }
                // A stream's events are kept with the token past them, only once their read
                // succeeds (the next read would add them again).
                let mut more = Vec::new();
                let token = read.next.get(s).cloned().flatten();
                let next = read_stream(
                    client,
                    group,
                    s,
                    want - read.text.len() as u64,
                    &mut more,
                    token,
                )
                .await?;
                let several = read.next.len() > 1;
                read.append(s, several, &more);
                read.next.insert(s.clone(), next);
            }
        }
        Ok(read.chunk(offset))
    }

    /// What has been read of `key` so far (its own lock: a slow read holds up only the pages that
    /// follow the same log).
    fn followed(&self, key: &FollowKey) -> std::sync::Arc<tokio::sync::Mutex<Followed>> {
        self.followed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The streams of `group` whose names start with `prefix` (see [`TaskLogs::follow`]).
    async fn streams(
        &self,
        region: Option<&str>,
        group: &str,
        prefix: &str,
        offset: u64,
    ) -> Result<Chunk, String> {
        let client = self.logs_client(region);
        let listed = async {
            let out = client
                .describe_log_streams()
                .log_group_name(group)
                .log_stream_name_prefix(prefix)
                .limit(MAX_STREAMS)
                .send()
                .await;
            match out {
                Ok(o) => Ok(o
                    .log_streams()
                    .iter()
                    .filter_map(|s| s.log_stream_name().map(String::from))
                    .collect()),
                // no group yet: the job has not logged
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    Ok(Vec::new())
                }
                Err(e) => Err(aws_error(&format!("DescribeLogStreams {group}"), e)),
            }
        };
        let key = FollowKey::CloudWatch(
            region.map(String::from),
            group.to_string(),
            prefix.to_string(),
            true,
        );
        self.follow(key, &client, group, listed, offset).await
    }
}

impl TaskLogs {
    /// The `stdout` and `stderr` files under an S3 folder (gzipped ones unpacked), the driver's
    /// (`SPARK_DRIVER/`) first, each under a line naming it when there are several; nothing while
    /// the folder is empty or missing. A file is read again only when its ETag changes (EMR
    /// Serverless uploads a running driver's logs again as they grow), and only what it holds beyond
    /// the text already appended is appended; a file rewritten otherwise is appended whole again.
    async fn s3_folder(&self, bucket: &str, prefix: &str, offset: u64) -> Result<Chunk, String> {
        let want = offset.saturating_add(CHUNK);
        let log = self.followed(&FollowKey::S3(bucket.to_string(), prefix.to_string()));
        let mut read = log.lock().await;
        if read.text.len() as u64 >= want {
            return Ok(read.chunk(offset));
        }
        let client = aws_sdk_s3::Client::new(&self.sdk);
        let listed = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(MAX_KEYS)
            .send()
            .await
            .map_err(|e| aws_error(&format!("ListObjectsV2 s3://{bucket}/{prefix}"), e))?;
        let mut files: Vec<(&str, &str)> = listed
            .contents()
            .iter()
            .filter_map(|o| Some((o.key()?, o.e_tag().unwrap_or_default())))
            .filter(|(k, _)| {
                let file = k.rsplit('/').next().unwrap_or(k);
                matches!(file, "stdout" | "stderr" | "stdout.gz" | "stderr.gz")
            })
            .collect();
        let within = |k: &str| k.strip_prefix(prefix).unwrap_or(k).to_string();
        files.sort_by_key(|(k, _)| (!within(k).starts_with("SPARK_DRIVER/"), *k));
        let several = files.len() > 1;
        for (key, etag) in files {
            if read.text.len() as u64 >= want {
                break;
            }
            let name = within(key);
            let seen = read.files.get(&name).cloned();
            if seen.as_ref().is_some_and(|(e, _, _)| e == etag) {
                continue;
            }
            let object = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| aws_error(&format!("GetObject s3://{bucket}/{key}"), e))?;
            let body = object
                .body
                .collect()
                .await
                .map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))?
                .into_bytes();
            let full = if key.ends_with(".gz") {
                use std::io::Read;
                let mut out = Vec::new();
                flate2::read::MultiGzDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .map_err(|e| format!("unpacking s3://{bucket}/{key}: {e}"))?;
                out
            } else {
                body.to_vec()
            };
            // what was appended before, if the file still starts with it
            let grown = seen.as_ref().and_then(|(_, len, digest)| {
                full.get(..*len)
                    .filter(|p| updraft_aws::short_digest(p) == *digest)
                    .map(|_| *len)
            });
            match (seen, grown) {
                (Some(_), None) => read.append(&format!("{name} (rewritten)"), true, &full),
                (_, had) => read.append(&name, several, &full[had.unwrap_or(0)..]),
            }
            let digest = updraft_aws::short_digest(&full);
            read.files
                .insert(name, (etag.to_string(), full.len(), digest));
        }
        Ok(read.chunk(offset))
    }
}

/// Appends the events of one stream, a line each, from `token` on (its start without one), until
/// `text` holds `want` bytes or the stream ends; the token to go on from next time.
async fn read_stream(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    want: u64,
    text: &mut Vec<u8>,
    mut token: Option<String>,
) -> Result<Option<String>, String> {
    loop {
        let out = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| aws_error(&format!("GetLogEvents {group} {stream}"), e))?;
        for e in out.events() {
            text.extend_from_slice(e.message().unwrap_or_default().as_bytes());
            text.push(b'\n');
        }
        let next = out.next_forward_token().map(String::from);
        // the same token again: the stream's end (for now), new events come after it (a page can be
        // empty before the end: CloudWatch says where to go on)
        if next.is_none() || next == token {
            return Ok(next.or(token));
        }
        if text.len() as u64 >= want {
            return Ok(next);
        }
        token = next;
    }
}

/// `updraft logs <exec> <node> --stack S`: what an attempt of `node` printed (the last one unless
/// `attempt`; `index`: a map's element), each readable log after a `==> … <==` line as a local attempt's
/// are printed; the attempt's other log places (console pages) are named.
pub async fn print_attempt(
    reader: &TaskLogs,
    view: &ExecutionView,
    node: &str,
    attempt: Option<u32>,
    index: Option<u32>,
) -> anyhow::Result<std::process::ExitCode> {
    let n = view
        .nodes
        .iter()
        .find(|n| n.id == node)
        .with_context(|| format!("execution {} has no node `{node}`", view.name))?;
    let attempts = n.attempts_of(index);
    let what = match index {
        Some(i) => format!("{node}[{i}]"),
        None => node.to_string(),
    };
    let a = match attempt {
        Some(k) => attempts
            .iter()
            .find(|a| a.attempt == k)
            .with_context(|| format!("{what} of {} has no attempt {k}", view.name))?,
        None => attempts
            .last()
            .with_context(|| format!("{what} of {} has run no task attempt", view.name))?,
    };
    let mut shown = 0;
    let mut unread = Vec::new();
    for l in &a.logs {
        let place = updraft_connector::LogPlace::parse(l);
        if !reader.can_read(&place) {
            eprintln!("updraft: {what} attempt {} logs at {l}", a.attempt);
            continue;
        }
        let mut offset = 0;
        let mut first = true;
        loop {
            let chunk = match reader.read(&place, offset).await {
                Ok(c) => c,
                // the others are still printed; the reason is said, and the exit code shows it
                Err(e) => {
                    eprintln!(
                        "updraft: cannot read {what} attempt {}'s logs at {l}: {e}",
                        a.attempt
                    );
                    unread.push(l);
                    break;
                }
            };
            if first {
                out!("==> {what} attempt {} {} <==", a.attempt, place.label());
                first = false;
            }
            out_raw!("{}", chunk.text);
            if chunk.next == offset {
                shown += 1;
                break;
            }
            offset = chunk.next;
        }
    }
    if shown == 0 && a.logs.is_empty() {
        anyhow::bail!(
            "{what} attempt {} of {} names no logs (it has not started, or its service keeps none \
             Updraft knows of)",
            a.attempt,
            view.name
        );
    }
    if !unread.is_empty() {
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_log_only_grows_and_names_a_source_when_it_turns_to_it() {
        let mut log = Followed::default();
        log.append("out", false, b"one\n");
        log.append("out", true, b"");
        log.append("err", true, b"two\n");
        log.append("err", true, b"three\n");
        log.append("out", true, b"four\n");
        assert_eq!(
            log.chunk(0).text,
            "one\n== err ==\ntwo\nthree\n== out ==\nfour\n"
        );
    }

    #[test]
    fn a_chunk_ends_at_a_characters_end_and_says_where_to_go_on() {
        let text = "é".repeat(CHUNK as usize); // two bytes each
        let b = text.as_bytes();
        let c = slice(b, 1);
        // from the middle of a character: it shows as replaced; the end is whole
        assert_eq!(c.next, CHUNK);
        assert!(c.text.ends_with('é'));
        let c = slice(b, 2);
        assert_eq!(c.next, CHUNK + 2);
        assert!(!c.text.contains('\u{FFFD}'));
        let c = slice(b"abc", 1);
        assert_eq!((c.text.as_str(), c.next), ("bc", 3));
        let c = slice(b"abc", 9);
        assert_eq!((c.text.as_str(), c.next), ("", 3));
    }
}
