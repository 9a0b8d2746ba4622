"""A test server of Qubole's commands API (v1.2), for the tests of Updraft's Hive connector: no real
Qubole can be reached from a test machine. It follows Qubole's documented behaviour:

- `POST /api/v1.2/commands` submits a command (`{"command_type": "HiveCommand", "query", "label",
  "tags", "timeout", "retry", "name"}`) and answers with it (`id`, `status: "waiting"`, …);
- `GET /api/v1.2/commands/<id>` is its status: `waiting` → `running` → `done`, or `error`, or
  `cancelled` after `PUT /api/v1.2/commands/<id>` with `{"status": "kill"}`;
- `GET /api/v1.2/commands/<id>/results` its results, `GET /api/v1.2/commands/<id>/logs` its log;
- `GET /api/v1.2/commands` the command history, newest first (`page`, `per_page`, `name`), as
  `{"paging_info": …, "commands": […]}`: every command received, with its exact query, label and tags;
- every call needs the account's token in `X-AUTH-TOKEN` (401 `Invalid Token` without it).

Timing and failures are settings (`--queue-seconds`, `--run-seconds`, or `GET`/`POST /_test/settings`):
`queue_seconds` (0.5) waiting, `run_seconds` (1; null keeps commands running), `failures` — a list of
`{"match", "reason"}`: a command whose query contains `match` ends `error` with `reason` in its log —
and `refusals` — a list of `{"match", "status", "message", "times"}`: a submit whose query contains
`match` is refused with that HTTP status (e.g. 429, Qubole's quota answer), `times` times (default
always). Standard library only.
"""

import argparse
import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PREFIX = "/api/v1.2/commands"
_LOCK = threading.Lock()
_SETTINGS = {"queue_seconds": 0.5, "run_seconds": 1.0, "failures": [], "refusals": []}
_COMMANDS: list[dict] = []
_TOKEN = ["test-token"]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _advance(c: dict) -> None:
    """Moves a command to its status now."""
    if c["status"] in ("done", "error", "cancelled"):
        return
    t = time.monotonic() - c["_created"]
    s = c["_settings"]
    if t < s["queue_seconds"]:
        return
    if c["status"] == "waiting":  # it ran, whether or not anyone looked while it did
        c["status"] = "running"
        c["start_time"] = _now()
        c["_log"].append("Starting the Hive query")
    if s["run_seconds"] is None or t < s["queue_seconds"] + s["run_seconds"]:
        return
    failure = next((f["reason"] for f in s["failures"] if f["match"] in c["command"]["query"]), None)
    c["end_time"] = _now()
    if failure is not None:
        c["status"] = "error"
        c["_log"].append(f"FAILED: {failure}")
    else:
        c["status"] = "done"
        c["_log"].append("OK")
        c["_results"] = "0\n"


def _public(c: dict) -> dict:
    return {k: v for k, v in c.items() if not k.startswith("_")}


class Handler(BaseHTTPRequestHandler):
    server_version = "qubole-test-server/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, code: int, body, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return None

    def _authorized(self) -> bool:
        if self.headers.get("X-AUTH-TOKEN") != _TOKEN[0]:
            self._send(401, {"error": {"error_code": 401, "error_message": "Invalid Token"}})
            return False
        return True

    def _command(self, rest: str):
        try:
            cid = int(rest)
        except ValueError:
            return None
        with _LOCK:
            c = next((c for c in _COMMANDS if c["id"] == cid), None)
            if c is not None:
                _advance(c)
        return c

    def do_GET(self):
        url = urlparse(self.path)
        path = url.path.rstrip("/")
        if path == "/_test/settings":
            with _LOCK:
                return self._send(200, _SETTINGS)
        if not path.startswith(PREFIX):
            return self._send(404, {"error": {"error_code": 404, "error_message": "Not Found"}})
        if not self._authorized():
            return
        rest = path[len(PREFIX) :].strip("/")
        if rest == "":
            q = parse_qs(url.query)
            page = max(1, int((q.get("page") or ["1"])[0]))
            per_page = max(1, min(100, int((q.get("per_page") or ["10"])[0])))
            name = (q.get("name") or [None])[0]
            with _LOCK:
                for c in _COMMANDS:
                    _advance(c)
                newest = [_public(c) for c in reversed(_COMMANDS) if name is None or c["name"] == name]
            chunk = newest[(page - 1) * per_page : page * per_page]
            more = page * per_page < len(newest)
            return self._send(
                200,
                {
                    "paging_info": {
                        "next_page": page + 1 if more else None,
                        "previous_page": page - 1 if page > 1 else None,
                        "per_page": per_page,
                    },
                    "commands": chunk,
                },
            )
        cid, _, what = rest.partition("/")
        c = self._command(cid)
        if c is None:
            return self._send(404, {"error": {"error_code": 404, "error_message": f"Command {cid} not found"}})
        if what == "":
            return self._send(200, _public(c))
        if what == "results":
            return self._send(200, {"results": c.get("_results", ""), "inline": True})
        if what == "logs":
            return self._send(200, "\n".join(c["_log"]) + "\n", "text/plain")
        return self._send(404, {"error": {"error_code": 404, "error_message": "Not Found"}})

    def do_POST(self):
        path = urlparse(self.path).path.rstrip("/")
        body = self._body()
        if path == "/_test/settings":
            if not isinstance(body, dict) or any(k not in _SETTINGS for k in body):
                return self._send(400, {"error": f"settings are an object of {sorted(_SETTINGS)}"})
            with _LOCK:
                _SETTINGS.update(body)
                return self._send(200, _SETTINGS)
        if path != PREFIX:
            return self._send(404, {"error": {"error_code": 404, "error_message": "Not Found"}})
        if not self._authorized():
            return
        if not isinstance(body, dict) or not body.get("query"):
            return self._send(422, {"error": {"error_code": 422, "error_message": "query is required"}})
        if body.get("command_type", "HiveCommand") != "HiveCommand":
            return self._send(422, {"error": {"error_code": 422, "error_message": "command_type must be HiveCommand"}})
        with _LOCK:
            for r in _SETTINGS["refusals"]:
                if r["match"] in body["query"] and r.get("times", 1) != 0:
                    if "times" in r:
                        r["times"] -= 1
                    status = int(r.get("status", 429))
                    message = r.get("message", "Too many requests")
                    return self._send(status, {"error": {"error_code": status, "error_message": message}})
            c = {
                "id": len(_COMMANDS) + 1,
                "status": "waiting",
                "command_type": "HiveCommand",
                "label": body.get("label") or "default",
                "tags": list(body.get("tags") or []),
                "name": body.get("name"),
                "timeout": body.get("timeout"),
                "retry": body.get("retry", 0),
                "command": {"query": body["query"], "sample": False},
                "created_at": _now(),
                "start_time": None,
                "end_time": None,
                "_created": time.monotonic(),
                "_settings": json.loads(json.dumps(_SETTINGS)),
                "_log": ["Command received"],
            }
            _COMMANDS.append(c)
            return self._send(200, _public(c))

    def do_PUT(self):
        path = urlparse(self.path).path.rstrip("/")
        body = self._body()
        if not path.startswith(PREFIX + "/"):
            return self._send(404, {"error": {"error_code": 404, "error_message": "Not Found"}})
        if not self._authorized():
            return
        c = self._command(path[len(PREFIX) :].strip("/"))
        if c is None:
            return self._send(404, {"error": {"error_code": 404, "error_message": "Command not found"}})
        if not isinstance(body, dict) or body.get("status") != "kill":
            return self._send(422, {"error": {"error_code": 422, "error_message": 'only {"status": "kill"}'}})
        with _LOCK:
            if c["status"] in ("waiting", "running"):
                c["status"] = "cancelled"
                c["end_time"] = _now()
                c["_log"].append("Command was killed")
        return self._send(200, {"kill_succeeded": "true", "result": "Command has been killed"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--token", default="test-token")
    p.add_argument("--queue-seconds", type=float, default=0.5)
    p.add_argument("--run-seconds", type=float, default=1.0)
    a = p.parse_args()
    _TOKEN[0] = a.token
    _SETTINGS["queue_seconds"] = a.queue_seconds
    _SETTINGS["run_seconds"] = a.run_seconds
    ThreadingHTTPServer((a.host, a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
