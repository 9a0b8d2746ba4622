//! moto with job lifecycles (`localstack/moto-up`: Batch containers run as local processes) on a free
//! port, with an S3 bucket and a Batch job queue, for tests of the AWS Batch connector; stopped on drop
//! (`localstack/moto-down`). Needs `UPDRAFT_TEST_MOTO` (the Python of `localstack/moto-env`, set by
//! `scripts/test`); fails, saying so, without it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod qubole;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("localstack/moto-up").is_file())
        .expect("the repository root")
        .to_path_buf()
}

/// The bucket attempts' data go to.
pub const BUCKET: &str = "updraft-data";
/// The job queue.
pub const QUEUE: &str = "updraft-jobs";
/// The job role (moto does not check it).
pub const ROLE: &str = "arn:aws:iam::123456789012:role/updraft-batch-job";

/// A running moto.
pub struct Moto {
    /// Its endpoint.
    pub endpoint: String,
    port: u16,
    /// Where its jobs' output goes.
    pub job_logs: PathBuf,
}

impl Moto {
    /// Starts moto, its jobs' processes seeing `path` first on `PATH` and `pythonpath` as
    /// `PYTHONPATH`; makes the bucket and the queue.
    pub fn start(path: &[PathBuf], pythonpath: &[PathBuf]) -> Moto {
        Self::start_with(path, pythonpath, &[])
    }

    /// As [`Moto::start`], with more environment for its jobs' processes (e.g. `FLYTE_AWS_ENDPOINT`
    /// and `AWS_ENDPOINT_URL` naming another S3 than moto's).
    pub fn start_with(path: &[PathBuf], pythonpath: &[PathBuf], env: &[(&str, &str)]) -> Moto {
        let python = std::env::var("UPDRAFT_TEST_MOTO").unwrap_or_else(|_| {
            panic!(
                "UPDRAFT_TEST_MOTO is not set: run the tests with `bash scripts/test`, which \
                 prepares moto (localstack/moto-env)"
            )
        });
        let venv = Path::new(&python).parent().and_then(Path::parent).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let job_logs = std::env::temp_dir().join(format!("updraft-moto-jobs-{port}"));
        let mut dirs = path.to_vec();
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let out = Command::new("bash")
            .arg(repo().join("localstack/moto-up"))
            .args(["--port", &port.to_string()])
            .env("UPDRAFT_MOTO_VENV", venv)
            .env("PATH", std::env::join_paths(dirs).unwrap())
            .env("PYTHONPATH", std::env::join_paths(pythonpath).unwrap())
            .env("UPDRAFT_MOTO_JOB_LOGS", &job_logs)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("UPDRAFT_MOTO_LIFECYCLE")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "localstack/moto-up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(endpoint, format!("http://127.0.0.1:{port}"));
        let m = Moto {
            endpoint,
            port,
            job_logs,
        };
        m.prepare();
        m
    }

    /// The SDK configuration that reaches it.
    pub fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::for_tests(),
                ),
            )
            .build()
    }

    /// A settings file's text for this moto: data in the bucket, the queue, the role.
    pub fn settings(&self) -> String {
        format!(
            "data: {{prefix: 's3://{BUCKET}/runs'}}\naws: {{region: us-east-1, endpoint: '{}'}}\n\
             batch: {{jobQueue: {QUEUE}, jobRoleArn: '{ROLE}'}}\n",
            self.endpoint
        )
    }

    /// Changes lifecycle settings (`POST /_updraft/lifecycle`).
    pub fn lifecycle(&self, settings: serde_json::Value) {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
            ])
            .arg(settings.to_string())
            .arg(format!("{}/_updraft/lifecycle", self.endpoint))
            .output()
            .unwrap();
        assert!(out.status.success(), "lifecycle settings refused");
    }

    /// Runs `code` with boto3 in moto's Python: `endpoint` and `kw` (the client arguments that reach
    /// this moto) are defined, `args` is `sys.argv[1:]`; what it prints is JSON.
    pub fn boto(&self, code: &str, args: &[&str]) -> serde_json::Value {
        let prelude = "import boto3, json, sys\nendpoint = sys.argv[1]\nargs = sys.argv[2:]\n\
                       kw = dict(endpoint_url=endpoint, region_name='us-east-1', \
                       aws_access_key_id='testing', aws_secret_access_key='testing')\n";
        let out = Command::new(std::env::var("UPDRAFT_TEST_MOTO").unwrap())
            .arg("-c")
            .arg(format!("{prelude}{code}"))
            .arg(&self.endpoint)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 against moto failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn prepare(&self) {
        // The compute environment's service role must exist (boto3 of moto's environment makes it).
        let python = std::env::var("UPDRAFT_TEST_MOTO").unwrap();
        let made = Command::new(python)
            .args([
                "-c",
                "import boto3, sys; boto3.client('iam', endpoint_url=sys.argv[1], region_name='us-east-1', \
                 aws_access_key_id='testing', aws_secret_access_key='testing').create_role(\
                 RoleName=sys.argv[2], AssumeRolePolicyDocument='{}')",
                &self.endpoint,
                ROLE.rsplit('/').next().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "cannot make the role: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sdk = self.sdk();
        rt.block_on(async {
            let s3 = aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(true)
                    .build(),
            );
            s3.create_bucket().bucket(BUCKET).send().await.unwrap();
            let batch = aws_sdk_batch::Client::new(&sdk);
            let ce = batch
                .create_compute_environment()
                .compute_environment_name("updraft-ce")
                .r#type(aws_sdk_batch::types::CeType::Unmanaged)
                .state(aws_sdk_batch::types::CeState::Enabled)
                .service_role(ROLE)
                .send()
                .await
                .unwrap();
            batch
                .create_job_queue()
                .job_queue_name(QUEUE)
                .state(aws_sdk_batch::types::JqState::Enabled)
                .priority(1)
                .compute_environment_order(
                    aws_sdk_batch::types::ComputeEnvironmentOrder::builder()
                        .order(1)
                        .compute_environment(ce.compute_environment_arn().unwrap())
                        .build(),
                )
                .send()
                .await
                .unwrap();
        });
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("localstack/moto-down"))
            .args(["--port", &self.port.to_string()])
            .output();
    }
}
