//! Where an attempt's logs are, in the forms an execution's history records them: text a person can
//! follow (a file, a `kubectl logs` command, a console page) that a reader (the console) can also parse
//! back into the place to read from. One format, written and read here.

use std::fmt;
use std::path::PathBuf;

/// A place that holds an attempt's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPlace {
    /// A file on this machine (a local attempt's `stdout.log`): its absolute path.
    File(PathBuf),
    /// A Kubernetes pod's logs (its primary container's): written `kubectl logs --namespace NS NAME`.
    Pod {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
    },
    /// The CloudWatch log streams of a group whose names start with a prefix (a SageMaker job's):
    /// written as the CloudWatch console's page of them.
    CloudWatch {
        /// The region of the log group.
        region: String,
        /// The log group, e.g. `/aws/sagemaker/TrainingJobs`.
        group: String,
        /// The streams' common prefix, e.g. the job's name.
        prefix: String,
    },
    /// An AWS Batch job, whose log stream Batch names once the job runs (`DescribeJobs`): written as
    /// the Batch console's page of the job.
    BatchJob {
        /// The job's region, when known.
        region: Option<String>,
        /// The job's id.
        job: String,
    },
    /// A Qubole command, whose log its API serves (`GET /api/v1.2/commands/<id>/logs`): written as its
    /// Analyze page, `<endpoint>/v2/analyze?command_id=<id>`.
    QuboleCommand {
        /// The Qubole endpoint it ran on, e.g. `https://api.qubole.com`.
        endpoint: String,
        /// The command's id.
        id: i64,
    },
    /// An S3 folder of log files (an EMR Serverless run's `<logUri>/applications/<app>/jobs/<run>/`):
    /// written `s3://<bucket>/<prefix>`, the prefix ending in `/`. Its `stdout` and `stderr` files
    /// (gzipped or not) are read.
    S3Folder {
        /// The bucket.
        bucket: String,
        /// The folder's key prefix, ending in `/`.
        prefix: String,
    },
    /// Anything else (a console page, an S3 object): shown, not read.
    Other(String),
}

const CLOUDWATCH: &str = "/cloudwatch/home?region=";
const GROUP: &str = "#logsV2:log-groups/log-group/";
const FILTER: &str = "$3FlogStreamNameFilter$3D";
const BATCH: &str = "/batch/home";
const BATCH_JOB: &str = "#jobs/detail/";
const ANALYZE: &str = "/v2/analyze?command_id=";

/// `text` as the CloudWatch console writes a part of its address: percent-encoded, with `%` as `$25`.
fn console_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("$25{b:02X}"));
        }
    }
    out
}

/// The inverse of [`console_encode`]; `None` for text it cannot have made.
fn console_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'$' {
            let hex = tail.get(2..4)?;
            if &tail[..2] != b"25" {
                return None;
            }
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[4..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The region of a console address `https://<region>.console.aws.amazon.com…`.
fn console_region(host: &str) -> Option<String> {
    let r = host.strip_suffix(".console.aws.amazon.com")?;
    (!r.is_empty() && !r.contains('.')).then(|| r.to_string())
}

impl LogPlace {
    /// The place `text` (as [`fmt::Display`] writes it) names; [`LogPlace::Other`] for anything else.
    pub fn parse(text: &str) -> Self {
        Self::parsed(text).unwrap_or_else(|| Self::Other(text.to_string()))
    }

    fn parsed(text: &str) -> Option<Self> {
        if text.starts_with('/') {
            return Some(Self::File(PathBuf::from(text)));
        }
        if let Some(rest) = text.strip_prefix("kubectl logs --namespace ") {
            let mut words = rest.split(' ');
            let (namespace, name) = (words.next()?, words.next()?);
            if words.next().is_some() || namespace.is_empty() || name.is_empty() {
                return None;
            }
            return Some(Self::Pod {
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/')?;
            let folder = prefix.ends_with('/') && !prefix.starts_with('/');
            return (folder && !bucket.is_empty()).then(|| Self::S3Folder {
                bucket: bucket.into(),
                prefix: prefix.into(),
            });
        }
        if let Some((endpoint, id)) = text.split_once(ANALYZE) {
            let web = endpoint.starts_with("https://") || endpoint.starts_with("http://");
            let id = id
                .parse()
                .ok()
                .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))?;
            return web.then(|| Self::QuboleCommand {
                endpoint: endpoint.into(),
                id,
            });
        }
        let rest = text.strip_prefix("https://")?;
        let (host, path) = rest.split_at(rest.find('/')?);
        if let Some(rest) = path.strip_prefix(CLOUDWATCH) {
            let region = console_region(host)?;
            let (r, rest) = rest.split_at(rest.find('#')?);
            let (group, prefix) = rest.strip_prefix(GROUP)?.split_once(FILTER)?;
            return (r == region).then_some(Self::CloudWatch {
                region,
                group: console_decode(group)?,
                prefix: console_decode(prefix)?,
            });
        }
        let rest = path.strip_prefix(BATCH)?;
        let region = match host {
            "console.aws.amazon.com" => None,
            h => Some(console_region(h)?),
        };
        let (_, job) = rest.split_once(BATCH_JOB)?;
        (!job.is_empty() && !job.contains(['/', '#', '?'])).then(|| Self::BatchJob {
            region,
            job: job.into(),
        })
    }

    /// Whether a reader can fetch the logs' text (not a page only shown).
    pub fn readable(&self) -> bool {
        !matches!(self, Self::Other(_))
    }

    /// A short name for the place, for a tab or a heading: a file's name, `pod NAME`, a group's last
    /// part and prefix, `batch job ID`.
    pub fn label(&self) -> String {
        match self {
            Self::File(p) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into()),
            Self::Pod { name, .. } => format!("pod {name}"),
            Self::CloudWatch { group, prefix, .. } => {
                format!("{} {prefix}", group.rsplit('/').next().unwrap_or(group))
            }
            Self::BatchJob { job, .. } => format!("batch job {job}"),
            Self::QuboleCommand { id, .. } => format!("qubole command {id}"),
            Self::S3Folder { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
            Self::Other(t) => t.clone(),
        }
    }
}

impl fmt::Display for LogPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Pod { namespace, name } => {
                write!(f, "kubectl logs --namespace {namespace} {name}")
            }
            Self::CloudWatch {
                region,
                group,
                prefix,
            } => write!(
                f,
                "https://{region}.console.aws.amazon.com{CLOUDWATCH}{region}{GROUP}{}{FILTER}{}",
                console_encode(group),
                console_encode(prefix)
            ),
            Self::BatchJob {
                region: Some(r),
                job,
            } => write!(
                f,
                "https://{r}.console.aws.amazon.com{BATCH}?region={r}{BATCH_JOB}{job}"
            ),
            Self::BatchJob { region: None, job } => {
                write!(f, "https://console.aws.amazon.com{BATCH}{BATCH_JOB}{job}")
            }
            Self::QuboleCommand { endpoint, id } => write!(f, "{endpoint}{ANALYZE}{id}"),
            Self::S3Folder { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Other(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_place_reads_back_from_what_it_writes() {
        let places = [
            LogPlace::File("/tmp/run/n0/1/stdout.log".into()),
            LogPlace::Pod {
                namespace: "flyte".into(),
                name: "exec-n0-0".into(),
            },
            LogPlace::CloudWatch {
                region: "eu-west-1".into(),
                group: "/aws/sagemaker/TrainingJobs".into(),
                prefix: "train-a1 b$%".into(),
            },
            LogPlace::BatchJob {
                region: Some("us-east-1".into()),
                job: "4f1c-9a".into(),
            },
            LogPlace::BatchJob {
                region: None,
                job: "4f1c-9a".into(),
            },
            LogPlace::QuboleCommand {
                endpoint: "https://api.qubole.com".into(),
                id: 81234,
            },
            LogPlace::QuboleCommand {
                endpoint: "http://127.0.0.1:8080".into(),
                id: 1,
            },
            LogPlace::S3Folder {
                bucket: "logs".into(),
                prefix: "emr/applications/a1/jobs/r1/".into(),
            },
        ];
        for p in places {
            assert_eq!(LogPlace::parse(&p.to_string()), p, "{p}");
            assert!(p.readable());
        }
    }

    #[test]
    fn the_console_addresses_are_the_consoles() {
        let p = LogPlace::CloudWatch {
            region: "us-east-1".into(),
            group: "/aws/sagemaker/TrainingJobs".into(),
            prefix: "job-1".into(),
        };
        assert_eq!(
            p.to_string(),
            "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:\
             log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3Djob-1"
        );
        assert_eq!(p.label(), "TrainingJobs job-1");
    }

    #[test]
    fn anything_else_is_shown_not_read() {
        for text in [
            "s3://bucket/logs/stdout.gz",
            "s3://bucket//logs/",
            "s3:///logs/",
            "s3://bucket",
            "https://us-east-1.console.aws.amazon.com/athena/home?region=us-east-1#/query-editor",
            "https://us-east-1.console.aws.amazon.com/batch/home?region=us-east-1#jobs/detail/",
            "https://evil.example/cloudwatch/home?region=x#logsV2:log-groups/log-group/a$3FlogStreamNameFilter$3Db",
            "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/$2",
            "kubectl logs --namespace flyte",
            "kubectl logs --namespace a b c",
            "https://api.qubole.com/v2/analyze?command_id=",
            "https://api.qubole.com/v2/analyze?command_id=+12",
            "https://api.qubole.com/v2/analyze?command_id=12&x=1",
            "ftp://api.qubole.com/v2/analyze?command_id=12",
            "relative/file.log",
            "",
        ] {
            let p = LogPlace::parse(text);
            assert_eq!(p, LogPlace::Other(text.into()), "{text}");
            assert!(!p.readable());
            assert_eq!(p.to_string(), text);
        }
    }
}
