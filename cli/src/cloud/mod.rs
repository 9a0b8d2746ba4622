//! The commands that work against a deployed stack: `deploy`, `register`, `launch`, and `list`,
//! `status`, `watch`, `logs`, `abort` and `signal` with `--stack`. The same commands reach AWS and
//! LocalStack (`--endpoint-url`).

pub mod deploy;
pub mod ops;

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use aws_config::{BehaviorVersion, SdkConfig};
use updraft_aws::Clients;

/// The stack name when none is given.
pub const DEFAULT_STACK: &str = "updraft";

/// Which deployment a command talks to (flags shared by the stack commands).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// The CloudFormation stack (default `updraft` for deploy, register and launch). For list, status,
    /// watch, logs, abort and signal, giving it (or UPDRAFT_STACK) means the stack instead of the
    /// local store.
    #[arg(long, env = "UPDRAFT_STACK")]
    pub stack: Option<String>,
    /// The AWS endpoint, e.g. LocalStack's `http://127.0.0.1:4566` (default: AWS, or AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The AWS region (default: the AWS configuration's, AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
}

impl Target {
    /// The stack's name.
    pub fn stack(&self) -> &str {
        self.stack.as_deref().unwrap_or(DEFAULT_STACK)
    }

    /// The AWS configuration: the environment's, with the endpoint and region given.
    pub async fn sdk(&self) -> SdkConfig {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).timeout_config(updraft_aws::timeouts());
        if let Some(u) = &self.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        loader.load().await
    }

    /// Where the stack lives, for messages.
    pub fn place(&self) -> String {
        match &self.endpoint_url {
            Some(u) => format!("stack `{}` at {u}", self.stack()),
            None => format!("stack `{}`", self.stack()),
        }
    }
}

/// A deployed stack: its outputs and clients for its table, queue and bucket.
pub struct Deployment {
    /// The stack's outputs by key (`BucketName`, `TableName`, `TransitionsQueueUrl`, …).
    pub outputs: BTreeMap<String, String>,
    /// Its table, transitions queue and bucket.
    pub clients: Clients,
    /// The stack's name.
    pub stack: String,
}

impl Deployment {
    /// An output of the stack, or an error naming it.
    pub fn output(&self, key: &str) -> anyhow::Result<&str> {
        self.outputs
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("stack `{}` has no output {key}", self.stack))
    }
}

/// A stack as CloudFormation describes it.
pub struct StackInfo {
    /// Its status, e.g. `CREATE_COMPLETE`.
    pub status: String,
    /// Its outputs by key.
    pub outputs: BTreeMap<String, String>,
    /// The keys of its parameters.
    pub parameters: Vec<String>,
}

/// The stack named `stack`, or `None` when there is no such stack.
pub async fn describe_stack(sdk: &SdkConfig, stack: &str) -> anyhow::Result<Option<StackInfo>> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let out = match cfn.describe_stacks().stack_name(stack).send().await {
        Ok(o) => o,
        Err(e) => {
            let text = aws_sdk_cloudformation::error::DisplayErrorContext(&e).to_string();
            if text.contains("does not exist") {
                return Ok(None);
            }
            bail!("CloudFormation DescribeStacks {stack}: {text}");
        }
    };
    let Some(s) = out.stacks.unwrap_or_default().into_iter().next() else {
        return Ok(None);
    };
    let status = s
        .stack_status
        .map(|x| x.as_str().to_string())
        .unwrap_or_default();
    let outputs = s
        .outputs
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| Some((o.output_key?, o.output_value?)))
        .collect();
    let parameters = s
        .parameters
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.parameter_key)
        .collect();
    Ok(Some(StackInfo {
        status,
        outputs,
        parameters,
    }))
}

/// Connects to the deployed stack `target` names.
pub async fn connect(target: &Target) -> anyhow::Result<Deployment> {
    let sdk = target.sdk().await;
    let stack = target.stack().to_string();
    let Some(StackInfo {
        status, outputs, ..
    }) = describe_stack(&sdk, &stack).await?
    else {
        bail!("no {} (deploy it with `updraft deploy`)", target.place());
    };
    if !status.ends_with("_COMPLETE") || status.contains("ROLLBACK") && !status.contains("UPDATE") {
        bail!("{} is {status}, not ready", target.place());
    }
    let get = |k: &str| {
        outputs
            .get(k)
            .cloned()
            .with_context(|| format!("{}: no output {k}", target.place()))
    };
    let clients = Clients::new(
        sdk,
        &get("TableName")?,
        &get("BucketName")?,
        &get("TransitionsQueueUrl")?,
    );
    Ok(Deployment {
        outputs,
        clients,
        stack,
    })
}

/// A runtime for the stack commands.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f))
}
