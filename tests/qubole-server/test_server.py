"""The Qubole API test server behaves as Qubole's commands API documents: a token is required, commands
go waiting -> running -> done or error, a kill cancels, results and logs are served, the history is
newest first and filters by name, and failures and refusals come on demand. Run with
`python3 -m unittest discover -s tests/qubole-server` (scripts/test does)."""

import json
import os
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuboleServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.port = free_port()
        cls.url = f"http://127.0.0.1:{cls.port}"
        cls.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), "--port", str(cls.port), "--token", "tk",
             "--queue-seconds", "0.3", "--run-seconds", "0.5"],
        )
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{cls.url}/_test/settings")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proc.terminate()
        cls.proc.wait()

    def call(self, method: str, path: str, body=None, token="tk"):
        req = urllib.request.Request(f"{self.url}{path}", method=method)
        if token:
            req.add_header("X-AUTH-TOKEN", token)
        data = None if body is None else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(req, data=data) as r:
                raw = r.read().decode()
                return r.status, (json.loads(raw) if r.headers.get_content_type() == "application/json" else raw)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def submit(self, query: str, **more):
        code, c = self.call("POST", "/api/v1.2/commands", {"command_type": "HiveCommand", "query": query, **more})
        self.assertEqual(code, 200, c)
        return c

    def wait(self, cid: int) -> list:
        seen = []
        for _ in range(100):
            _, c = self.call("GET", f"/api/v1.2/commands/{cid}")
            if not seen or seen[-1] != c["status"]:
                seen.append(c["status"])
            if c["status"] in ("done", "error", "cancelled"):
                return seen
            time.sleep(0.05)
        self.fail(f"command {cid} did not end: {seen}")

    def test_the_token_is_checked(self) -> None:
        for token in (None, "wrong"):
            code, body = self.call("GET", "/api/v1.2/commands", token=token)
            self.assertEqual(code, 401)
            self.assertEqual(body["error"]["error_message"], "Invalid Token")
        code, _ = self.call("POST", "/api/v1.2/commands", {"query": "SELECT 1"}, token=None)
        self.assertEqual(code, 401)

    def test_commands_run_fail_and_are_killed(self) -> None:
        ok = self.submit("SELECT 1", label="etl", tags=["a", "b:c"], name="ok-1")
        self.assertEqual((ok["status"], ok["label"], ok["tags"]), ("waiting", "etl", ["a", "b:c"]))
        self.assertEqual(self.wait(ok["id"]), ["waiting", "running", "done"])
        code, res = self.call("GET", f"/api/v1.2/commands/{ok['id']}/results")
        self.assertEqual((code, res["inline"]), (200, True))
        self.call("POST", "/_test/settings", {"failures": [{"match": "broken", "reason": "Table not found"}]})
        bad = self.submit("SELECT broken")
        self.assertEqual(self.wait(bad["id"])[-1], "error")
        code, log = self.call("GET", f"/api/v1.2/commands/{bad['id']}/logs")
        self.assertIn("FAILED: Table not found", log)
        self.call("POST", "/_test/settings", {"run_seconds": None, "failures": []})
        try:
            held = self.submit("SELECT 2")
            code, _ = self.call("PUT", f"/api/v1.2/commands/{held['id']}", {"status": "kill"})
            self.assertEqual(code, 200)
            self.assertEqual(self.wait(held["id"])[-1], "cancelled")
        finally:
            self.call("POST", "/_test/settings", {"run_seconds": 0.5})
        code, _ = self.call("GET", "/api/v1.2/commands/99999")
        self.assertEqual(code, 404)

    def test_refusals_and_the_history(self) -> None:
        self.call("POST", "/_test/settings", {"refusals": [{"match": "quota", "status": 429, "times": 1}]})
        code, body = self.call("POST", "/api/v1.2/commands", {"query": "SELECT quota"})
        self.assertEqual(code, 429, body)
        again = self.submit("SELECT quota", name="named-once")
        code, page = self.call("GET", "/api/v1.2/commands?name=named-once")
        self.assertEqual([c["id"] for c in page["commands"]], [again["id"]])
        code, page = self.call("GET", "/api/v1.2/commands?per_page=1")
        self.assertEqual(len(page["commands"]), 1)
        self.assertEqual(page["paging_info"]["per_page"], 1)
        self.assertEqual(page["commands"][0]["id"], max(page["commands"][0]["id"], again["id"]))


if __name__ == "__main__":
    unittest.main()
