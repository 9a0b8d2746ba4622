"""The moto launcher's job lifecycles (localstack/lifecycles.py), through boto3 against a launcher started
here: jobs of SageMaker, AWS Batch, EMR Serverless and Athena are queued, run, complete, fail on demand and
stop, and their state changes reach EventBridge (moto's own, delivering to an SQS queue).

Run by scripts/test with moto's environment: `python -m unittest discover -s localstack/tests`.
"""

import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

import boto3
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER = os.path.join(HERE, "..", "moto_launcher.py")
REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/updraft-test"
SETTINGS = {
    "queue_seconds": 0.4,
    "run_seconds": 1.0,
    "stop_seconds": 0.4,
    "failures": [{"match": "bad", "reason": "AlgorithmError: the test asked this job to fail"}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A training job's role, output, resources and stopping condition, the same in every test.
TRAINING_JOB = {
    "RoleArn": ROLE,
    "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
    "StoppingCondition": {"MaxRuntimeInSeconds": 60},
}

class Launcher:
    """A moto launcher on a free port, its state changes published to its own EventBridge."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        env["UPDRAFT_MOTO_LIFECYCLE"] = json.dumps(dict(SETTINGS, events_endpoint=self.url))
        self.log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"moto-lifecycles-{self.port}.log"), "w+")
        self.process = subprocess.Popen(
            [sys.executable, LAUNCHER, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/_updraft/lifecycle", timeout=1).read()
                break
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError(f"the moto launcher did not start:\n{self.log.read()}")
                time.sleep(0.1)

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def control(self, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


def wait_for(describe, done, timeout=20.0):
    """Polls `describe` until `done` holds of its answer; returns every distinct state seen, in order."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        state = describe()
        if not seen or seen[-1] != state:
            seen.append(state)
        if done(state):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; states seen: {seen}")
        time.sleep(0.05)


class Lifecycles(unittest.TestCase):
    @contextlib.contextmanager
    def running_commands(self):
        """Jobs run their commands as local processes (`run_commands`) within the block."""
        self.assertEqual(self.moto.control("/_updraft/lifecycle", {"run_commands": True})[0], 200)
        try:
            yield
        finally:
            self.moto.control("/_updraft/lifecycle", {"run_commands": False})

    @classmethod
    def setUpClass(cls) -> None:
        cls.moto = Launcher()
        sqs = cls.moto.client("sqs")
        events = cls.moto.client("events")
        cls.sqs = sqs
        cls.queues = {}
        for source in ("sagemaker", "batch", "emr-serverless", "athena"):
            url = sqs.create_queue(QueueName=f"events-{source}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            events.put_rule(Name=f"jobs-{source}", EventPattern=json.dumps({"source": [f"aws.{source}"]}))
            events.put_targets(Rule=f"jobs-{source}", Targets=[{"Id": "queue", "Arn": arn}])
            cls.queues[source] = url

    @classmethod
    def tearDownClass(cls) -> None:
        cls.moto.close()

    def events(self, source: str, field: str, value: str, state_field: str, until: str):
        """The states of one job's state-change events, in order, once the one reporting `until` came."""
        states, deadline = [], time.monotonic() + 20
        while until not in states:
            if time.monotonic() > deadline:
                self.fail(f"no {until} event for {value}; got {states}")
            out = self.sqs.receive_message(QueueUrl=self.queues[source], MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in out.get("Messages", []):
                event = json.loads(m["Body"])
                if event["detail"].get(field) == value:
                    self.assertEqual(event["source"], f"aws.{source}")
                    states.append(event["detail"][state_field])
                    self.last_event = event
                    self.sqs.delete_message(QueueUrl=self.queues[source], ReceiptHandle=m["ReceiptHandle"])
        return states

    # ------------------------------------------------------------------ SageMaker

    def training(self, name: str) -> None:
        self.moto.client("sagemaker").create_training_job(
            TrainingJobName=name,
            AlgorithmSpecification={"TrainingImage": "123.dkr.ecr.us-east-1.amazonaws.com/x:1", "TrainingInputMode": "File"},
            RoleArn=ROLE,
            OutputDataConfig={"S3OutputPath": "s3://bucket/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
        )

    def test_training_job_runs_then_completes_with_events(self) -> None:
        sm = self.moto.client("sagemaker")
        self.training("train-ok")
        first = sm.describe_training_job(TrainingJobName="train-ok")
        self.assertEqual(first["TrainingJobStatus"], "InProgress")
        self.assertNotIn("TrainingEndTime", first)
        seen = wait_for(
            lambda: (lambda d: (d["TrainingJobStatus"], d["SecondaryStatus"]))(
                sm.describe_training_job(TrainingJobName="train-ok")
            ),
            lambda s: s[0] != "InProgress",
        )
        self.assertEqual(seen, [("InProgress", "Starting"), ("InProgress", "Training"), ("Completed", "Completed")])
        self.assertIn("TrainingEndTime", sm.describe_training_job(TrainingJobName="train-ok"))
        states = self.events("sagemaker", "TrainingJobName", "train-ok", "TrainingJobStatus", "Completed")
        self.assertEqual(states, ["InProgress", "InProgress", "Completed"])
        self.assertEqual(self.last_event["detail-type"], "SageMaker Training Job State Change")

    def test_training_job_fails_on_demand_with_its_reason(self) -> None:
        sm = self.moto.client("sagemaker")
        self.training("train-bad")
        seen = wait_for(
            lambda: sm.describe_training_job(TrainingJobName="train-bad")["TrainingJobStatus"],
            lambda s: s != "InProgress",
        )
        self.assertEqual(seen, ["InProgress", "Failed"])
        d = sm.describe_training_job(TrainingJobName="train-bad")
        self.assertEqual(d["FailureReason"], "AlgorithmError: the test asked this job to fail")
        self.assertEqual(d["SecondaryStatus"], "Failed")

    def test_training_job_stops_and_names_are_unique(self) -> None:
        sm = self.moto.client("sagemaker")
        self.training("train-stop")
        wait_for(
            lambda: sm.describe_training_job(TrainingJobName="train-stop")["SecondaryStatus"],
            lambda s: s == "Training",
        )
        sm.stop_training_job(TrainingJobName="train-stop")
        seen = wait_for(
            lambda: sm.describe_training_job(TrainingJobName="train-stop")["TrainingJobStatus"],
            lambda s: s == "Stopped",
        )
        self.assertEqual(seen, ["Stopping", "Stopped"])
        with self.assertRaises(ClientError) as e:
            sm.stop_training_job(TrainingJobName="train-stop")
        self.assertIn("in status Stopped", str(e.exception))
        with self.assertRaises(ClientError) as e:
            sm.stop_training_job(TrainingJobName="no-such-job")
        self.assertIn("Could not find", str(e.exception))
        with self.assertRaises(ClientError) as e:
            self.training("train-stop")
        self.assertEqual(e.exception.response["Error"]["Code"], "ResourceInUse")
        self.assertIn("must be unique", str(e.exception))

    def test_endpoints_are_creating_then_in_service_and_names_are_unique(self) -> None:
        sm = self.moto.client("sagemaker")
        sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img:1"})
        with self.assertRaises(ClientError) as e:
            sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img:1"})
        self.assertEqual(e.exception.response["Error"]["Code"], "ValidationException")
        self.assertIn(f'Cannot create already existing model "arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/m"', str(e.exception))
        variants = [{"VariantName": "v", "ModelName": "m", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=variants)
        with self.assertRaises(ClientError) as e:
            sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=variants)
        self.assertIn("Cannot create already existing endpoint configuration", str(e.exception))
        for name in ("ep-ok", "ep-bad"):
            sm.create_endpoint(EndpointName=name, EndpointConfigName="c")
        seen = wait_for(
            lambda: sm.describe_endpoint(EndpointName="ep-ok")["EndpointStatus"], lambda s: s == "InService"
        )
        self.assertEqual(seen, ["Creating", "InService"])
        self.assertEqual(
            self.events("sagemaker", "EndpointName", "ep-ok", "EndpointStatus", "InService"), ["Creating", "InService"]
        )
        self.assertEqual(self.last_event["detail-type"], "SageMaker Endpoint State Change")
        wait_for(lambda: sm.describe_endpoint(EndpointName="ep-bad")["EndpointStatus"], lambda s: s == "Failed")
        self.assertEqual(sm.describe_endpoint(EndpointName="ep-bad")["FailureReason"], SETTINGS["failures"][0]["reason"])
        with self.assertRaises(ClientError) as e:
            sm.create_endpoint(EndpointName="ep-ok", EndpointConfigName="c")
        self.assertIn("Cannot create already existing endpoint", str(e.exception))
        sm.delete_endpoint(EndpointName="ep-ok")
        with self.assertRaises(ClientError):
            sm.describe_endpoint(EndpointName="ep-ok")

    def test_a_tuning_jobs_best_training_job_is_real(self) -> None:
        sm = self.moto.client("sagemaker")
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="tune-real",
            HyperParameterTuningJobConfig={
                "Strategy": "Bayesian",
                "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "rmse"},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
                "ParameterRanges": {"IntegerParameterRanges": [{"Name": "depth", "MinValue": "2", "MaxValue": "8"}]},
            },
            TrainingJobDefinition={
                "AlgorithmSpecification": {"TrainingImage": "img:1", "TrainingInputMode": "File"},
                "RoleArn": ROLE,
                "OutputDataConfig": {"S3OutputPath": "s3://b/tune/"},
                "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
                "StoppingCondition": {"MaxRuntimeInSeconds": 60},
            },
        )
        d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-real")
        self.assertEqual(d["TrainingJobStatusCounters"]["InProgress"], 1)
        wait_for(
            lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-real")[
                "HyperParameterTuningJobStatus"
            ],
            lambda s: s == "Completed",
        )
        best = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-real")["BestTrainingJob"]
        self.assertTrue(best["TrainingJobName"].startswith("tune-real-001-"), best)
        self.assertEqual(best["TunedHyperParameters"], {"depth": "2"})
        job = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])
        self.assertTrue(job["ModelArtifacts"]["S3ModelArtifacts"].startswith("s3://b/tune/"), job)

    def test_a_job_naming_an_entrypoint_runs_it_with_its_environment(self) -> None:
        sm = self.moto.client("sagemaker")
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"moto-entrypoint-{self.moto.port}")
        with self.running_commands():
            for name, code in (("entry-ok", 0), ("entry-exit", 3)):
                sm.create_training_job(
                    TrainingJobName=name,
                    AlgorithmSpecification={
                        "TrainingImage": "img:1",
                        "TrainingInputMode": "File",
                        "ContainerEntrypoint": ["sh", "-c", f'echo "$GREETING $TRAINING_JOB_NAME" > {out}-{name}; exit {code}'],
                    },
                    **TRAINING_JOB,
                    Environment={"GREETING": "hello"},
                )
            for name, end in (("entry-ok", "Completed"), ("entry-exit", "Failed")):
                wait_for(lambda n=name: sm.describe_training_job(TrainingJobName=n)["TrainingJobStatus"], lambda s, e=end: s == e)
                with open(f"{out}-{name}") as f:
                    self.assertEqual(f.read().strip(), f"hello {name}")
            d = sm.describe_training_job(TrainingJobName="entry-exit")
            self.assertEqual(d["FailureReason"], "AlgorithmError: the job's container exited with code 3")
            self.assertEqual(d["Environment"], {"GREETING": "hello"})

    def test_a_custom_training_jobs_hyperparameters_carry_its_command(self) -> None:
        sm = self.moto.client("sagemaker")
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"moto-runner-{self.moto.port}")
        script = f'echo "$GREETING $TRAINING_JOB_NAME $0" > {out}'
        args = ["sh", "-c", script, "third"]
        # Keys out of order, as a JSON object may carry them; the index orders them.
        hps = {f"__FLYTE_CMD_{i}_{a}__": "__FLYTE_CMD_DUMMY_VALUE__" for i, a in reversed(list(enumerate(args)))}
        hps.update({"__FLYTE_ENV_VAR_GREETING__": "hi", "sagemaker_mpi_enabled": "false"})
        with self.running_commands():
            sm.create_training_job(
                TrainingJobName="runner-ok",
                AlgorithmSpecification={"TrainingImage": "img:1", "TrainingInputMode": "File"},
                HyperParameters=hps,
                **TRAINING_JOB,
            )
            wait_for(
                lambda: sm.describe_training_job(TrainingJobName="runner-ok")["TrainingJobStatus"],
                lambda s: s == "Completed",
            )
            with open(out) as f:
                self.assertEqual(f.read().strip(), "hi runner-ok third")

    def test_an_algorithm_training_job_leaves_its_model_in_s3(self) -> None:
        import io
        import tarfile

        s3 = self.moto.client("s3")
        s3.create_bucket(Bucket="models")
        sm = self.moto.client("sagemaker")
        sm.create_training_job(
            TrainingJobName="algo-model",
            AlgorithmSpecification={"TrainingImage": "img:1", "TrainingInputMode": "File"},
            HyperParameters={"num_round": "10"},
            RoleArn=ROLE,
            OutputDataConfig={"S3OutputPath": "s3://models/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            StoppingCondition={"MaxRuntimeInSeconds": 60},
        )
        wait_for(
            lambda: sm.describe_training_job(TrainingJobName="algo-model")["TrainingJobStatus"],
            lambda s: s == "Completed",
        )
        body = s3.get_object(Bucket="models", Key="out/algo-model/output/model.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            member = tar.extractfile("hyperparameters.json")
            self.assertEqual(json.loads(member.read()), {"num_round": "10"})

    def test_processing_job_lifecycle(self) -> None:
        sm = self.moto.client("sagemaker")
        for name in ("process-ok", "process-bad"):
            sm.create_processing_job(
                ProcessingJobName=name,
                ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 10}},
                AppSpecification={"ImageUri": "123.dkr.ecr.us-east-1.amazonaws.com/x:1"},
                RoleArn=ROLE,
            )
        for name, end in (("process-ok", "Completed"), ("process-bad", "Failed")):
            seen = wait_for(
                lambda: sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"],
                lambda s: s != "InProgress",
            )
            self.assertEqual(seen[-1], end)
        self.assertEqual(
            sm.describe_processing_job(ProcessingJobName="process-bad")["FailureReason"],
            "AlgorithmError: the test asked this job to fail",
        )

    # ------------------------------------------------------------------ AWS Batch

    def batch_queue(self) -> str:
        if getattr(self, "_queue", None):
            return self._queue
        ec2 = self.moto.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName="batch", Description="batch", VpcId=vpc)["GroupId"]
        iam = self.moto.client("iam")
        role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        batch = self.moto.client("batch")
        env = batch.create_compute_environment(
            computeEnvironmentName="env",
            type="MANAGED",
            state="ENABLED",
            computeResources={
                "type": "FARGATE",
                "maxvCpus": 4,
                "subnets": [subnet],
                "securityGroupIds": [sg],
            },
            serviceRole=role,
        )["computeEnvironmentArn"]
        queue = batch.create_job_queue(
            jobQueueName="queue", state="ENABLED", priority=1, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}]
        )["jobQueueArn"]
        batch.register_job_definition(
            jobDefinitionName="job",
            type="container",
            containerProperties={"image": "busybox", "vcpus": 1, "memory": 128, "command": ["true"]},
        )
        Lifecycles._queue = queue
        return queue

    def batch_status(self, job_id: str) -> str:
        return self.moto.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]["status"]

    def test_batch_job_goes_through_every_state_with_events(self) -> None:
        batch = self.moto.client("batch")
        job = batch.submit_job(jobName="batch-ok", jobQueue=self.batch_queue(), jobDefinition="job")["jobId"]
        seen = wait_for(lambda: self.batch_status(job), lambda s: s in ("SUCCEEDED", "FAILED"))
        self.assertEqual(seen[-2:], ["RUNNING", "SUCCEEDED"])
        self.assertTrue(set(seen) <= {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"}, seen)
        d = batch.describe_jobs(jobs=[job])["jobs"][0]
        self.assertEqual(d["container"]["exitCode"], 0)
        self.assertEqual(len(d["attempts"]), 1)
        states = self.events("batch", "jobId", job, "status", "SUCCEEDED")
        self.assertEqual(states, ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"])
        self.assertEqual(self.last_event["detail-type"], "Batch Job State Change")

    def test_batch_job_fails_on_demand_and_terminates(self) -> None:
        batch = self.moto.client("batch")
        bad = batch.submit_job(jobName="batch-bad", jobQueue=self.batch_queue(), jobDefinition="job")["jobId"]
        slow = batch.submit_job(jobName="batch-slow", jobQueue=self.batch_queue(), jobDefinition="job")["jobId"]
        wait_for(lambda: self.batch_status(slow), lambda s: s == "RUNNING")
        batch.terminate_job(jobId=slow, reason="stopped by the test")
        self.assertEqual(wait_for(lambda: self.batch_status(slow), lambda s: s != "RUNNING")[-1], "FAILED")
        d = batch.describe_jobs(jobs=[slow])["jobs"][0]
        self.assertEqual(d["statusReason"], "stopped by the test")
        wait_for(lambda: self.batch_status(bad), lambda s: s in ("SUCCEEDED", "FAILED"))
        d = batch.describe_jobs(jobs=[bad])["jobs"][0]
        self.assertEqual((d["status"], d["statusReason"]), ("FAILED", "AlgorithmError: the test asked this job to fail"))
        self.assertEqual(d["container"]["exitCode"], 1)

    def test_batch_array_job_follows_its_children(self) -> None:
        batch = self.moto.client("batch")
        job = batch.submit_job(
            jobName="batch-array", jobQueue=self.batch_queue(), jobDefinition="job", arrayProperties={"size": 3}
        )["jobId"]
        self.assertNotEqual(self.batch_status(job), "SUCCEEDED")
        wait_for(lambda: self.batch_status(job), lambda s: s == "SUCCEEDED")
        d = batch.describe_jobs(jobs=[job])["jobs"][0]
        self.assertEqual(d["arrayProperties"]["statusSummary"]["SUCCEEDED"], 3)
        for i in range(3):
            self.assertEqual(self.batch_status(f"{job}:{i}"), "SUCCEEDED")

    def test_a_batch_jobs_command_prints_to_its_cloudwatch_stream(self) -> None:
        batch = self.moto.client("batch")
        logs = self.moto.client("logs")
        queue = self.batch_queue()
        batch.register_job_definition(
            jobDefinitionName="printer",
            type="container",
            containerProperties={
                "image": "busybox",
                "vcpus": 1,
                "memory": 128,
                "command": ["sh", "-c", "echo first line; echo second line >&2; exit 2"],
            },
        )
        with self.running_commands():
            job = batch.submit_job(jobName="printer", jobQueue=queue, jobDefinition="printer")["jobId"]
            wait_for(lambda: self.batch_status(job), lambda s: s in ("SUCCEEDED", "FAILED"))
            d = batch.describe_jobs(jobs=[job])["jobs"][0]
            self.assertEqual((d["status"], d["container"]["exitCode"]), ("FAILED", 2))
            stream = d["container"]["logStreamName"]
            self.assertEqual(stream, f"printer/default/{job}")
            events = logs.get_log_events(logGroupName="/aws/batch/job", logStreamName=stream, startFromHead=True)
            self.assertEqual([e["message"] for e in events["events"]], ["first line", "second line"])

    def test_a_training_jobs_command_prints_to_its_cloudwatch_stream(self) -> None:
        sm = self.moto.client("sagemaker")
        logs = self.moto.client("logs")
        with self.running_commands():
            sm.create_training_job(
                TrainingJobName="printing-job",
                AlgorithmSpecification={
                    "TrainingImage": "img:1",
                    "TrainingInputMode": "File",
                    "ContainerEntrypoint": ["sh", "-c", 'echo "epoch 1 of $TRAINING_JOB_NAME"; echo done'],
                },
                **TRAINING_JOB,
            )
            wait_for(
                lambda: sm.describe_training_job(TrainingJobName="printing-job")["TrainingJobStatus"],
                lambda s: s in ("Completed", "Failed"),
            )
            group = "/aws/sagemaker/TrainingJobs"
            streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix="printing-job")["logStreams"]
            self.assertEqual(len(streams), 1, streams)
            self.assertTrue(streams[0]["logStreamName"].startswith("printing-job/algo-1-"), streams)
            events = logs.get_log_events(
                logGroupName=group, logStreamName=streams[0]["logStreamName"], startFromHead=True
            )
            self.assertEqual([e["message"] for e in events["events"]], ["epoch 1 of printing-job", "done"])

    # ------------------------------------------------------------------ EMR Serverless

    def test_emr_serverless_run_completes_and_cancels(self) -> None:
        emr = self.moto.client("emr-serverless")
        app = emr.create_application(name="hive", releaseLabel="emr-7.0.0", type="HIVE")["applicationId"]
        driver = {"hive": {"query": "s3://bucket/query.sql"}}
        ok = emr.start_job_run(applicationId=app, executionRoleArn=ROLE, jobDriver=driver, name="hive-ok")["jobRunId"]
        stop = emr.start_job_run(applicationId=app, executionRoleArn=ROLE, jobDriver=driver, name="hive-stop")["jobRunId"]

        def state(run):
            return emr.get_job_run(applicationId=app, jobRunId=run)["jobRun"]["state"]

        wait_for(lambda: state(stop), lambda s: s == "RUNNING")
        emr.cancel_job_run(applicationId=app, jobRunId=stop)
        self.assertEqual(wait_for(lambda: state(stop), lambda s: s == "CANCELLED"), ["CANCELLING", "CANCELLED"])
        with self.assertRaises(ClientError):
            emr.cancel_job_run(applicationId=app, jobRunId=stop)
        seen = wait_for(lambda: state(ok), lambda s: s in ("SUCCESS", "FAILED"))
        self.assertEqual(seen[-2:], ["RUNNING", "SUCCESS"])
        states = self.events("emr-serverless", "jobRunId", ok, "state", "SUCCESS")
        self.assertEqual(states, ["SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "SUCCESS"])
        self.assertEqual(self.last_event["detail"]["applicationId"], app)

    def test_emr_serverless_client_tokens_and_python_entry_points(self) -> None:
        emr, s3 = self.moto.client("emr-serverless"), self.moto.client("s3")
        app = emr.create_application(name="spark", releaseLabel="emr-7.0.0", type="SPARK")["applicationId"]
        driver = {"hive": {"query": "s3://bucket/query.sql"}}
        once = [
            emr.start_job_run(applicationId=app, clientToken="tok-1", executionRoleArn=ROLE, jobDriver=driver)["jobRunId"]
            for _ in range(2)
        ]
        self.assertEqual(once[0], once[1])
        other = emr.start_job_run(applicationId=app, clientToken="tok-2", executionRoleArn=ROLE, jobDriver=driver)
        self.assertNotEqual(other["jobRunId"], once[0])
        # A Spark run whose entry point is a Python file in S3 runs it, with the driver's environment.
        s3.create_bucket(Bucket="emr-code")
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"emr-entry-{os.getpid()}.txt")
        code = b"import os, sys; open(os.environ['MARK'], 'w').write(' '.join(sys.argv[1:])); sys.exit(int(sys.argv[2]))"
        s3.put_object(Bucket="emr-code", Key="entry.py", Body=code)
        with self.running_commands():
            runs = {}
            for rc in (0, 3):
                submit = {
                    "entryPoint": "s3://emr-code/entry.py",
                    "entryPointArguments": ["rc", str(rc)],
                    "sparkSubmitParameters": f"--conf spark.executor.memory=1g --conf spark.emr-serverless.driverEnv.MARK={out}.{rc}",
                }
                runs[rc] = emr.start_job_run(
                    applicationId=app, executionRoleArn=ROLE, jobDriver={"sparkSubmit": submit}
                )["jobRunId"]

            def run(r):
                return emr.get_job_run(applicationId=app, jobRunId=r)["jobRun"]

            wait_for(lambda: run(runs[0])["state"], lambda s: s in ("SUCCESS", "FAILED"))
            self.assertEqual(run(runs[0])["state"], "SUCCESS")
            with open(f"{out}.0") as f:
                self.assertEqual(f.read(), "rc 0")
            wait_for(lambda: run(runs[3])["state"], lambda s: s in ("SUCCESS", "FAILED"))
            self.assertEqual(run(runs[3])["state"], "FAILED")
            self.assertEqual(run(runs[3])["stateDetails"], "the job's process exited with code 3")

    def test_an_emr_serverless_runs_driver_prints_to_cloudwatch_and_s3(self) -> None:
        emr, s3, logs = (self.moto.client(c) for c in ("emr-serverless", "s3", "logs"))
        app = emr.create_application(name="printer", releaseLabel="emr-7.0.0", type="SPARK")["applicationId"]
        s3.create_bucket(Bucket="emr-print")
        s3.put_object(Bucket="emr-print", Key="p.py", Body=b"print('rows: 12'); print('done')")
        driver = {"sparkSubmit": {"entryPoint": "s3://emr-print/p.py"}}

        def start(cloudwatch, s3_logs=None):
            overrides = {"monitoringConfiguration": {"cloudWatchLoggingConfiguration": cloudwatch}}
            if s3_logs:
                overrides["monitoringConfiguration"]["s3MonitoringConfiguration"] = {"logUri": s3_logs}
            return emr.start_job_run(
                applicationId=app, executionRoleArn=ROLE, jobDriver=driver, configurationOverrides=overrides
            )["jobRunId"]

        with self.running_commands():
            runs = {
                "default": start({"enabled": True}),
                "named": start({"enabled": True, "logGroupName": "/etl/spark", "logStreamNamePrefix": "nightly"}),
                "off": start({"enabled": False}, s3_logs="s3://emr-print/logs/"),
            }
            for r in runs.values():
                wait_for(
                    lambda: emr.get_job_run(applicationId=app, jobRunId=r)["jobRun"]["state"],
                    lambda s: s in ("SUCCESS", "FAILED"),
                )
            for group, prefix, run in (
                ("/aws/emr-serverless", "", runs["default"]),
                ("/etl/spark", "nightly", runs["named"]),
            ):
                stream = f"{prefix}/applications/{app}/jobs/{run}/SPARK_DRIVER/stdout"
                events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
                self.assertEqual([e["message"] for e in events["events"]], ["rows: 12", "done"])
            streams = logs.describe_log_streams(logGroupName="/aws/emr-serverless")["logStreams"]
            self.assertFalse([s for s in streams if runs["off"] in s["logStreamName"]], streams)
            # with S3 logging on, the driver's output is left gzipped in the log folder
            key = f"logs/applications/{app}/jobs/{runs['off']}/SPARK_DRIVER/stdout.gz"
            body = s3.get_object(Bucket="emr-print", Key=key)["Body"].read()
            self.assertEqual(gzip.decompress(body), b"rows: 12\ndone\n")
            listed = s3.list_objects_v2(Bucket="emr-print", Prefix="logs/")["Contents"]
            self.assertEqual([o["Key"] for o in listed], [key])

    # ------------------------------------------------------------------ Athena

    def test_athena_client_request_tokens_start_once(self) -> None:
        athena = self.moto.client("athena")

        def start(token):
            return athena.start_query_execution(
                QueryString="SELECT 3",
                ClientRequestToken=token,
                ResultConfiguration={"OutputLocation": "s3://bucket/results/"},
            )["QueryExecutionId"]

        first = start("t" * 32)
        self.assertEqual(start("t" * 32), first)
        self.assertNotEqual(start("u" * 32), first)

    def test_athena_query_succeeds_fails_and_stops(self) -> None:
        athena = self.moto.client("athena")

        def start(sql):
            return athena.start_query_execution(
                QueryString=sql, ResultConfiguration={"OutputLocation": "s3://bucket/results/"}
            )["QueryExecutionId"]

        def status(q):
            return athena.get_query_execution(QueryExecutionId=q)["QueryExecution"]["Status"]

        # Queued long enough to be seen however slow a fresh moto's first Athena calls are (this test
        # runs first); a query keeps the settings it started with.
        self.moto.control("/_updraft/lifecycle", {"queue_seconds": 3.0})
        try:
            ok, bad, stop = start("SELECT 1"), start("SELECT bad_column"), start("SELECT 2")
        finally:
            self.moto.control("/_updraft/lifecycle", {"queue_seconds": SETTINGS["queue_seconds"]})
        self.assertEqual(status(ok)["State"], "QUEUED")
        athena.stop_query_execution(QueryExecutionId=stop)
        self.assertEqual(status(stop)["State"], "CANCELLED")
        self.assertEqual(wait_for(lambda: status(ok)["State"], lambda s: s == "SUCCEEDED"), ["QUEUED", "RUNNING", "SUCCEEDED"])
        wait_for(lambda: status(bad)["State"], lambda s: s == "FAILED")
        self.assertEqual(status(bad)["StateChangeReason"], "AlgorithmError: the test asked this job to fail")
        states = self.events("athena", "queryExecutionId", ok, "currentState", "SUCCEEDED")
        self.assertEqual(states, ["QUEUED", "RUNNING", "SUCCEEDED"])

    # ------------------------------------------------------------------ the control API

    def test_control_api_holds_and_finishes_jobs(self) -> None:
        code, now = self.moto.control("/_updraft/lifecycle", {"run_seconds": None})
        self.assertEqual((code, now["run_seconds"]), (200, None))
        try:
            sm = self.moto.client("sagemaker")
            self.training("train-held")
            key = "sagemaker:training:train-held"
            time.sleep(1.5)  # past its queue and run time under the class's settings
            self.assertEqual(sm.describe_training_job(TrainingJobName="train-held")["TrainingJobStatus"], "InProgress")
            self.assertEqual(self.moto.control("/_updraft/jobs")[1][key], "InProgress")
            code, out = self.moto.control(f"/_updraft/jobs/{key}", {"outcome": "failed", "reason": "out of memory"})
            self.assertEqual((code, out), (200, {key: "Failed"}))
            d = sm.describe_training_job(TrainingJobName="train-held")
            self.assertEqual((d["TrainingJobStatus"], d["FailureReason"]), ("Failed", "out of memory"))
            code, out = self.moto.control(f"/_updraft/jobs/{key}", {"outcome": "succeeded"})
            self.assertEqual(code, 409, out)
            self.assertEqual(self.moto.control("/_updraft/jobs/batch:none", {"outcome": "failed"})[0], 404)
        finally:
            self.moto.control("/_updraft/lifecycle", {"run_seconds": SETTINGS["run_seconds"]})

    def test_control_api_refuses_bad_settings(self) -> None:
        for bad, words in (
            ({"run_secs": 1}, "unknown lifecycle setting 'run_secs'"),
            ({"queue_seconds": -1}, "queue_seconds must be"),
            ({"failures": [{"match": 1}]}, "failures must be"),
        ):
            code, out = self.moto.control("/_updraft/lifecycle", bad)
            self.assertEqual(code, 400)
            self.assertIn(words, out["error"])
        self.assertEqual(self.moto.control("/_updraft/lifecycle")[1]["run_seconds"], SETTINGS["run_seconds"])


if __name__ == "__main__":
    unittest.main()
