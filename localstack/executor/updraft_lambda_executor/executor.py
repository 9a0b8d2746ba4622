"""A LocalStack Lambda runtime executor that runs a function's `bootstrap` as a host process.

LocalStack's own executor starts a Docker container per execution environment. This one, selected with
`LAMBDA_RUNTIME_EXECUTOR=process`, serves the Lambda Runtime API itself on 127.0.0.1 and starts the
function's `bootstrap` (custom runtimes: `provided`, `provided.al2`, `provided.al2023`) as a process in the
unzipped code folder, with the environment LocalStack gives and `AWS_LAMBDA_RUNTIME_API` pointing at the
API. It follows the documented Runtime API
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html):

- `GET  /2018-06-01/runtime/invocation/next` hands out the next event, with the request id, deadline,
  function ARN and trace id headers; the first call marks the environment ready;
- `POST /2018-06-01/runtime/invocation/{id}/response` and `.../{id}/error` end an invocation;
- `POST /2018-06-01/runtime/init/error` fails the environment's start.

The function's timeout is enforced: a late invocation ends as `Sandbox.Timedout` and the process is
killed (with its whole process group), as is one that exits mid-invocation (`Runtime.ExitError`). So is
its memory size: a process whose resident memory goes over it is killed and the invocation ends as
`Runtime.OutOfMemory` (Lambda's own words for it). The next
invocation starts a fresh process. Output of the process is kept; each invocation's share, framed by the
START / END / REPORT lines Lambda writes, becomes the invocation's log, which LocalStack sends to
CloudWatch Logs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)

LOG = logging.getLogger(__name__)

API = "/2018-06-01/runtime"
HOST = "127.0.0.1"
# Host architectures as Lambda names them.
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
# Variables a bootstrap may need from the host besides what LocalStack gives.
PASSED_THROUGH = ("PATH", "LANG", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR")
# How long a process may take to ask for its first event.
START_TIMEOUT_S = float(os.environ.get("UPDRAFT_LAMBDA_START_TIMEOUT", "20"))


class _Invocation:
    """One event on its way through the Runtime API."""

    def __init__(self, request_id: str, arn: str, payload: bytes, trace_id: str, deadline_ms: int):
        self.request_id = request_id
        self.arn = arn
        self.payload = payload
        self.trace_id = trace_id
        self.deadline_ms = deadline_ms
        self.result: Future[tuple[bytes, bool]] = Future()


class _Process:
    """A running bootstrap and what it printed."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]):
        self.ready: Future[bool] = Future()
        self.events: queue.Queue[_Invocation | None] = queue.Queue()
        self.output = bytearray()
        self.lock = threading.Lock()
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for chunk in iter(lambda: self.popen.stdout.read1(65536), b""):
            with self.lock:
                self.output += chunk

    def _watch(self) -> None:
        code = self.popen.wait()
        self.reader.join(timeout=2)
        if not self.ready.done():
            self.ready.set_exception(
                LambdaRuntimeException(
                    f"bootstrap exited with status {code} before asking for an event; "
                    f"its output:\n{self.text()[-2000:]}"
                )
            )

    def text(self, start: int = 0) -> str:
        with self.lock:
            return bytes(self.output[start:]).decode("utf-8", "replace")

    def size(self) -> int:
        with self.lock:
            return len(self.output)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_mb(self) -> int:
        return self._status_mb("VmRSS")

    def peak_rss_mb(self) -> int:
        return self._status_mb("VmHWM")

    def _status_mb(self, field: str) -> int:
        """A memory figure of the process from /proc/<pid>/status, in MiB (0 once it is gone)."""
        try:
            status = Path(f"/proc/{self.popen.pid}/status").read_text()
        except OSError:
            return 0
        found = re.search(rf"{field}:\s+(\d+) kB", status)
        return int(found.group(1)) // 1024 if found else 0

    def kill(self) -> None:
        self.events.put(None)  # a request still waiting for an event from this process ends
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            LOG.warning("bootstrap %s did not exit after SIGKILL", self.popen.pid)
        self.reader.join(timeout=2)


class ProcessRuntimeExecutor(RuntimeExecutor):
    """Runs one execution environment of a function as a host process behind a Runtime API server."""

    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.env: dict[str, str] = {}
        self.process: _Process | None = None
        self.server: ThreadingHTTPServer | None = None
        self.current: _Invocation | None = None
        self.logs = ""
        self.lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self, env_vars: dict[str, str]) -> None:
        self.server = ThreadingHTTPServer((HOST, 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env.update({k: str(v) for k, v in env_vars.items()})
        code = self._code_dir()
        env["LAMBDA_TASK_ROOT"] = str(code)
        env["AWS_LAMBDA_RUNTIME_API"] = f"{HOST}:{self.server.server_address[1]}"
        self.env = env
        self._spawn()

    def _code_dir(self) -> Path:
        return Path(self.function_version.config.code.get_unzipped_code_location())

    def _spawn(self) -> None:
        code = self._code_dir()
        process = _Process([str(code / "bootstrap")], code, self.env)
        self.process = process
        try:
            process.ready.result(timeout=START_TIMEOUT_S)
        except FutureTimeout:
            process.kill()
            raise LambdaRuntimeException(
                f"bootstrap did not ask for an event within {START_TIMEOUT_S:.0f} s; "
                f"its output:\n{process.text()[-2000:]}"
            ) from None
        except Exception:
            process.kill()
            raise

    def stop(self) -> None:
        if self.process:
            self.process.kill()
            self.logs += self.process.text()
        current = self.current
        if current and not current.result.done():
            current.result.set_result((_error("Runtime.Stopped", "the environment was stopped"), True))
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    # --- invocations -----------------------------------------------------------------------------------

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        request_id = payload["invoke-id"]
        timeout_s = float(self.function_version.config.timeout or 3)
        with self.lock:
            if self.process is None or not self.process.alive():
                if self.process is not None:
                    self.logs += self.process.text()
                self._spawn()
            process = self.process
            assert process is not None
            mark = process.size()
            inv = _Invocation(
                request_id,
                payload.get("invoked-function-arn", ""),
                payload.get("payload", "").encode("utf-8"),
                payload.get("trace-id", ""),
                int((time.time() + timeout_s) * 1000),
            )
            self.current = inv
            started = time.perf_counter()
            process.events.put(inv)
            body, is_error = self._await(inv, process, timeout_s)
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.current = None
            time.sleep(0.005)  # let the reader catch the invocation's last lines
            rss_mb = process.peak_rss_mb()
            logs = (
                f"START RequestId: {request_id} Version: {self.function_version.id.qualifier}\n"
                f"{process.text(mark)}"
                f"END RequestId: {request_id}\n"
                f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms\t"
                f"Billed Duration: {max(1, int(elapsed_ms + 0.999))} ms\t"
                f"Memory Size: {self.function_version.config.memory_size} MB\t"
                f"Max Memory Used: {rss_mb} MB\n"
            )
            return InvocationResult(request_id, body, is_error=is_error, logs=logs)

    def _await(self, inv: _Invocation, process: _Process, timeout_s: float) -> tuple[bytes, bool]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return inv.result.result(timeout=0.05)
            except FutureTimeout:
                pass
            if not process.alive():
                # Everything it printed before it exited belongs to this invocation's log.
                process.reader.join(timeout=2)
                code = process.popen.returncode
                return (
                    _error(
                        "Runtime.ExitError",
                        f"RequestId: {inv.request_id} Error: Runtime exited with error: exit status {code}",
                    ),
                    True,
                )
            memory_mb = int(self.function_version.config.memory_size or 128)
            if process.rss_mb() > memory_mb:
                process.kill()
                return (
                    _error(
                        "Runtime.OutOfMemory",
                        f"RequestId: {inv.request_id} Error: Runtime exited with error: signal: killed",
                    ),
                    True,
                )
            if time.monotonic() > deadline:
                process.kill()
                return (
                    _error(
                        "Sandbox.Timedout",
                        f"RequestId: {inv.request_id} Error: Task timed out after {timeout_s:.2f} seconds",
                    ),
                    True,
                )

    def next_event(self) -> _Invocation | None:
        """Blocks until the next event for the current process; None once that process is gone."""
        process = self.process
        if process is None:
            return None
        if not process.ready.done():
            process.ready.set_result(True)
        return process.events.get()

    def finish(self, request_id: str, body: bytes, is_error: bool) -> bool:
        current = self.current
        if current is None or current.request_id != request_id or current.result.done():
            return False
        current.result.set_result((body, is_error))
        return True

    def init_error(self, body: bytes) -> None:
        process = self.process
        if process and not process.ready.done():
            process.ready.set_exception(
                LambdaRuntimeException(f"the runtime failed to initialise: {body.decode('utf-8', 'replace')}")
            )

    # --- addresses and logs ------------------------------------------------------------------------------

    def get_address(self) -> str:
        return HOST

    def get_endpoint_from_executor(self) -> str:
        return HOST

    def get_runtime_endpoint(self) -> str:
        port = self.server.server_address[1] if self.server else 0
        return f"http://{HOST}:{port}{API}"

    def get_logs(self) -> str:
        return self.logs + (self.process.text() if self.process else "")

    # --- versions ----------------------------------------------------------------------------------------

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        config = function_version.config
        if config.code is None:
            raise LambdaRuntimeException("the process executor runs zip packages only, not images")
        runtime = config.runtime or ""
        if not runtime.startswith("provided"):
            raise LambdaRuntimeException(
                f"the process executor runs custom runtimes (provided.al2023) only, not {runtime!r}"
            )
        host = ARCHITECTURES.get(platform.machine(), platform.machine())
        wanted = (config.architectures or ["x86_64"])[0]
        if wanted != host:
            raise LambdaRuntimeException(
                f"function {function_version.id.function_name} is built for {wanted}; this host runs {host}"
            )
        config.code.prepare_for_execution()
        bootstrap = Path(config.code.get_unzipped_code_location()) / "bootstrap"
        if not bootstrap.is_file():
            raise LambdaRuntimeException(
                f"function {function_version.id.function_name}: its zip has no `bootstrap` at the top"
            )
        bootstrap.chmod(bootstrap.stat().st_mode | 0o111)

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        # A deleted function's unzipped code (hundreds of MB for a debug build) leaves the disk with it.
        if function_version.config.code is not None:
            function_version.config.code.destroy_cached()

    @classmethod
    def validate_environment(cls) -> bool:
        return True


def _error(kind: str, message: str) -> bytes:
    return json.dumps({"errorType": kind, "errorMessage": message}).encode()


def _handler(executor: ProcessRuntimeExecutor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            LOG.debug("runtime api %s: " + format, executor.id, *args)

        def _reply(self, status: HTTPStatus, body: bytes = b"", headers: dict[str, str] | None = None):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != f"{API}/invocation/next":
                return self._reply(HTTPStatus.NOT_FOUND, _error("NotFound", self.path))
            inv = executor.next_event()
            if inv is None:
                return self._reply(HTTPStatus.GONE, _error("Runtime.Stopped", "the environment stops"))
            self._reply(
                HTTPStatus.OK,
                inv.payload,
                {
                    "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": inv.arn,
                    "Lambda-Runtime-Trace-Id": inv.trace_id,
                },
            )

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self._body()
            parts = self.path.removeprefix(API).strip("/").split("/")
            if parts == ["init", "error"]:
                executor.init_error(body)
                return self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')
            if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                if executor.finish(parts[1], body, parts[2] == "error"):
                    return self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')
                return self._reply(
                    HTTPStatus.BAD_REQUEST,
                    _error("InvalidRequestID", f"no invocation {parts[1]} is waiting for a result"),
                )
            self._reply(HTTPStatus.NOT_FOUND, _error("NotFound", self.path))

    return Handler


class ProcessRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    """Registers [`ProcessRuntimeExecutor`] as `process` (select with LAMBDA_RUNTIME_EXECUTOR=process)."""

    name = "process"

    def load(self, *args, **kwargs):
        return ProcessRuntimeExecutor
