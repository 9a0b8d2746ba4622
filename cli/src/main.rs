//! The `updraft` command.

/// `println!` for the command's output: a reader that went away (`updraft status x | head`) ends the
/// command quietly, as it ends other tools, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            crate::output_failed(&e);
        }
    }};
}

/// `print!` for the command's output, as [`out!`].
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            crate::output_failed(&e);
        }
    }};
}

mod cloud;
mod graph;
mod load;
mod plan;
mod progress;
mod registry;
mod report;
mod run;
mod store;
mod tasklogs;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use updraft_connector_local::{ContainerChoice, Workers};

/// Where task attempts run (`--executor`).
#[derive(Clone, Copy, ValueEnum)]
enum ExecutorArg {
    /// On this machine.
    Local,
    /// Native tasks on a Kubernetes (EKS) cluster.
    Eks,
}

/// How raw containers run (`--containers`).
#[derive(Clone, Copy, ValueEnum)]
enum ContainersArg {
    /// docker, else podman, else processes.
    Auto,
    /// docker (an error if it does not answer).
    Docker,
    /// podman (an error if it does not answer).
    Podman,
    /// Always as local processes.
    Process,
}

/// How `updraft run` starts Python tasks.
#[derive(Clone, Copy, ValueEnum)]
enum WorkersArg {
    /// Forked from a warm worker that imported flytekit once.
    On,
    /// A new interpreter per task.
    Off,
}

/// Updraft: run Flyte-style workflows serverlessly on AWS, or on one machine.
#[derive(Parser)]
#[command(name = "updraft", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check packages and YAML workflows; print one line per problem (file, entity, node, field, reason).
    Validate {
        /// `pyflyte package` archives (.tgz) and Updraft YAML files (.yaml); together they form one set,
        /// so reference tasks and launch plans resolve across them (and then against the registry).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where the local registry is kept (`<state-dir>/registry`, filled by `updraft register`).
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
    },
    /// List the entities: tasks with their types and plugins, workflows, launch plans, interfaces.
    Inspect {
        /// Packages and YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = InspectFormat::Text)]
        format: InspectFormat,
    },
    /// Run a workflow on this machine: tasks as local processes, state under .updraft/; prints progress
    /// to stderr and the outputs as JSON; exit 0 on success, 1 on failure.
    Run {
        /// Packages and YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The workflow to run (its default launch plan); default: the last workflow loaded.
        #[arg(long, short)]
        workflow: Option<String>,
        /// The launch plan to run.
        #[arg(long, short = 'l', conflicts_with = "workflow")]
        launch_plan: Option<String>,
        /// An input: `name=value`, the value as JSON (`3`, `[1,2]`, `{"a":1}`) or plain text.
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A JSON file with an object of inputs.
        #[arg(long)]
        inputs_file: Option<PathBuf>,
        /// The Python interpreter whose environment runs Python tasks (holds pyflyte-execute).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Most task attempts at once (default: the number of cores).
        #[arg(long)]
        parallelism: Option<u32>,
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        /// Run cached tasks again and overwrite their cached outputs.
        #[arg(long)]
        overwrite_cache: bool,
        /// A folder of secrets as files, `<dir>/<group>/<key>`, for tasks' `secret_requests` (beside
        /// `_FSEC_<GROUP>_<KEY>` variables in the environment); tasks read them there.
        #[arg(long, value_name = "DIR", env = "UPDRAFT_SECRETS_DIR")]
        secrets_dir: Option<PathBuf>,
        /// How raw containers (tasks with a data_config) run: `auto` uses docker, else podman, when it
        /// answers, else runs them as processes.
        #[arg(long, value_enum, default_value_t = ContainersArg::Auto)]
        containers: ContainersArg,
        /// How Python tasks start: `on` forks each from a warm worker that imported flytekit once (its
        /// own process all the same); `off` starts a new interpreter per task.
        #[arg(long, value_enum, default_value_t = WorkersArg::On, env = "UPDRAFT_WORKERS")]
        workers: WorkersArg,
        /// Where task attempts run: `local` (processes, containers) or `eks` (native tasks as Kubernetes
        /// objects on the cluster of `--kubeconfig`; its containers must see the state folder).
        #[arg(long, value_enum, default_value_t = ExecutorArg::Local)]
        executor: ExecutorArg,
        /// The kubeconfig of `--executor eks` (default: KUBECONFIG, ~/.kube/config, or in-cluster).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The namespace of `--executor eks` objects (overrides the cluster settings).
        #[arg(long)]
        namespace: Option<String>,
        /// The settings file (YAML or JSON; docs/settings.md): data.prefix, aws, eks, batch, sagemaker.
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// Old name of --settings; also takes a file of cluster settings alone (the `eks` section).
        #[arg(long, value_name = "FILE", conflicts_with = "settings")]
        eks_config: Option<PathBuf>,
    },
    /// List the executions in the local store (or, with --stack, in a deployed stack).
    List {
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Show an execution's phase, its nodes' phases, and its outputs or error; with --json, its whole
    /// history (every node's phase changes and attempts with their times, errors, cache use, what they
    /// made and where their logs are; child executions within).
    Status {
        /// Execution name (see `list`).
        execution: String,
        /// Print the execution's history as JSON (docs/history.md describes it).
        #[arg(long)]
        json: bool,
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Follow an execution: print its nodes' phase changes until it ends, then its outputs as JSON
    /// (exit 0 when it succeeded, 1 otherwise).
    Watch {
        /// Execution name (see `list`).
        execution: String,
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Serve the console on this machine: executions (filtered by workflow, phase, time), each with its
    /// graph coloured live by phase, its timeline, its map elements, its nodes' inputs, outputs and
    /// logs; abort, approve, reject, signal and relaunch from the page. Over the local store, or a
    /// stack with --stack.
    Ui {
        /// Packages and YAML files whose workflows and launch plans the console offers to launch
        /// (beside those registered under --state-dir).
        files: Vec<PathBuf>,
        /// The port (0: any free one); the console listens on 127.0.0.1 only.
        #[arg(long, short, default_value_t = 8642)]
        port: u16,
        /// The Python interpreter of the runs it launches (as `updraft run --python`).
        #[arg(long)]
        python: Option<PathBuf>,
        /// The settings file of the runs it launches (as `updraft run --settings`); its `aws`, `eks`
        /// and `qubole` sections also say where attempts' logs are read from (AWS Batch's, SageMaker's
        /// and EMR Serverless's CloudWatch streams, S3 log folders, pods' logs through the cluster's
        /// API, Qubole commands' logs through its API).
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// The kubeconfig pods' logs are read with (default: the settings' `eks.cluster` with this AWS
        /// identity, else KUBECONFIG or ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Write one self-contained HTML file of an execution — its graph coloured by phase, a timeline of
    /// every attempt, each node's outcome, its child executions — to attach to a ticket.
    Report {
        /// Execution name (see `list`).
        execution: String,
        /// Where to write it (default: `<execution>.html`; `-` for stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Print the captured stdout and stderr of a node's task attempt (the last one by default); with
    /// --stack, what the attempt printed (its pod's, Batch job's, SageMaker job's, EMR Serverless
    /// run's or Qubole command's logs), or without a
    /// node (or with --functions) the functions' log lines about the execution (and node).
    Logs {
        /// Execution name.
        execution: String,
        /// Node id (as `status` shows it); optional with --stack.
        node: Option<String>,
        /// Attempt number.
        #[arg(long)]
        attempt: Option<u32>,
        /// Array element, for map nodes.
        #[arg(long)]
        index: Option<u32>,
        /// With --stack and a node: the functions' lines about the node instead of its task's output.
        #[arg(long)]
        functions: bool,
        /// With --stack: the settings file whose `aws`, `eks` and `qubole` sections say where a task's
        /// logs are read from (AWS Batch's, SageMaker's and EMR Serverless's CloudWatch streams, S3 log
        /// folders, pods' logs through the cluster, Qubole commands' logs through its API).
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// With --stack: the kubeconfig pods' logs are read with (default: the settings' `eks.cluster`
        /// with this AWS identity, else KUBECONFIG or ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Ask a running execution (`updraft run` in another terminal, or on a stack with --stack) to abort.
    Abort {
        /// Execution name.
        execution: String,
        /// Why.
        #[arg(long, default_value = "aborted by the user")]
        reason: String,
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Send a gate's signal to a running execution: a value (JSON or text), or true/false for approvals.
    Signal {
        /// Execution name.
        execution: String,
        /// Signal id.
        id: String,
        /// The value.
        value: String,
        /// Where executions are kept.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Build the Lambda functions, upload them and create or update the CloudFormation stack
    /// (infra/updraft.yaml); follows its events and prints its outputs as JSON.
    Deploy {
        #[command(flatten)]
        target: cloud::Target,
        /// The functions' architecture (default: this machine's).
        #[arg(long, value_enum)]
        arch: Option<cloud::deploy::Arch>,
        /// A folder holding the functions (`launch`, `transition`, `events`, as programs or `.zip`s
        /// from scripts/bundle) instead of building them.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The bucket for the functions' zips (default: updraft-code-<account>-<region>, made if
        /// missing).
        #[arg(long)]
        code_bucket: Option<String>,
        /// The settings file (docs/settings.md): its `eks` section becomes the EksSettings parameter,
        /// the services' sections the connectors' settings and their permissions' parameters.
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// Old name of --settings; also takes a file of cluster settings alone (the `eks` section).
        #[arg(long, value_name = "FILE", conflicts_with = "settings")]
        eks_config: Option<PathBuf>,
        /// A stack parameter, `Key=Value` (EksClusterName, EksNamespace, SageMakerRoleArn,
        /// BatchJobQueueArns, QuboleTokenSecretArn, EmrServerlessRoleArns, AthenaWorkgroupArns,
        /// LogRetentionDays, DataRetentionDays, MaxCheckDelaySeconds, MaxReceiveCount, AlarmTopicArn).
        #[arg(long = "parameter", short = 'p', value_name = "KEY=VALUE")]
        parameters: Vec<String>,
    },
    /// Register packages and YAML files: their tasks, workflows and launch plans by name and version,
    /// in the local registry (under --state-dir) or, with --stack, in a deployed stack. Their
    /// reference tasks and launch plans resolve against what is registered; prints the entities.
    Register {
        /// Packages and YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The version to register them at (what `@reference_task(version=…)` names); default: the
        /// file's digest.
        #[arg(long)]
        version: Option<String>,
        /// Where the local registry is kept (`<state-dir>/registry`), without --stack.
        #[arg(long, default_value = ".updraft")]
        state_dir: PathBuf,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Start an execution on a stack; prints its name.
    Launch {
        /// The workflow to run (its default launch plan).
        #[arg(long, short, required_unless_present = "launch_plan")]
        workflow: Option<String>,
        /// The launch plan to run.
        #[arg(long, short = 'l', conflicts_with = "workflow")]
        launch_plan: Option<String>,
        /// An input: `name=value`, the value as JSON or plain text.
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A JSON file with an object of inputs.
        #[arg(long)]
        inputs_file: Option<PathBuf>,
        /// The execution's name (default: made up); the same name starts one execution.
        #[arg(long)]
        name: Option<String>,
        /// The package key (default: where the workflow or launch plan was last registered).
        #[arg(long)]
        package: Option<String>,
        /// Run cached tasks again and overwrite their cached outputs.
        #[arg(long)]
        overwrite_cache: bool,
        /// Most task attempts at once.
        #[arg(long)]
        max_parallelism: Option<u32>,
        /// How the request goes: a JSON object dropped under requests/ in the bucket, a message to
        /// the launch queue, or a synchronous invocation of the launch function.
        #[arg(long, value_enum, default_value_t = cloud::ops::Via::S3)]
        via: cloud::ops::Via,
        /// Follow the execution to its end (as `watch` does).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        target: cloud::Target,
    },
    /// Print the Kubernetes objects (YAML) the native tasks would create on EKS, without a cluster: Pods,
    /// PyTorchJobs, TFJobs, MPIJobs, SparkApplications.
    Plan {
        /// Packages and YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Only this task (default: every native task).
        #[arg(long, short)]
        task: Option<String>,
        /// Task inputs for `{{.inputs.x}}` in arguments: `name=value` (others show as `<name>`).
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Show the pod of this array element (map tasks).
        #[arg(long)]
        index: Option<u32>,
        /// The settings file (docs/settings.md): its `eks` section (namespace, serviceAccount,
        /// interruptible, podTemplates, …) and `data.prefix`.
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// Old names of --settings; also take a file of cluster settings alone (the `eks` section).
        #[arg(
            long,
            alias = "eks-config",
            value_name = "FILE",
            conflicts_with = "settings"
        )]
        config: Option<PathBuf>,
        /// Where executions keep their data (input and output URIs are made under it; default: the
        /// settings' data.prefix, else s3://updraft-data/executions).
        #[arg(long)]
        data_prefix: Option<String>,
        /// Output format: YAML documents (strings any YAML reader reads back as strings), or one JSON
        /// array of the objects.
        #[arg(long, value_enum, default_value_t = plan::Format::Yaml)]
        format: plan::Format,
    },
    /// Draw a workflow's DAG, with branches, maps and subworkflows shown as such.
    Graph {
        /// Packages and YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The workflow to draw (default: the only one, or the last top-level workflow loaded).
        #[arg(long, short)]
        workflow: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = graph::Format::Mermaid)]
        format: graph::Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum InspectFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("updraft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { files, state_dir } => validate(&files, &state_dir),
        Command::Inspect { files, format } => inspect(&files, format),
        Command::Plan {
            files,
            task,
            inputs,
            index,
            settings,
            config,
            data_prefix,
            format,
        } => {
            let settings = load_settings(settings.as_deref(), config.as_deref())?;
            let data_prefix = data_prefix.unwrap_or_else(|| match settings.s3_prefix() {
                Ok(p) => format!("{p}/executions"),
                Err(_) => "s3://updraft-data/executions".into(),
            });
            plan::plan(&plan::PlanArgs {
                files,
                task,
                inputs,
                index,
                settings,
                data_prefix,
                format,
            })
        }
        Command::Graph {
            files,
            workflow,
            format,
        } => draw(&files, workflow.as_deref(), format),
        Command::Run {
            files,
            workflow,
            launch_plan,
            inputs,
            inputs_file,
            python,
            parallelism,
            state_dir,
            overwrite_cache,
            secrets_dir,
            containers,
            workers,
            executor,
            kubeconfig,
            namespace,
            settings,
            eks_config,
        } => run::run(run::RunArgs {
            settings: load_settings(settings.as_deref(), eks_config.as_deref())?,
            settings_file: settings.clone(),
            files,
            workflow,
            launch_plan,
            inputs,
            inputs_file,
            python,
            parallelism,
            state_dir,
            overwrite_cache,
            secrets_dir,
            containers: match containers {
                ContainersArg::Auto => ContainerChoice::Auto,
                ContainersArg::Docker => ContainerChoice::Docker,
                ContainersArg::Podman => ContainerChoice::Podman,
                ContainersArg::Process => ContainerChoice::Process,
            },
            workers: match workers {
                WorkersArg::On => Workers::On,
                WorkersArg::Off => Workers::Off,
            },
            eks: match executor {
                ExecutorArg::Local => None,
                ExecutorArg::Eks => Some(run::EksArgs {
                    kubeconfig,
                    namespace,
                }),
            },
        }),
        Command::List { state_dir, target } => match target.stack {
            Some(_) => cloud::block_on(cloud::ops::list(&target))?,
            None => store::list(&state_dir),
        },
        Command::Status {
            execution,
            json,
            state_dir,
            target,
        } => match target.stack {
            Some(_) => cloud::block_on(cloud::ops::status(&target, &execution, json))?,
            None => store::status(&state_dir, &execution, json),
        },
        Command::Watch {
            execution,
            state_dir,
            target,
        } => match target.stack {
            Some(_) => cloud::block_on(cloud::ops::watch(&target, &execution))?,
            None => store::watch(&state_dir, &execution),
        },
        Command::Ui {
            files,
            port,
            python,
            settings,
            kubeconfig,
            state_dir,
            target,
        } => ui::serve(
            &state_dir,
            &target,
            port,
            ui::LocalRuns {
                files,
                python,
                settings,
                kubeconfig,
            },
        ),
        Command::Report {
            execution,
            output,
            state_dir,
            target,
        } => {
            let view = match target.stack {
                Some(_) => cloud::block_on(cloud::ops::history_of(&target, &execution))??,
                None => store::history(&state_dir, &execution)?,
            };
            report::write(&view, &execution, output.as_deref())
        }
        Command::Logs {
            execution,
            node,
            attempt,
            index,
            functions,
            settings,
            kubeconfig,
            state_dir,
            target,
        } => match (target.stack.is_some(), node) {
            (true, Some(node)) if !functions => {
                let settings = load_settings(settings.as_deref(), None)?;
                cloud::block_on(async {
                    let reader = tasklogs::TaskLogs::of(&target, &settings, kubeconfig).await?;
                    let view = cloud::ops::history_of(&target, &execution).await?;
                    tasklogs::print_attempt(&reader, &view, &node, attempt, index).await
                })?
            }
            (true, node) => {
                cloud::block_on(cloud::ops::logs(&target, &execution, node.as_deref()))?
            }
            (false, Some(node)) => store::logs(&state_dir, &execution, &node, attempt, index),
            (false, None) => anyhow::bail!(
                "give the node whose task output to show (see `updraft status {execution}`)"
            ),
        },
        Command::Abort {
            execution,
            reason,
            state_dir,
            target,
        } => match target.stack {
            Some(_) => cloud::block_on(cloud::ops::abort(&target, &execution, &reason))?,
            None => store::abort(&state_dir, &execution, &reason),
        },
        Command::Signal {
            execution,
            id,
            value,
            state_dir,
            target,
        } => match target.stack {
            Some(_) => cloud::block_on(cloud::ops::signal(&target, &execution, &id, &value))?,
            None => store::signal(&state_dir, &execution, &id, &value),
        },
        Command::Deploy {
            target,
            arch,
            bundle,
            code_bucket,
            settings,
            eks_config,
            parameters,
        } => {
            let given = settings.is_some() || eks_config.is_some();
            let settings = load_settings(settings.as_deref(), eks_config.as_deref())?;
            cloud::block_on(cloud::deploy::deploy(cloud::deploy::DeployArgs {
                target,
                arch,
                bundle,
                code_bucket,
                settings: given.then_some(settings),
                parameters,
            }))?
        }
        Command::Register {
            files,
            version,
            state_dir,
            target,
        } => match target.stack {
            Some(_) => cloud::block_on(cloud::ops::register(&target, &files, version.as_deref()))?,
            None => registry::register(&state_dir, &files, version.as_deref()),
        },
        Command::Launch {
            workflow,
            launch_plan,
            inputs,
            inputs_file,
            name,
            package,
            overwrite_cache,
            max_parallelism,
            via,
            wait,
            target,
        } => cloud::block_on(cloud::ops::launch(
            &target,
            cloud::ops::LaunchArgs {
                request: updraft_aws::request::Request {
                    name,
                    workflow,
                    launch_plan,
                    package,
                    inputs: Default::default(),
                    overwrite_cache,
                    max_parallelism,
                },
                inputs,
                inputs_file,
                via,
                wait,
            },
        ))?,
    }
}

/// The settings of `--settings F` (or of `--eks-config F`, which may hold the cluster settings
/// alone); every section checked now, so a wrong key stops the command before it does anything.
fn load_settings(
    settings: Option<&std::path::Path>,
    eks_config: Option<&std::path::Path>,
) -> anyhow::Result<updraft_settings::Settings> {
    let (s, file) = match (settings, eks_config) {
        (Some(f), _) => (updraft_settings::Settings::load(f)?, f),
        (None, Some(f)) => (updraft_settings::Settings::load_eks_alias(f)?, f),
        (None, None) => return Ok(updraft_settings::Settings::default()),
    };
    if let Some(eks) = &s.eks {
        updraft_connector_eks::EksConfig::from_settings(&file.display().to_string(), eks)?;
    }
    Ok(s)
}

fn report(problems: &updraft_engine::Problems) -> ExitCode {
    for p in &problems.0 {
        eprintln!("{p}");
    }
    eprintln!(
        "updraft: {} problem{} found",
        problems.0.len(),
        if problems.0.len() == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

fn validate(files: &[PathBuf], state_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut pkg = match load::load(files) {
        Ok(p) => p,
        Err(p) => return Ok(report(&p)),
    };
    // References the files do not resolve among themselves: from the registry, or an error each.
    if !pkg.unresolved(None).is_empty()
        && let Err(p) = registry::Registry::open(state_dir)?.resolve(&mut pkg, None)
    {
        return Ok(report(&p));
    }
    Ok(match updraft_engine::compile(&pkg) {
        Ok(c) => {
            out!(
                "ok: {} workflow{}, {} task{}, {} launch plan{}",
                c.workflows.len(),
                plural(c.workflows.len()),
                c.tasks.len(),
                plural(c.tasks.len()),
                c.launch_plans.len(),
                plural(c.launch_plans.len()),
            );
            ExitCode::SUCCESS
        }
        Err(p) => report(&p),
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn inspect(files: &[PathBuf], format: InspectFormat) -> anyhow::Result<ExitCode> {
    let pkg = match load::load(files) {
        Ok(p) => p,
        Err(p) => return Ok(report(&p)),
    };
    let (compiled, problems) = updraft_engine::compile_lenient(&pkg);
    let summary = updraft_engine::inspect::summarize(&pkg, &compiled);
    match format {
        InspectFormat::Json => out!("{}", serde_json::to_string_pretty(&summary)?),
        InspectFormat::Text => out_raw!("{}", updraft_engine::inspect::render_text(&summary)),
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(report(&problems))
    }
}

fn draw(
    files: &[PathBuf],
    workflow: Option<&str>,
    format: graph::Format,
) -> anyhow::Result<ExitCode> {
    let pkg = match load::load(files) {
        Ok(p) => p,
        Err(p) => return Ok(report(&p)),
    };
    let roots = pkg.launch_roots(None, workflow);
    let compiled = match updraft_engine::compile_for(&pkg, &roots) {
        Ok(c) => c,
        Err(p) => return Ok(report(&p)),
    };
    let name = match workflow {
        Some(w) => w.to_string(),
        None => pkg
            .top_level
            .last()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no workflow in the given files"))?,
    };
    let Some(wf) = compiled.workflows.get(&name) else {
        let known: Vec<&String> = compiled.workflows.keys().collect();
        anyhow::bail!("no workflow `{name}`; the files define: {known:?}");
    };
    out_raw!("{}", graph::render(wf, &compiled, format));
    Ok(ExitCode::SUCCESS)
}

/// Ends the command once its output cannot be written: quietly (exit 0) when the reader went away,
/// else saying why (exit 1).
fn output_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("updraft: cannot write the output: {e}");
    std::process::exit(1);
}
