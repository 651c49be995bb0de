"""Pushing to the Hub with the real huggingface_hub client, against a local server that records what it is sent."""

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import pytest

from helpers import FIXTURES, run_convert

MAX_REQUESTS = 50  # the server stops answering after this many: a client stuck in a retry loop cannot hang the test


class RecordingHub(BaseHTTPRequestHandler):
    """Answers the endpoints an upload uses (create repo, validate README, preupload, commit) and records requests."""

    records: list[dict] = []

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        if len(self.records) >= MAX_REQUESTS:
            self._answer(429, {"error": "too many requests"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        headers = {key.lower(): value for key, value in self.headers.items()}
        self.records.append({"method": self.command, "path": path, "headers": headers, "body": body})
        host = f"http://{self.headers['Host']}"
        if path == "/api/repos/create":
            request = json.loads(body)
            self._answer(200, {"url": f"{host}/{request['organization']}/{request['name']}"})
        elif path == "/api/validate-yaml":
            self._answer(200, {})
        elif "/preupload/" in path:
            files = json.loads(body)["files"]
            modes = [{"path": file["path"], "uploadMode": "regular", "shouldIgnore": False} for file in files]
            self._answer(200, {"files": modes})
        elif "/commit/" in path:
            repo = path.removeprefix("/api/models/").split("/commit/")[0]
            self._answer(200, {"commitUrl": f"{host}/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40,
                               "pullRequestUrl": None})
        else:
            self._answer(404, {"error": "not found"})

    do_GET = do_POST = do_PUT = do_HEAD = _handle


@pytest.fixture
def hub_server():
    RecordingHub.records = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", RecordingHub.records
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_push_creates_the_repo_and_commits_every_file(hub_server, tmp_path):
    endpoint, records = hub_server
    output = tmp_path / "mini"
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_test_token",
           "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        # The installed command, run from outside the checkout.
        [str(Path(sys.executable).parent / "convnext-hf"), "convert", "--checkpoint", str(FIXTURES / "mini.fb.pth"),
         "--output", str(output), "--push-to-hub", "tester/convnext-mini", "--private"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"pushed to {endpoint}/tester/convnext-mini" in result.stdout

    paths = [record["path"] for record in records]
    create, preupload, commit = (paths.index(path) for path in (
        "/api/repos/create", "/api/models/tester/convnext-mini/preupload/main",
        "/api/models/tester/convnext-mini/commit/main"))
    assert create < preupload < commit
    assert json.loads(records[create]["body"]) == {
        "name": "convnext-mini", "organization": "tester", "visibility": "private", "type": "model"}
    assert all(records[i]["headers"]["authorization"] == "Bearer hf_test_token" for i in (create, preupload, commit))

    local = {path.name: path.read_bytes() for path in output.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(local)
    announced = {entry["path"] for entry in json.loads(records[preupload]["body"])["files"]}
    lines = [json.loads(line) for line in records[commit]["body"].decode().splitlines()]
    summary = "Upload ConvNeXt converted with convnext_hf"
    assert lines[0] == {"key": "header", "value": {"summary": summary, "description": ""}}
    committed = {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines[1:]}
    assert announced == set(committed) == set(local)
    assert committed == local  # byte for byte what was written locally


def test_without_network_the_push_fails_clearly_after_the_local_output_is_complete(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    output = tmp_path / "mini"
    argv = ["--checkpoint", str(FIXTURES / "mini.fb.pth"), "--output", str(output), "--push-to-hub", "tester/mini"]
    assert run_convert(*argv) == 2
    error = capsys.readouterr().err
    assert f"The converted model is complete in {output}" in error and "could not be reached" in error
    assert "hf upload tester/mini" in error
    written = {path.name for path in output.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= written
