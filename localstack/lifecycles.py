"""Job lifecycles for moto's SageMaker, AWS Batch, EMR Serverless and Athena jobs, as the real services
run them: plain moto creates every job already finished (or, for Batch, runs it in Docker), and has no
StopTrainingJob. Here a job is queued, runs, and then completes or fails; it can be stopped; and every
state change can be published to EventBridge as the service's own "... State Change" event.

SageMaker models, endpoint configurations and endpoints are as the real service keeps them: a name
already taken is its `Cannot create already existing …` error, and an endpoint is `Creating` for the
job times below before it is `InService` (or `Failed`). A job whose name is taken is `ResourceInUse`.

A job's key names it as Updraft's events function does: `sagemaker:training:<name>` (also
`processing`, `transform`, `tuning`, and `sagemaker:endpoint:<name>`), `batch:<job id>`, `emr-serverless:<application>/<job run>` and
`athena:<query execution id>`.

Settings (the environment variable UPDRAFT_MOTO_LIFECYCLE holds the starting ones as JSON; GET and POST
`/_updraft/lifecycle` read and change them; a job keeps those it started with):

- `queue_seconds` (0.5): time in the states before running (Batch's SUBMITTED, PENDING, RUNNABLE and
  STARTING share it evenly);
- `run_seconds` (2.0): time running; `null` runs until stopped or finished through the control API;
- `stop_seconds` (0.5): time in a stopping state (SageMaker's Stopping, EMR Serverless's CANCELLING);
- `failures` ([]): `[{"match": text, "reason": text}]`; a job whose name (Athena: query text) contains
  `match` fails with `reason` at the end of its run;
- `events_endpoint` (null): an EventBridge endpoint (e.g. LocalStack's) each state change goes to, on
  the default bus of `events_region` (us-east-1);
- `run_commands` (false): AWS Batch jobs, SageMaker training and processing jobs that name a
  `ContainerEntrypoint` (Pythonic jobs do), and training jobs whose hyperparameters carry a command as
  flytekit's SageMaker runner reads it (`__FLYTE_CMD_<i>_<arg>__`, `__FLYTE_ENV_VAR_<name>__`: custom
  training jobs) run their container's command as a local process (the image is ignored), as the Kubernetes API test server's kubelet runs pods: the job runs while the
  process does and ends with its exit code (Batch: `Essential container in task exited`,
  `container.exitCode`; SageMaker: `AlgorithmError: …` as the FailureReason). The process's
  environment is the launcher's, then the job's (a Batch definition's and overrides', and its
  definition's `secrets` read from this moto's Secrets Manager as Batch reads them when the container
  starts — a secret or JSON key that is not there fails the job with Batch's
  `ResourceInitializationError: unable to pull secrets or registry auth`; a SageMaker job's
  `Environment`), `AWS_BATCH_JOB_ID` and an array child's `AWS_BATCH_JOB_ARRAY_INDEX` (Batch),
  `TRAINING_JOB_NAME` or `PROCESSING_JOB_NAME` (SageMaker), and, unless the launcher's
  environment sets them, `AWS_ENDPOINT_URL` and `FLYTE_AWS_ENDPOINT` pointing at this moto (so a job's
  S3 is this moto's, as a real job's is the real S3); its output goes to `$UPDRAFT_MOTO_JOB_LOGS`
  (default: the system's temporary folder) as `<job id>.log`, and to moto's CloudWatch Logs where the
  service sends it (see `Kind.log_stream`). `run_seconds` does not apply to them;
  a `failures` match still fails them.

A training job that runs no command (a built-in algorithm's, and a tuning job's best) leaves its model
as SageMaker does: `model.tar.gz` (holding `hyperparameters.json`) at its `ModelArtifacts`
(`<S3OutputPath>/<job>/output/model.tar.gz`) in the jobs' S3 (the launcher's `AWS_ENDPOINT_URL`, else
this moto's), when that bucket exists.

`GET /_updraft/jobs` lists every job's key and state; `POST /_updraft/jobs/<key>` with
`{"outcome": "succeeded" | "failed", "reason": text}` ends a running or queued job now.
"""

import datetime
import gzip
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional

_LOCK = threading.RLock()
_JOBS: dict[str, "Job"] = {}
_EVENTS: "queue.Queue[tuple[str, dict[str, Any]]]" = queue.Queue()

_DEFAULTS: dict[str, Any] = {
    "queue_seconds": 0.5,
    "run_seconds": 2.0,
    "stop_seconds": 0.5,
    "failures": [],
    "events_endpoint": None,
    "events_region": "us-east-1",
    "run_commands": False,
}
_SETTINGS: dict[str, Any] = dict(_DEFAULTS)


class SettingsError(ValueError):
    """A lifecycle setting that is unknown or of the wrong type."""


def _check_settings(given: Any) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise SettingsError("lifecycle settings must be a JSON object")
    for name, value in given.items():
        if name not in _DEFAULTS:
            known = ", ".join(sorted(_DEFAULTS))
            raise SettingsError(f"unknown lifecycle setting {name!r} (known: {known})")
        if name in ("queue_seconds", "stop_seconds"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise SettingsError(f"{name} must be a number of seconds >= 0, not {value!r}")
        elif name == "run_seconds":
            if value is not None and (
                not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0
            ):
                raise SettingsError(f"run_seconds must be seconds >= 0 or null, not {value!r}")
        elif name == "failures":
            ok = isinstance(value, list) and all(
                isinstance(f, dict)
                and isinstance(f.get("match"), str)
                and isinstance(f.get("reason"), str)
                and set(f) <= {"match", "reason"}
                for f in value
            )
            if not ok:
                raise SettingsError(
                    'failures must be a list of {"match": text, "reason": text}'
                )
        elif name == "events_endpoint":
            if value is not None and not isinstance(value, str):
                raise SettingsError("events_endpoint must be a URL or null")
        elif name == "events_region":
            if not isinstance(value, str) or not value:
                raise SettingsError("events_region must be a region name")
        elif name == "run_commands":
            if not isinstance(value, bool):
                raise SettingsError(f"run_commands must be true or false, not {value!r}")
    return given


def settings() -> dict[str, Any]:
    """The current settings."""
    with _LOCK:
        return json.loads(json.dumps(_SETTINGS))


def configure(given: Any) -> dict[str, Any]:
    """Changes the settings named in `given` (others keep their values); returns them all."""
    _check_settings(given)
    with _LOCK:
        _SETTINGS.update(given)
    return settings()


class Kind:
    """How one kind of job shows its states: the statuses of each phase and where they are kept."""

    source = ""
    detail_type = ""
    queued: list[str] = []
    running = ""
    succeeded = ""
    failed = ""
    stopping: Optional[str] = None
    stopped = ""
    # Whether a phase change that keeps the status (a training job's secondary status moving on) is
    # an event of its own.
    repeat_events = True

    def status(self, phase: str) -> str:
        if phase.startswith("queued:"):
            return self.queued[int(phase.split(":")[1])]
        return getattr(self, phase)

    def apply(self, job: "Job", phase: str, reason: Optional[str]) -> None:
        raise NotImplementedError

    def detail(self, job: "Job", previous: Optional[str]) -> dict[str, Any]:
        raise NotImplementedError

    def exit_reason(self, code: int) -> str:
        """The failure reason of a job whose process exited with `code` (not 0)."""
        return f"the job's process exited with code {code}"

    def log_stream(self, job: "Job") -> Optional[tuple[Any, str, str]]:
        """Where the service sends a running job's output: (moto's CloudWatch Logs backend of the job's
        account and region, log group, log stream), or None."""
        return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class SageMakerKind(Kind):
    """A SageMaker training, processing, transform or tuning job: InProgress, then Completed, Failed or
    (through Stopping) Stopped; training jobs also show their secondary status."""

    source = "aws.sagemaker"
    queued = ["InProgress"]
    running = "InProgress"
    succeeded = "Completed"
    failed = "Failed"
    stopping = "Stopping"
    stopped = "Stopped"

    _GROUPS = {"training": "TrainingJobs", "processing": "ProcessingJobs"}

    def log_stream(self, job: "Job") -> Optional[tuple[Any, str, str]]:
        # as SageMaker names them: /aws/sagemaker/TrainingJobs, stream <job>/algo-1-<epoch seconds>
        group = self._GROUPS.get(self.what)
        parts = job.arn.split(":")
        if group is None or len(parts) < 6:
            return None
        from moto.logs.models import logs_backends

        name = job.arn.rsplit("/", 1)[-1]
        return logs_backends[parts[4]][parts[3]], f"/aws/sagemaker/{group}", f"{name}/algo-1-{int(time.time())}"

    def __init__(self, what: str, title: str, status_attr: str, end_attr: str, describe: str):
        self.what = what
        self.detail_type = f"SageMaker {title} Job State Change"
        self.status_attr = status_attr
        self.end_attr = end_attr
        self.describe = describe

    def apply(self, job: "Job", phase: str, reason: Optional[str]) -> None:
        obj = job.obj
        setattr(obj, self.status_attr, self.status(phase))
        obj.last_modified_time = _now()
        terminal = phase in ("succeeded", "failed", "stopped")
        setattr(obj, self.end_attr, _now() if terminal else None)
        if phase == "failed" or (phase in ("stopping", "stopped") and reason):
            obj.failure_reason = reason
        if self.what == "training":
            secondary = {
                "queued:0": "Starting",
                "running": "Training",
                "succeeded": "Completed",
                "failed": "Failed",
                "stopping": "Stopping",
                "stopped": "Stopped",
            }[phase]
            if phase == "queued:0":
                obj.secondary_status_transitions = []
            for t in obj.secondary_status_transitions:
                t.setdefault("EndTime", _now())
            obj.secondary_status_transitions.append(
                {"Status": secondary, "StartTime": _now(), "StatusMessage": reason or secondary}
            )
            obj.secondary_status = secondary
            obj.training_start_time = obj.creation_time if phase != "queued:0" else None
        if self.what == "training" and phase == "succeeded" and not job.command:
            _write_model(obj)
        if self.what == "tuning":
            _tune(obj, phase)

    def exit_reason(self, code: int) -> str:
        return f"AlgorithmError: the job's container exited with code {code}"

    def detail(self, job: "Job", previous: Optional[str]) -> dict[str, Any]:
        d = getattr(job.obj, self.describe)
        return d() if callable(d) else d


def _tune(obj: Any, phase: str) -> None:
    """A tuning job's trials as SageMaker shows them: one in progress while it runs; when it completes,
    a real training job (`<tuning job>-001-<8 hex>`, from its TrainingJobDefinition) as its best."""
    done = phase in ("succeeded", "failed", "stopped")
    obj.training_job_status_counters = {
        "Completed": 1 if phase == "succeeded" else 0,
        "InProgress": 0 if done else 1,
        "RetryableError": 0,
        "NonRetryableError": 1 if phase == "failed" else 0,
        "Stopped": 1 if phase == "stopped" else 0,
    }
    obj.objective_status_counters = {
        "Succeeded": 1 if phase == "succeeded" else 0,
        "Pending": 0 if done else 1,
        "Failed": 1 if phase == "failed" else 0,
    }
    if phase != "succeeded":
        obj.best_training_job = None
        obj.OverallBestTrainingJob = None
        return
    backend = getattr(obj, "updraft_backend", None)
    create = getattr(obj, "updraft_create_training_job", None)
    if backend is None or create is None:
        return
    import hashlib

    d = obj.training_job_definition or {}
    name = f"{obj.hyper_parameter_tuning_job_name[:50]}-001-" + hashlib.sha256(obj.arn.encode()).hexdigest()[:8]
    ranges = (obj.hyper_parameter_tuning_job_config or {}).get("ParameterRanges") or {}
    tuned = {}
    for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
        for r in ranges.get(kind) or []:
            tuned[r["Name"]] = str(r.get("MinValue"))
    for r in ranges.get("CategoricalParameterRanges") or []:
        tuned[r["Name"]] = str((r.get("Values") or [""])[0])
    if name not in backend.training_jobs:
        create(
            backend,
            training_job_name=name,
            hyper_parameters={**(d.get("StaticHyperParameters") or {}), **tuned},
            algorithm_specification=dict(d.get("AlgorithmSpecification") or {}),
            role_arn=d.get("RoleArn"),
            input_data_config=d.get("InputDataConfig"),
            output_data_config=d.get("OutputDataConfig") or {"S3OutputPath": ""},
            resource_config=d.get("ResourceConfig"),
            vpc_config=d.get("VpcConfig"),
            stopping_condition=d.get("StoppingCondition"),
            tags=[],
            enable_network_isolation=False,
            enable_inter_container_traffic_encryption=False,
            enable_managed_spot_training=False,
            checkpoint_config=None,
            debug_hook_config=None,
            debug_rule_configurations=None,
            tensor_board_output_config=None,
            experiment_config=None,
        )
        _write_model(backend.training_jobs[name])
    best = backend.training_jobs[name]
    objective = (obj.hyper_parameter_tuning_job_config or {}).get("HyperParameterTuningJobObjective") or {}
    obj.best_training_job = {
        "TrainingJobName": name,
        "TrainingJobArn": best.arn,
        "TuningJobName": obj.hyper_parameter_tuning_job_name,
        "CreationTime": best.creation_time,
        "TrainingStartTime": best.training_start_time,
        "TrainingEndTime": best.training_end_time,
        "TrainingJobStatus": "Completed",
        "TunedHyperParameters": tuned,
        "FinalHyperParameterTuningJobObjectiveMetric": {
            "Type": objective.get("Type", "Minimize"),
            "MetricName": objective.get("MetricName", "objective"),
            "Value": 0.5,
        },
        "ObjectiveStatus": "Succeeded",
    }
    obj.OverallBestTrainingJob = obj.best_training_job


class EndpointKind(Kind):
    """A SageMaker endpoint: Creating, then InService or Failed (with its FailureReason)."""

    source = "aws.sagemaker"
    detail_type = "SageMaker Endpoint State Change"
    queued = ["Creating"]
    running = "Creating"
    succeeded = "InService"
    failed = "Failed"
    stopped = "Failed"
    repeat_events = False

    def apply(self, job: "Job", phase: str, reason: Optional[str]) -> None:
        obj = job.obj
        obj.endpoint_status = self.status(phase)
        obj.last_modified_time = _now()
        if phase in ("failed", "stopped"):
            obj.failure_reason = reason

    def detail(self, job: "Job", previous: Optional[str]) -> dict[str, Any]:
        obj = job.obj
        return {
            "EndpointName": obj.endpoint_name,
            "EndpointArn": obj.arn,
            "EndpointConfigName": obj.endpoint_config_name,
            "EndpointStatus": obj.endpoint_status,
            "CreationTime": obj.creation_time,
            "LastModifiedTime": obj.last_modified_time,
        }


class BatchKind(Kind):
    """An AWS Batch job: SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, then SUCCEEDED or FAILED;
    TerminateJob (and CancelJob before it starts) fails it with the reason given."""

    source = "aws.batch"
    detail_type = "Batch Job State Change"
    queued = ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING"]
    running = "RUNNING"
    succeeded = "SUCCEEDED"
    failed = "FAILED"
    stopped = "FAILED"

    def exit_reason(self, code: int) -> str:
        return "Essential container in task exited"

    def log_stream(self, job: "Job") -> Optional[tuple[Any, str, str]]:
        # /aws/batch/job, stream <definition>/default/<job id>: what DescribeJobs names as logStreamName
        obj = job.obj
        return obj._log_backend, obj._log_group, obj._stream_name

    def apply(self, job: "Job", phase: str, reason: Optional[str]) -> None:
        obj = job.obj
        if phase == "running":
            obj.job_started_at = datetime.datetime.now()
            if job.start_attempt:
                obj._start_attempt()
        if phase in ("succeeded", "failed", "stopped"):
            if reason:
                obj.job_stopped_reason = reason
            if job.children is None:
                if job.exit_code is not None:
                    obj.exit_code = job.exit_code
                elif phase == "stopped" and job.command is not None:
                    obj.exit_code = 137  # killed
                else:
                    obj.exit_code = 0 if phase == "succeeded" else 1
            if obj.job_started_at.year == 1970:
                obj.job_started_at = datetime.datetime.now()
            obj._mark_stopped(success=phase == "succeeded")
        else:
            obj.status = self.status(phase)

    def detail(self, job: "Job", previous: Optional[str]) -> dict[str, Any]:
        return job.obj.describe()


class EmrServerlessKind(Kind):
    """An EMR Serverless job run: SUBMITTED, PENDING, SCHEDULED, RUNNING, then SUCCESS or FAILED;
    CancelJobRun goes through CANCELLING to CANCELLED."""

    source = "aws.emr-serverless"
    detail_type = "EMR Serverless Job Run State Change"
    queued = ["SUBMITTED", "PENDING", "SCHEDULED"]
    running = "RUNNING"
    succeeded = "SUCCESS"
    failed = "FAILED"
    stopping = "CANCELLING"
    stopped = "CANCELLED"

    def log_stream(self, job: "Job") -> Optional[tuple[Any, str, str]]:
        # with CloudWatch logging on: the group it names (default /aws/emr-serverless), the driver's
        # stdout as stream [<logStreamNamePrefix>]/applications/<application>/jobs/<run>/SPARK_DRIVER/stdout
        obj = job.obj
        monitoring = (obj.configuration_overrides or {}).get("monitoringConfiguration") or {}
        cloudwatch = monitoring.get("cloudWatchLoggingConfiguration") or {}
        parts = obj.arn.split(":")
        if not cloudwatch.get("enabled") or len(parts) < 6:
            return None
        from moto.logs.models import logs_backends

        group = cloudwatch.get("logGroupName") or "/aws/emr-serverless"
        prefix = cloudwatch.get("logStreamNamePrefix") or ""
        name = f"{prefix}/applications/{obj.application_id}/jobs/{obj.id}/SPARK_DRIVER/stdout"
        return logs_backends[parts[4]][parts[3]], group, name

    @staticmethod
    def _upload_logs(job: "Job") -> None:
        """With S3 logging on (`s3MonitoringConfiguration.logUri`), a run that ran a process leaves its
        driver's output gzipped at `<logUri>/applications/<application>/jobs/<run>/SPARK_DRIVER/stdout.gz`
        in the jobs' S3 when it ends (a missing bucket is reported, and the run ends as it would)."""
        obj = job.obj
        monitoring = (obj.configuration_overrides or {}).get("monitoringConfiguration") or {}
        uri = ((monitoring.get("s3MonitoringConfiguration") or {}).get("logUri") or "").rstrip("/")
        path = getattr(job.process, "updraft_log", None)
        if not uri.startswith("s3://") or path is None:
            return
        try:
            with open(path, "rb") as f:
                body = gzip.compress(f.read())
            key = f"{uri}/applications/{obj.application_id}/jobs/{obj.id}/SPARK_DRIVER/stdout.gz"
            _s3_put(key, obj.arn.split(":")[4], body)
        except Exception as e:
            print(f"lifecycles: {job.key}: cannot write its logs under {uri}: {e}", file=sys.stderr)

    def apply(self, job: "Job", phase: str, reason: Optional[str]) -> None:
        obj = job.obj
        if phase in ("succeeded", "failed", "stopped"):
            self._upload_logs(job)
        obj.state = self.status(phase)
        obj.state_details = reason or ""
        obj.updated_at = _now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def detail(self, job: "Job", previous: Optional[str]) -> dict[str, Any]:
        obj = job.obj
        return {
            "jobRunId": obj.id,
            "jobRunName": obj.name,
            "applicationId": obj.application_id,
            "arn": obj.arn,
            "releaseLabel": obj.release_label,
            "state": obj.state,
            "previousState": previous,
            "stateDetails": obj.state_details,
            "createdAt": obj.created_at,
            "updatedAt": obj.updated_at,
        }


class AthenaKind(Kind):
    """An Athena query: QUEUED, RUNNING, then SUCCEEDED or FAILED (with its StateChangeReason);
    StopQueryExecution cancels it."""

    source = "aws.athena"
    detail_type = "Athena Query State Change"
    queued = ["QUEUED"]
    running = "RUNNING"
    succeeded = "SUCCEEDED"
    failed = "FAILED"
    stopped = "CANCELLED"

    def apply(self, job: "Job", phase: str, reason: Optional[str]) -> None:
        obj = job.obj
        obj.status = self.status(phase)
        obj.updraft_reason = reason
        if phase in ("succeeded", "failed", "stopped"):
            obj.end_time = time.time()

    def detail(self, job: "Job", previous: Optional[str]) -> dict[str, Any]:
        obj = job.obj
        job.sequence += 1
        return {
            "currentState": obj.status,
            "previousState": previous,
            "queryExecutionId": obj.id,
            "sequenceNumber": str(job.sequence),
            "statementType": "DML",
            "versionId": "0",
            "workgroupName": obj.workgroup.name if obj.workgroup else "primary",
        }


class Job:
    """One job's lifecycle: its phase follows from the time since it was created, unless it was
    stopped or finished through the control API."""

    def __init__(
        self,
        kind: Kind,
        key: str,
        name: str,
        obj: Any,
        arn: str,
        children: Optional[list["Job"]] = None,
        start_attempt: bool = True,
        command: Optional[tuple[list[str], dict[str, str]]] = None,
    ):
        with _LOCK:
            s = dict(_SETTINGS)
        self.kind = kind
        self.key = key
        self.obj = obj
        self.arn = arn
        self.children = children
        self.start_attempt = start_attempt
        self.created = time.monotonic()
        self.queue_seconds = float(s["queue_seconds"])
        self.run_seconds = None if s["run_seconds"] is None else float(s["run_seconds"])
        self.stop_seconds = float(s["stop_seconds"])
        self.failure = next((f["reason"] for f in s["failures"] if f["match"] in name), None)
        self.events = (s["events_endpoint"], s["events_region"])
        self.phase: Optional[str] = None
        self.stop_at: Optional[float] = None
        self.stop_reason: Optional[str] = None
        self.finish: Optional[tuple[str, Optional[str]]] = None
        self.sequence = 0
        # (argv, environment) of a job that runs as a local process, and the process once started
        self.command = command if s["run_commands"] else None
        self.process: Optional[subprocess.Popen] = None
        self.exit_code: Optional[int] = None

    @property
    def done(self) -> bool:
        return self.phase in ("succeeded", "failed", "stopped")

    def target(self, now: float) -> tuple[str, Optional[str]]:
        if self.stop_at is not None:
            if self.kind.stopping and now - self.stop_at < self.stop_seconds:
                return "stopping", self.stop_reason
            return "stopped", self.stop_reason
        if self.finish is not None:
            return self.finish
        if self.children is not None:
            phases = [c.phase or "queued:0" for c in self.children]
            if all(p in ("succeeded", "failed", "stopped") for p in phases):
                if all(p == "succeeded" for p in phases):
                    return "succeeded", None
                return "failed", "Array Child Job failed"
            queued = [p for p in phases if p.startswith("queued:")]
            if len(queued) < len(phases) or not queued:
                return "running", None
            return min(queued), None
        t = now - self.created
        n = len(self.kind.queued)
        if t < self.queue_seconds:
            return f"queued:{min(n - 1, int(t * n / self.queue_seconds))}", None
        if self.command is not None:
            if self.process is None or self.process.poll() is None or _pumping(self.process):
                return "running", None
            self.exit_code = self.process.returncode
            if self.exit_code != 0:
                return "failed", self.kind.exit_reason(self.exit_code)
            if self.failure is not None:
                return "failed", self.failure
            return "succeeded", None
        if self.run_seconds is None or t < self.queue_seconds + self.run_seconds:
            return "running", None
        if self.failure is not None:
            return "failed", self.failure
        return "succeeded", None

    def advance(self, now: float) -> None:
        """Moves the job to its phase now (through every queued state it has not shown yet)."""
        if self.done:
            return
        phase, reason = self.target(now)
        if phase == self.phase:
            return
        if phase.startswith("queued:") and self.phase and self.phase.startswith("queued:"):
            if int(phase.split(":")[1]) < int(self.phase.split(":")[1]):
                return
        previous = None if self.phase is None else self.kind.status(self.phase)
        if phase == "running" and self.command is not None and self.process is None:
            try:
                argv, env = self.command
                self.process = _spawn(
                    self.key, argv, {**env, **_batch_secrets(self.obj, self.arn)}, self.kind.log_stream(self)
                )
            except _SecretUnavailable as e:
                phase, reason = "failed", f"ResourceInitializationError: unable to pull secrets or registry auth: {e}"
            except OSError as e:
                phase, reason = "failed", f"CannotStartContainerError: {e}"
                self.exit_code = 127
        self.kind.apply(self, phase, reason)
        self.phase = phase
        endpoint, region = self.events
        if endpoint and (self.kind.repeat_events or previous != self.kind.status(phase)):
            detail = self.kind.detail(self, previous)
            _EVENTS.put(
                (
                    endpoint,
                    {
                        "region": region,
                        "Source": self.kind.source,
                        "DetailType": self.kind.detail_type,
                        "Resources": [self.arn],
                        "Detail": json.dumps(detail, default=str),
                    },
                )
            )


def _spawn(
    key: str, argv: list[str], env: dict[str, str], stream: Optional[tuple[Any, str, str]] = None
) -> subprocess.Popen:
    """Starts a job's command as a process group of its own, its output in the job's log file and, as
    each line comes, in the CloudWatch log stream `stream` names (as the service sends it there)."""
    full = dict(os.environ)
    url = os.environ.get("UPDRAFT_MOTO_URL")
    if url:
        full.setdefault("AWS_ENDPOINT_URL", url)
        full.setdefault("FLYTE_AWS_ENDPOINT", url)
    full.setdefault("AWS_ACCESS_KEY_ID", "testing")
    full.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    full.update(env)
    logs = os.environ.get("UPDRAFT_MOTO_JOB_LOGS") or tempfile.gettempdir()
    os.makedirs(logs, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    path = os.path.join(logs, f"{safe}.log")
    log = open(path, "ab")
    if stream is None:
        try:
            process = subprocess.Popen(
                argv, env=full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            process.updraft_log = path  # type: ignore[attr-defined]
            return process
        finally:
            log.close()
    try:
        process = subprocess.Popen(
            argv, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        log.close()
        raise
    backend, group, name = stream
    with _LOCK:
        backend.ensure_log_group(group)
        backend.ensure_log_stream(group, name)
    pump = threading.Thread(target=_pump, args=(process, log, backend, group, name), daemon=True)
    pump.start()
    process.updraft_pump = pump  # type: ignore[attr-defined]
    process.updraft_log = path  # type: ignore[attr-defined]
    return process


def _pumping(process: subprocess.Popen) -> bool:
    """Whether a job's output is still on its way to CloudWatch (the job ends after it arrives)."""
    pump = getattr(process, "updraft_pump", None)
    return pump is not None and pump.is_alive()


def _pump(process: subprocess.Popen, log: Any, backend: Any, group: str, stream: str) -> None:
    """Copies a job's output, line by line, to its log file and its CloudWatch log stream."""
    with log:
        for raw in iter(process.stdout.readline, b""):
            log.write(raw)
            log.flush()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with _LOCK:
                try:
                    backend.put_log_events(group, stream, [{"timestamp": int(time.time() * 1000), "message": line}])
                except Exception as e:  # a line CloudWatch refuses (e.g. too long) stays in the file only
                    print(f"lifecycles: {group} {stream}: {e}", file=sys.stderr)
        process.stdout.close()


def _kill(job: "Job") -> None:
    """Stops a job's process (its whole group), if it runs."""
    p = job.process
    if p is not None and p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()


def track(job: Job) -> Job:
    """Starts a job's lifecycle: it is queued at once."""
    with _LOCK:
        _JOBS[job.key] = job
        job.advance(time.monotonic())
    return job


def tracked(key: str) -> Optional[Job]:
    """The job with this key, if it has a lifecycle."""
    with _LOCK:
        return _JOBS.get(key)


def stop(key: str, reason: Optional[str]) -> bool:
    """Stops a job that has not finished; False when there is no such job or it has finished."""
    with _LOCK:
        job = _JOBS.get(key)
        if job is None or job.done:
            return False
        if job.stop_at is not None:
            return True  # already stopping
        job.stop_at = time.monotonic()
        job.stop_reason = reason
        _kill(job)
        for child in job.children or []:
            if not child.done and child.stop_at is None:
                child.stop_at = job.stop_at
                child.stop_reason = reason
                _kill(child)
        job.advance(time.monotonic())
        return True


def finish(key: str, outcome: str, reason: Optional[str]) -> str:
    """Ends a job now as `succeeded` or `failed`; returns an error message, or "" when done."""
    if outcome not in ("succeeded", "failed"):
        return f'outcome must be "succeeded" or "failed", not {outcome!r}'
    with _LOCK:
        job = _JOBS.get(key)
        if job is None:
            return f"no job {key}"
        if job.done or job.stop_at is not None:
            return f"job {key} has already ended ({job.kind.status(job.phase or 'queued:0')})"
        for j in (job.children or []) + [job]:
            if not j.done:
                j.finish = (outcome, reason or ("Failed on request" if outcome == "failed" else None))
        job.advance(time.monotonic())
        return ""


def jobs() -> dict[str, str]:
    """Every job's key and state."""
    with _LOCK:
        return {k: j.kind.status(j.phase or "queued:0") for k, j in _JOBS.items()}


def _tick() -> None:
    while True:
        time.sleep(0.05)
        with _LOCK:
            now = time.monotonic()
            pending = [j for j in _JOBS.values() if not j.done]
            # children first, so an array job follows them in the same tick
            for job in sorted(pending, key=lambda j: j.children is not None):
                try:
                    job.advance(now)
                except Exception as e:  # a broken job must not stop the others
                    print(f"lifecycles: job {job.key}: {e!r}", file=sys.stderr)
                    job.phase = "failed"


def _publish() -> None:
    clients: dict[tuple[str, str], Any] = {}
    while True:
        endpoint, entry = _EVENTS.get()
        region = entry.pop("region")
        try:
            import boto3

            client = clients.get((endpoint, region))
            if client is None:
                client = boto3.client(
                    "events",
                    endpoint_url=endpoint,
                    region_name=region,
                    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
                )
                clients[(endpoint, region)] = client
            out = client.put_events(Entries=[entry])
            if out.get("FailedEntryCount"):
                print(f"lifecycles: event refused: {out['Entries']}", file=sys.stderr)
        except Exception as e:
            print(f"lifecycles: could not publish to {endpoint}: {e!r}", file=sys.stderr)


# ------------------------------------------------------------------ the services' patches

_SAGEMAKER = {
    "training": SageMakerKind(
        "training", "Training", "training_job_status", "training_end_time", "response_object"
    ),
    "processing": SageMakerKind(
        "processing", "Processing", "processing_job_status", "processing_end_time", "response_object"
    ),
    "transform": SageMakerKind(
        "transform", "Transform", "transform_job_status", "transform_end_time", "response_object"
    ),
    "tuning": SageMakerKind(
        "tuning",
        "HyperParameter Tuning",
        "hyper_parameter_tuning_job_status",
        "hyper_parameter_tuning_end_time",
        "describe",
    ),
}

# what: (create method, its name argument, the backend's jobs dict, the Stop action's name parameter,
# the kind's title in SageMaker's messages)
_SAGEMAKER_API = {
    "training": (
        "create_training_job",
        "training_job_name",
        "training_jobs",
        "TrainingJobName",
        "Training job",
    ),
    "processing": (
        "create_processing_job",
        "processing_job_name",
        "processing_jobs",
        "ProcessingJobName",
        "Processing job",
    ),
    "transform": (
        "create_transform_job",
        "transform_job_name",
        "transform_jobs",
        "TransformJobName",
        "Transform job",
    ),
    "tuning": (
        "create_hyper_parameter_tuning_job",
        "hyper_parameter_tuning_job_name",
        "hyper_parameter_tuning_jobs",
        "HyperParameterTuningJobName",
        "Hyper parameter tuning job",
    ),
}


# The request being served, for what moto's SageMaker backend does not keep (a job's Environment).
_REQUEST = threading.local()


def _sagemaker_command(what: str, name: str, obj: Any) -> Optional[tuple[list[str], dict[str, str]]]:
    """The command and environment a training or processing job's container runs, when the job names
    one (`ContainerEntrypoint` and `ContainerArguments`, as Pythonic jobs do); None for an algorithm
    image's job, which runs for `run_seconds`."""
    if what == "training":
        spec = obj.algorithm_specification or {}
    elif what == "processing":
        spec = obj.app_specification or {}
    else:
        return None
    argv = list(spec.get("ContainerEntrypoint") or []) + list(spec.get("ContainerArguments") or [])
    env = {str(k): str(v) for k, v in (getattr(_REQUEST, "environment", None) or {}).items()}
    if not argv and what == "training":
        argv, hp_env = _runner_command(obj.hyper_parameters or {})
        env.update(hp_env)
    if not argv:
        return None
    obj.environment = dict(env)
    if what == "training":
        env["TRAINING_JOB_NAME"] = name
        env["TRAINING_JOB_ARN"] = obj.arn
    else:
        env["PROCESSING_JOB_NAME"] = name
    return [str(a) for a in argv], env


_CMD_PREFIX = "__FLYTE_CMD_"
_ENV_PREFIX = "__FLYTE_ENV_VAR_"
_SUFFIX = "__"


def _runner_command(hyperparameters: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The command flytekit's SageMaker runner (the image's `SAGEMAKER_PROGRAM`) rebuilds from a custom
    training job's hyperparameters: `__FLYTE_CMD_<i>_<arg>__` in the order of `i`, and
    `__FLYTE_ENV_VAR_<name>__` as the environment. Empty for any other job."""
    args: list[tuple[int, str]] = []
    env: dict[str, str] = {}
    for key, value in hyperparameters.items():
        if not key.endswith(_SUFFIX):
            continue
        if key.startswith(_CMD_PREFIX):
            index, _, arg = key[len(_CMD_PREFIX) : -len(_SUFFIX)].partition("_")
            if index.isdigit():
                args.append((int(index), arg))
        elif key.startswith(_ENV_PREFIX):
            env[key[len(_ENV_PREFIX) : -len(_SUFFIX)]] = str(value)
    return [a for _, a in sorted(args)], env


def _write_model(job: Any) -> None:
    """A completed algorithm training job's model, as SageMaker leaves it: `model.tar.gz` (holding
    `hyperparameters.json`) at the job's `ModelArtifacts`, in this moto's S3 when the bucket exists."""
    import io
    import tarfile

    uri = ((getattr(job, "model_artifacts", None) or {}).get("S3ModelArtifacts")) or ""
    if not uri.startswith("s3://"):
        return
    bucket, _, key = uri[len("s3://") :].partition("/")
    body = json.dumps(getattr(job, "hyper_parameters", None) or {}, sort_keys=True).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("hyperparameters.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    try:
        _s3_put(uri, job.arn.split(":")[4], buf.getvalue())
    except Exception as e:  # a missing bucket: the job still completes, as moto's own do
        print(f"lifecycles: no model written to {uri}: {e}", file=sys.stderr)


def _s3_client():
    """boto3's S3 client of the jobs' S3 when it is another service's (AWS_ENDPOINT_URL, e.g.
    LocalStack's), else None (this moto's own, in process)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return None
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


def _s3_put(uri: str, account: str, body: bytes) -> None:
    """Writes an object of the jobs' S3."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    client = _s3_client()
    if client is not None:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    else:
        from moto.s3.models import s3_backends

        s3_backends[account]["aws"].put_object(bucket, key, body)


def _s3_get(uri: str, account: str) -> bytes:
    """Reads an object of the jobs' S3."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    client = _s3_client()
    if client is not None:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    from moto.s3.models import s3_backends

    return bytes(s3_backends[account]["aws"].get_object(bucket, key).value)


def _patch_sagemaker() -> None:
    from moto.core.responses import EmptyResult
    from moto.sagemaker import models, responses
    from moto.sagemaker.exceptions import ResourceInUseException, ValidationError

    backend = models.SageMakerModelBackend
    originals = {"create_training_job": backend.create_training_job}
    for what, (create, name_arg, table, param, title) in _SAGEMAKER_API.items():

        def created(original: Callable, what=what, name_arg=name_arg, table=table, title=title):
            def create_job(self, *args, **kwargs):
                name = kwargs.get(name_arg)
                if name in getattr(self, table):
                    arn = getattr(self, table)[name].arn
                    raise ResourceInUseException(
                        f"{title} names must be unique within an AWS account and region, "
                        f"and a {title.lower()} with this name already exists ({arn})"
                    )
                out = original(self, *args, **kwargs)
                obj = getattr(self, table)[name]
                if what == "tuning":  # its best training job is made when it completes
                    obj.updraft_backend = self
                    obj.updraft_create_training_job = originals["create_training_job"]
                command = _sagemaker_command(what, name, obj)
                track(Job(_SAGEMAKER[what], f"sagemaker:{what}:{name}", name, obj, obj.arn, command=command))
                return out

            return create_job

        setattr(backend, create, created(getattr(backend, create)))

        def stopper(what=what, param=param, table=table, title=title):
            def stop_job(self):
                name = self._get_param(param)
                jobs_ = getattr(self.sagemaker_backend, table)
                if name not in jobs_:
                    raise ValidationError(message=f"Could not find {title.lower()} '{name}'.")
                job = tracked(f"sagemaker:{what}:{name}")
                if job is None or job.done:
                    status = getattr(jobs_[name], _SAGEMAKER[what].status_attr)
                    raise ValidationError(
                        message=f"The request was rejected because the {title.lower()} is in status {status}."
                    )
                stop(job.key, None)
                return EmptyResult()

            return stop_job

        action = "stop_" + create[len("create_") :]
        setattr(responses.SageMakerResponse, action, stopper())

    # Environment reaches the job's process (moto's backend drops it).
    for action in ("create_training_job", "create_processing_job"):

        def keeping_environment(original: Callable):
            def handler(self):
                _REQUEST.environment = self._get_param("Environment")
                try:
                    return original(self)
                finally:
                    _REQUEST.environment = None

            return handler

        setattr(
            responses.SageMakerResponse,
            action,
            keeping_environment(getattr(responses.SageMakerResponse, action)),
        )

    # Models, endpoint configurations and endpoints: a name taken is SageMaker's "Cannot create already
    # existing" error (moto replaces the old one); an endpoint is Creating before it is InService.
    for create, name_arg, table, noun in (
        ("create_model", "model_name", "_models", "model"),
        ("create_endpoint_config", "endpoint_config_name", "endpoint_configs", "endpoint configuration"),
        ("create_endpoint", "endpoint_name", "endpoints", "endpoint"),
    ):

        def unique(original: Callable, name_arg=name_arg, table=table, noun=noun, create=create):
            def create_once(self, *args, **kwargs):
                name = kwargs[name_arg] if name_arg in kwargs else args[0]
                existing = getattr(self, table).get(name)
                if existing is not None:
                    raise ValidationError(message=f'Cannot create already existing {noun} "{existing.arn}".')
                out = original(self, *args, **kwargs)
                if create == "create_endpoint":
                    track(Job(EndpointKind(), f"sagemaker:endpoint:{name}", name, out, out.arn))
                return out

            return create_once

        setattr(backend, create, unique(getattr(backend, create)))

    delete = backend.delete_endpoint

    def delete_endpoint(self, endpoint_name: str) -> None:
        delete(self, endpoint_name)
        with _LOCK:
            _JOBS.pop(f"sagemaker:endpoint:{endpoint_name}", None)

    backend.delete_endpoint = delete_endpoint


class _SecretUnavailable(Exception):
    """A secret a Batch job definition names that its container cannot be given."""


def _batch_secrets(obj: Any, arn: str) -> dict[str, str]:
    """A Batch job's secrets (its definition's `secrets`), as Batch gives them when the container starts:
    each `valueFrom` (`<secret ARN>[:<JSON key>:<version stage>:<version id>]`) read from this moto's
    Secrets Manager, the whole `SecretString` or its JSON key's value. Nothing for other jobs."""
    definition = getattr(obj, "job_definition", None)
    props = getattr(definition, "container_properties", None) or {}
    secrets = props.get("secrets") or []
    if not secrets:
        return {}
    from moto.secretsmanager.models import secretsmanager_backends

    _, _, _, region, account = arn.split(":")[:5]
    backend = secretsmanager_backends[account][region]
    values = {}
    for s in secrets:
        parts = s["valueFrom"].split(":")
        secret, (key, stage, version) = ":".join(parts[:7]), (parts[7:] + ["", "", ""])[:3]
        try:
            text = backend.get_secret_value(secret, version or None, stage or None).get("SecretString") or ""
        except Exception as e:
            raise _SecretUnavailable(
                f"retrieve secret from asm: failed to fetch secret {secret}: {type(e).__name__}"
            ) from None
        if key:
            try:
                value = json.loads(text)[key]
            except (ValueError, KeyError, TypeError):
                raise _SecretUnavailable(
                    f"retrieve secret from asm: invalid key {key} in secret {secret}"
                ) from None
            text = value if isinstance(value, str) else json.dumps(value)
        values[s["name"]] = text
    return values


def _batch_command(job) -> Optional[tuple[list[str], dict[str, str]]]:
    """The command and environment a Batch container job runs (overrides over its definition)."""
    props = job.job_definition.container_properties
    if props is None:
        return None
    overrides = job.container_overrides or {}
    argv = overrides.get("command") or props.get("command") or []
    if not argv:
        return None
    env = {e["name"]: e["value"] for e in props.get("environment") or []}
    env.update({e["name"]: e["value"] for e in overrides.get("environment") or []})
    env["AWS_BATCH_JOB_ID"] = job.job_id
    # Batch's parameter substitution: Ref::name in the command
    params = job.parameters or {}
    argv = [params.get(a[5:], a) if a.startswith("Ref::") else a for a in argv]
    return [str(a) for a in argv], env


def _patch_batch() -> None:
    from moto.batch import models
    from moto.batch_simple import models as simple
    from moto.core.models import default_user_config

    default_user_config.setdefault("batch", {})["use_docker"] = False
    kind = BatchKind()

    def _mark_job_as_finished(self, include_start_attempt: bool, job) -> None:
        self.backend._jobs[job.job_id] = job
        job.log_stream_name = job._stream_name
        job._transitions = []  # the lifecycle, not moto's state manager, moves it on
        name = job.job_name
        command = _batch_command(job)
        if ":" in job.job_id:
            # an array's child: tracked now, the parent (registered after its children) follows them
            if command is not None:
                command[1]["AWS_BATCH_JOB_ARRAY_INDEX"] = job.job_id.rsplit(":", 1)[1]
            track(Job(kind, f"batch:{job.job_id}", name, job, job.arn, start_attempt=include_start_attempt, command=command))
            return
        children = None
        if "size" in job.array_properties:
            prefix = f"batch:{job.job_id}:"
            with _LOCK:
                children = [j for k, j in _JOBS.items() if k.startswith(prefix)]
        track(Job(kind, f"batch:{job.job_id}", name, job, job.arn, children, include_start_attempt,
                  command=None if children is not None else command))

    simple.BatchSimpleBackend._mark_job_as_finished = _mark_job_as_finished

    terminate = models.Job.terminate

    def terminate_job(self, reason: str) -> None:
        if not stop(f"batch:{self.job_id}", reason):
            terminate(self, reason)

    models.Job.terminate = terminate_job
    describe = models.Job.describe

    def describe_job(self) -> dict[str, Any]:
        out = describe(self)
        if self.exit_code is not None and isinstance(out.get("container"), dict):
            out["container"]["exitCode"] = self.exit_code  # moto's container details drop it
        return out

    models.Job.describe = describe_job


def _patch_emr_serverless() -> None:
    from moto.emrserverless import models
    from moto.emrserverless.exceptions import ValidationException

    backend = models.EMRServerlessBackend
    start = backend.start_job_run

    def start_job_run(self, *args, **kwargs):
        application_id, token = kwargs.get("application_id"), kwargs.get("client_token")
        # EMR Serverless's clientToken: a repeated start with the same token is the same job run
        for run in (self.job_runs.get(application_id) or []) if token else []:
            if getattr(run, "client_token", None) == token:
                return run
        run = start(self, *args, **kwargs)
        name = run.name or run.id
        key = f"emr-serverless:{run.application_id}/{run.id}"
        track(Job(EmrServerlessKind(), key, name, run, run.arn, command=_emr_command(key, run)))
        return run

    backend.start_job_run = start_job_run
    cancel = backend.cancel_job_run

    def cancel_job_run(self, application_id: str, job_run_id: str):
        job = tracked(f"emr-serverless:{application_id}/{job_run_id}")
        if job is None:
            return cancel(self, application_id, job_run_id)
        self.get_job_run(application_id, job_run_id)
        if job.done:
            raise ValidationException(
                f"Job run {job_run_id} is in a terminal state ({job.obj.state}) and cannot be cancelled"
            )
        stop(job.key, "Job run cancelled by user")
        return application_id, job_run_id

    backend.cancel_job_run = cancel_job_run


def _emr_command(key: str, run: Any) -> Optional[tuple[list[str], dict[str, str]]]:
    """A Spark job run whose entry point is a Python file in S3 runs it as a local process, with its
    `entryPointArguments` and the driver's environment from `sparkSubmitParameters`
    (`--conf spark.emr-serverless.driverEnv.NAME=VALUE`); other runs run nothing."""
    spark = (getattr(run, "job_driver", None) or {}).get("sparkSubmit") or {}
    entry = spark.get("entryPoint") or ""
    if not (entry.startswith("s3://") and entry.endswith(".py")):
        return None
    try:
        body = _s3_get(entry, run.arn.split(":")[4])
    except Exception as e:  # the job fails as EMR fails a run whose entry point is missing
        print(f"lifecycles: {key}: cannot read the entry point {entry}: {e}", file=sys.stderr)
        return ["false"], {}
    folder = os.path.join(tempfile.gettempdir(), "updraft-emr-entrypoints")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "".join(c if c.isalnum() else "_" for c in key) + ".py")
    with open(path, "wb") as f:
        f.write(body)
    env: dict[str, str] = {}
    words = (spark.get("sparkSubmitParameters") or "").split()
    for i, w in enumerate(words):
        if w == "--conf" and i + 1 < len(words):
            name, _, value = words[i + 1].partition("=")
            prefix = "spark.emr-serverless.driverEnv."
            if name.startswith(prefix):
                env[name[len(prefix) :]] = value
    env["EMR_SERVERLESS_JOB_RUN_ID"] = run.id
    args = [str(a) for a in spark.get("entryPointArguments") or []]
    return ["python3", path, *args], env


def _patch_athena() -> None:
    from moto.athena import models, responses

    backend = models.AthenaBackend
    start = backend.start_query_execution
    respond = responses.AthenaResponse.start_query_execution
    tokens: dict[tuple[str, str, str], str] = {}

    def start_with_token(self):
        # Athena's ClientRequestToken: a repeated start with the same token is the same query
        token = self._get_param("ClientRequestToken")
        at = (self.current_account, self.region, token)
        if token and at in tokens:
            return json.dumps({"QueryExecutionId": tokens[at]})
        out = respond(self)
        if token and isinstance(out, str):
            exec_id = json.loads(out).get("QueryExecutionId")
            if exec_id:
                tokens[at] = exec_id
        return out

    responses.AthenaResponse.start_query_execution = start_with_token

    def start_query_execution(self, *args, **kwargs):
        exec_id = start(self, *args, **kwargs)
        execution = self.executions[exec_id]
        execution._transitions = []  # the lifecycle, not moto's state manager, moves it on
        execution.updraft_reason = None
        arn = f"arn:aws:athena:{self.region_name}:{self.account_id}:queryexecution/{exec_id}"
        track(Job(AthenaKind(), f"athena:{exec_id}", execution.query, execution, arn))
        return exec_id

    backend.start_query_execution = start_query_execution

    def stop_query_execution(self, exec_id: str) -> None:
        if not stop(f"athena:{exec_id}", "Query cancelled by user"):
            execution = self.executions[exec_id]
            if tracked(f"athena:{exec_id}") is None:
                execution.status = "CANCELLED"

    backend.stop_query_execution = stop_query_execution
    get = responses.AthenaResponse.get_query_execution

    def get_query_execution(self):
        out = get(self)
        body = json.loads(out) if isinstance(out, str) else None
        if body is None:
            return out
        exec_id = body.get("QueryExecution", {}).get("QueryExecutionId")
        execution = self.athena_backend.executions.get(exec_id)
        reason = getattr(execution, "updraft_reason", None)
        if reason:
            body["QueryExecution"]["Status"]["StateChangeReason"] = reason
        return json.dumps(body)

    responses.AthenaResponse.get_query_execution = get_query_execution


def _respond(start_response, code: int, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    status = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found", 409: "409 Conflict"}[code]
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def control(environ: dict[str, Any], start_response) -> Optional[list[bytes]]:
    """Serves `/_updraft/lifecycle` and `/_updraft/jobs`; None for any other path."""
    path = environ.get("PATH_INFO", "")
    if not path.startswith("/_updraft/"):
        return None
    method = environ.get("REQUEST_METHOD", "GET")
    body: Any = {}
    if method == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(size) if size else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            return _respond(start_response, 400, {"error": f"not JSON: {e}"})
    if path == "/_updraft/lifecycle":
        if method == "POST":
            try:
                return _respond(start_response, 200, configure(body))
            except SettingsError as e:
                return _respond(start_response, 400, {"error": str(e)})
        return _respond(start_response, 200, settings())
    if path == "/_updraft/jobs":
        return _respond(start_response, 200, jobs())
    if path.startswith("/_updraft/jobs/") and method == "POST":
        key = path[len("/_updraft/jobs/") :]
        if not isinstance(body, dict):
            return _respond(start_response, 400, {"error": "the body must be a JSON object"})
        if tracked(key) is None:
            return _respond(start_response, 404, {"error": f"no job {key}"})
        err = finish(key, body.get("outcome", ""), body.get("reason"))
        if err:
            return _respond(start_response, 409 if "already ended" in err else 400, {"error": err})
        return _respond(start_response, 200, {key: jobs()[key]})
    return _respond(start_response, 404, {"error": f"no such control path {path}"})


def install() -> None:
    """Patches moto's backends and server, and starts the threads that move jobs and publish events."""
    start = os.environ.get("UPDRAFT_MOTO_LIFECYCLE")
    if start:
        try:
            configure(json.loads(start))
        except (ValueError, SettingsError) as e:
            sys.exit(f"moto launcher: UPDRAFT_MOTO_LIFECYCLE: {e}")
    _patch_sagemaker()
    _patch_batch()
    _patch_emr_serverless()
    _patch_athena()

    from moto.moto_server import werkzeug_app

    call = werkzeug_app.DomainDispatcherApplication.__call__

    def __call__(self, environ, start_response):
        out = control(environ, start_response)
        return out if out is not None else call(self, environ, start_response)

    werkzeug_app.DomainDispatcherApplication.__call__ = __call__
    threading.Thread(target=_tick, name="lifecycles", daemon=True).start()
    threading.Thread(target=_publish, name="lifecycle-events", daemon=True).start()
