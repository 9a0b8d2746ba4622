//! `updraft deploy`: builds (or takes) the three functions' `bootstrap` zips, uploads them to a code
//! bucket, creates or updates the CloudFormation stack of `infra/updraft.yaml`, follows its events until
//! it settles, and prints its outputs as JSON.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};

use super::{Target, describe_stack};

/// The stack's template (embedded, so an installed `updraft` deploys without a checkout).
pub const TEMPLATE: &str = include_str!("../../../infra/updraft.yaml");

/// The functions, by the name of their binary and zip.
pub const FUNCTIONS: [&str; 3] = ["launch", "transition", "events"];

/// True when the template declares parameter `key`.
fn has_parameter(key: &str) -> bool {
    TEMPLATE.contains(&format!("\n  {key}:\n    Type:"))
}

/// The functions' architecture (`--arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// Graviton (cheaper per GB-second on AWS).
    Arm64,
    /// x86-64.
    #[value(name = "x86_64")]
    X86_64,
}

impl Arch {
    /// The stack parameter's value.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// This machine's architecture, when it is one Lambda runs.
    pub fn host() -> Option<Self> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The ELF `e_machine` of its binaries.
    fn elf_machine(self) -> u16 {
        match self {
            Arch::Arm64 => 0xB7,
            Arch::X86_64 => 0x3E,
        }
    }
}

/// What `updraft deploy` was asked.
pub struct DeployArgs {
    /// The stack and where.
    pub target: Target,
    /// The functions' architecture.
    pub arch: Option<Arch>,
    /// A folder with the functions (`launch`, `transition`, `events` as executables or `.zip`s).
    pub bundle: Option<PathBuf>,
    /// The bucket for the zips.
    pub code_bucket: Option<String>,
    /// The settings file's contents, when one was given: its `eks` section becomes the EksSettings
    /// parameter, `sagemaker.roleArn` SageMakerRoleArn, `batch.jobQueue` BatchJobQueueArns,
    /// `qubole.tokenSecretArn` QuboleTokenSecretArn, `emrServerless.executionRoleArn`
    /// EmrServerlessRoleArns and `athena.workgroup` AthenaWorkgroupArns (a `--parameter` of the same
    /// name wins). `qubole.token` is refused: a stack reads the token from Secrets Manager.
    pub settings: Option<updraft_settings::Settings>,
    /// Further parameters, `Key=Value`.
    pub parameters: Vec<String>,
}

/// Runs `updraft deploy`.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let arch = match args.arch {
        Some(a) => a,
        None => {
            Arch::host().context("give --arch (this machine's architecture is not Lambda's)")?
        }
    };
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    params.insert("Architecture".into(), arch.name().into());
    // A job queue given by name becomes an ARN once the account is known (below).
    let mut queue_name = None;
    // So does an Athena workgroup.
    let mut workgroup = None;
    if let Some(s) = &args.settings {
        if let Some(eks) = &s.eks {
            params.insert("EksSettings".into(), serde_json::to_string(eks)?);
        }
        if let Some(role) = &s.sagemaker.role_arn {
            params.insert("SageMakerRoleArn".into(), role.clone());
        }
        if let Some(role) = &s.batch.execution_role_arn {
            params.insert("BatchExecutionRoleArn".into(), role.clone());
        }
        if let Some(role) = &s.batch.job_role_arn {
            params.insert("BatchJobRoleArn".into(), role.clone());
        }
        if s.qubole.token.is_some() {
            bail!(
                "qubole.token: a deployed stack reads the Qubole token from Secrets Manager, so it \
                 never lies in the stack's configuration; store it in a secret and set \
                 qubole.tokenSecretArn instead"
            );
        }
        if let Some(arn) = &s.qubole.token_secret_arn {
            params.insert("QuboleTokenSecretArn".into(), arn.clone());
        }
        if let Some(role) = &s.emr_serverless.execution_role_arn {
            params.insert("EmrServerlessRoleArns".into(), role.clone());
        }
        workgroup = s.athena.workgroup.clone();
        match &s.batch.job_queue {
            Some(q) if q.starts_with("arn:") => {
                params.insert("BatchJobQueueArns".into(), q.clone());
            }
            Some(q) => queue_name = Some(q.clone()),
            None => {}
        }
        // The connectors' sections; where data live and the cluster are the stack's own.
        let services = updraft_settings::Settings {
            aws: s.aws.clone(),
            batch: s.batch.clone(),
            sagemaker: s.sagemaker.clone(),
            athena: s.athena.clone(),
            hive: s.hive.clone(),
            qubole: s.qubole.clone(),
            emr_serverless: s.emr_serverless.clone(),
            ..Default::default()
        };
        params.insert("ServiceSettings".into(), services.to_json());
    }
    let given: Vec<String> = args
        .parameters
        .iter()
        .filter_map(|p| p.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    for p in &args.parameters {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--parameter `{p}`: write Key=Value"))?;
        if !has_parameter(k) {
            bail!("--parameter `{k}`: the template has no such parameter");
        }
        params.insert(k.into(), v.into());
    }

    let dir = match &args.bundle {
        Some(d) => d.clone(),
        None => build(arch)?,
    };
    let mut zips = Vec::new();
    for f in FUNCTIONS {
        zips.push((f, function_zip(&dir, f, arch)?));
    }

    let sdk = args.target.sdk().await;
    if let Some(q) = queue_name.filter(|_| !given.iter().any(|k| k == "BatchJobQueueArns")) {
        params.insert("BatchJobQueueArns".into(), queue_arn(&sdk, &q).await?);
    }
    if let Some(wg) = workgroup.filter(|_| !given.iter().any(|k| k == "AthenaWorkgroupArns")) {
        let (account, region) = account_region(&sdk).await?;
        params.insert(
            "AthenaWorkgroupArns".into(),
            format!(
                "arn:{}:athena:{region}:{account}:workgroup/{wg}",
                if region.starts_with("cn-") {
                    "aws-cn"
                } else if region.starts_with("us-gov-") {
                    "aws-us-gov"
                } else {
                    "aws"
                }
            ),
        );
    }
    let stack = args.target.stack().to_string();
    let bucket = match &args.code_bucket {
        Some(b) => b.clone(),
        None => {
            let (account, region) = account_region(&sdk).await?;
            format!("updraft-code-{account}-{region}")
        }
    };
    let s3 = updraft_aws::s3_client(&sdk);
    ensure_bucket(&s3, &bucket, sdk.region().map(|r| r.as_ref())).await?;
    for (f, bytes) in &zips {
        let hex = updraft_aws::short_digest(bytes);
        let key = format!("{stack}/{f}-{}-{hex}.zip", arch.name());
        upload(&s3, &bucket, &key, bytes).await?;
        let param = format!("{}{}CodeKey", f[..1].to_uppercase(), &f[1..]);
        params.insert(param, key);
    }
    params.insert("CodeBucket".into(), bucket.clone());

    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let existing = describe_stack(&sdk, &stack).await?;
    let mut parameters: Vec<Parameter> = params
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect();
    // An update keeps the values of parameters not given this time.
    for key in existing.iter().flat_map(|s| &s.parameters) {
        if !params.contains_key(key) && has_parameter(key) {
            parameters.push(
                Parameter::builder()
                    .parameter_key(key)
                    .use_previous_value(true)
                    .build(),
            );
        }
    }
    if let Some(info) = &existing
        && info.status == "ROLLBACK_COMPLETE"
    {
        bail!(
            "{} is ROLLBACK_COMPLETE (its creation failed); delete it, then deploy again",
            args.target.place()
        );
    }
    let since = aws_sdk_cloudformation::primitives::DateTime::from(std::time::SystemTime::now());
    let creating = existing.is_none();
    if creating {
        eprintln!("updraft: creating {}", args.target.place());
        cfn.create_stack()
            .stack_name(&stack)
            .template_body(TEMPLATE)
            .set_parameters(Some(parameters))
            .capabilities(Capability::CapabilityIam)
            .tags(
                aws_sdk_cloudformation::types::Tag::builder()
                    .key("updraft:stack")
                    .value(&stack)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "CloudFormation CreateStack: {}",
                    aws_sdk_cloudformation::error::DisplayErrorContext(&e)
                )
            })?;
    } else {
        eprintln!("updraft: updating {}", args.target.place());
        let result = cfn
            .update_stack()
            .stack_name(&stack)
            .template_body(TEMPLATE)
            .set_parameters(Some(parameters))
            .capabilities(Capability::CapabilityIam)
            .send()
            .await;
        if let Err(e) = result {
            let text = aws_sdk_cloudformation::error::DisplayErrorContext(&e).to_string();
            if text.contains("No updates are to be performed") {
                eprintln!("updraft: the stack is up to date");
                return print_outputs(&sdk, &stack).await;
            }
            bail!("CloudFormation UpdateStack: {text}");
        }
    }
    let status = wait(&cfn, &stack, since).await?;
    let ok = if creating {
        status == StackStatus::CreateComplete
    } else {
        status == StackStatus::UpdateComplete
    };
    if !ok {
        bail!(
            "{} ended {} (the events above say why)",
            args.target.place(),
            status.as_str()
        );
    }
    eprintln!(
        "updraft: {} is {} ({:.0}s)",
        args.target.place(),
        status.as_str(),
        started.elapsed().as_secs_f64()
    );
    print_outputs(&sdk, &stack).await
}

async fn print_outputs(sdk: &aws_config::SdkConfig, stack: &str) -> anyhow::Result<ExitCode> {
    let info = describe_stack(sdk, stack)
        .await?
        .with_context(|| format!("stack `{stack}` vanished"))?;
    out!("{}", serde_json::to_string_pretty(&info.outputs)?);
    Ok(ExitCode::SUCCESS)
}

/// The account (STS `GetCallerIdentity`) and region of `sdk`'s identity.
async fn account_region(sdk: &aws_config::SdkConfig) -> anyhow::Result<(String, String)> {
    let id = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "STS GetCallerIdentity (are AWS credentials set?): {}",
                aws_sdk_sts::error::DisplayErrorContext(&e)
            )
        })?;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .context("no AWS region: give --region or set AWS_REGION")?;
    Ok((id.account.unwrap_or_default(), region))
}

/// The ARN of job queue `name` in the account and region of `sdk` (IAM grants need ARNs).
async fn queue_arn(sdk: &aws_config::SdkConfig, name: &str) -> anyhow::Result<String> {
    let (account, region) = account_region(sdk).await?;
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    Ok(format!(
        "arn:{partition}:batch:{region}:{account}:job-queue/{name}"
    ))
}

/// Builds the functions for `arch` with `scripts/bundle` in this source checkout; returns the folder.
fn build(arch: Arch) -> anyhow::Result<PathBuf> {
    let mut dir = std::env::current_dir()?;
    let root = loop {
        if dir.join("scripts/bundle").is_file() && dir.join("functions/Cargo.toml").is_file() {
            break dir;
        }
        if !dir.pop() {
            bail!(
                "not in an Updraft source checkout, so the functions cannot be built here: give \
                 --bundle DIR (a folder of launch, transition and events zips from scripts/bundle)"
            );
        }
    };
    eprintln!("updraft: building the functions for {}", arch.name());
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/bundle"))
        .arg(arch.name())
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run scripts/bundle")?;
    if !out.status.success() {
        bail!("scripts/bundle {} failed", arch.name());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .last()
        .context("scripts/bundle printed no folder")?;
    Ok(PathBuf::from(last.trim()))
}

/// The zip of function `name` from `dir`: `<name>.zip` as it is, or the executable `<name>` zipped as
/// `bootstrap`. Either way its architecture must be `arch`.
pub fn function_zip(dir: &Path, name: &str, arch: Arch) -> anyhow::Result<Vec<u8>> {
    let zip_path = dir.join(format!("{name}.zip"));
    let (binary, zipped) = if zip_path.is_file() {
        let bytes = std::fs::read(&zip_path)?;
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes))
            .with_context(|| format!("{}: not a zip", zip_path.display()))?;
        let mut f = archive
            .by_name("bootstrap")
            .with_context(|| format!("{}: holds no `bootstrap`", zip_path.display()))?;
        let mut head = vec![0u8; 20];
        std::io::Read::read_exact(&mut f, &mut head)
            .with_context(|| format!("{}: `bootstrap` is not a program", zip_path.display()))?;
        drop(f);
        (head, Some(bytes))
    } else {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).with_context(|| {
            format!("{}: neither {name}.zip nor {name} is there", dir.display())
        })?;
        (bytes, None)
    };
    let what = dir.join(name);
    if binary.len() < 20 || &binary[..4] != b"\x7fELF" {
        bail!("{}: not a Linux program", what.display());
    }
    let machine = u16::from_le_bytes([binary[18], binary[19]]);
    if machine != arch.elf_machine() {
        bail!(
            "{}: built for another architecture than {} (give --arch to match it)",
            what.display(),
            arch.name()
        );
    }
    if let Some(z) = zipped {
        return Ok(z);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    z.start_file("bootstrap", opts)?;
    z.write_all(&binary)?;
    z.finish()?;
    Ok(out.into_inner())
}

async fn ensure_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: Option<&str>,
) -> anyhow::Result<()> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    eprintln!("updraft: creating the code bucket {bucket}");
    let mut req = s3.create_bucket().bucket(bucket);
    if let Some(r) = region.filter(|r| *r != "us-east-1") {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(r))
                .build(),
        );
    }
    if let Err(e) = req.send().await {
        let text = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
        if !text.contains("BucketAlreadyOwnedByYou") {
            bail!("S3 CreateBucket {bucket}: {text}");
        }
    }
    s3.put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "S3 PutPublicAccessBlock {bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(())
}

async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    if s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
    {
        eprintln!("updraft: s3://{bucket}/{key} is there already");
        return Ok(());
    }
    eprintln!(
        "updraft: uploading s3://{bucket}/{key} ({:.1} MiB)",
        bytes.len() as f64 / (1024.0 * 1024.0)
    );
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(bytes.to_vec().into())
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "S3 PutObject s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(())
}

/// Follows the stack's events (printing each) until it is in a settled state; returns that state.
async fn wait(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
    since: aws_sdk_cloudformation::primitives::DateTime,
) -> anyhow::Result<StackStatus> {
    let mut seen = std::collections::HashSet::new();
    let started = Instant::now();
    loop {
        let events = cfn
            .describe_stack_events()
            .stack_name(stack)
            .send()
            .await
            .map(|o| o.stack_events.unwrap_or_default())
            .unwrap_or_default();
        for e in events.iter().rev() {
            let id = e.event_id.clone().unwrap_or_default();
            let newer = e.timestamp.is_none_or(|t| t.secs() >= since.secs() - 1);
            if !newer || !seen.insert(id) {
                continue;
            }
            let reason = e
                .resource_status_reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" — {r}"))
                .unwrap_or_default();
            eprintln!(
                "  [{:>5.1}s] {:<32} {}{reason}",
                started.elapsed().as_secs_f64(),
                e.logical_resource_id.as_deref().unwrap_or("?"),
                e.resource_status.as_ref().map_or("?", |s| s.as_str()),
            );
        }
        let status = cfn
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "CloudFormation DescribeStacks: {}",
                    aws_sdk_cloudformation::error::DisplayErrorContext(&e)
                )
            })?
            .stacks
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|s| s.stack_status)
            .context("the stack vanished")?;
        if !status.as_str().ends_with("_IN_PROGRESS") {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
