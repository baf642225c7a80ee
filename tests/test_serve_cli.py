"""`stepdistill serve` as a real process: binds loopback, reads the key from the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest
from serve_helpers import wait_until_healthy
from tiny_run import make_run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_with_the_key_from_the_environment(tiny_causal, tmp_path):
    run = make_run(tiny_causal, tmp_path / "run")
    port = free_port()
    env = {**os.environ, "STEPDISTILL_API_KEY": "env-key", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stepdistill.cli",
            "serve",
            str(run),
            "--port",
            str(port),
            "--model-name",
            "tiny",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        failure = wait_until_healthy(url, process)
        if failure is not None:
            pytest.fail(f"server did not start: {failure}")
        assert httpx.get(f"{url}/v1/models").status_code == 401
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer env-key"}).json()
        assert models["data"][0]["id"] == "tiny"
        reply = httpx.post(
            f"{url}/v1/predict",
            json={"inputs": ["hi"]},
            headers={"Authorization": "Bearer env-key"},
        )
        assert reply.status_code == 200 and len(reply.json()["predictions"]) == 1
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"on http://127.0.0.1:{port}" in output and "auth: on" in output
