"""Run `python app.py` in a subprocess on a free loopback port: what the app tests, the load test
and the latency measurement share. Offline (HF_HUB_OFFLINE=1), analytics off; stopped by PID."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(log_path: str | os.PathLike, extra_env: dict | None = None,
              cwd: str | os.PathLike | None = None) -> tuple[subprocess.Popen, str]:
    """Start the app on a free 127.0.0.1 port with its output in log_path; returns (process, URL).

    cwd: a folder holding another copy of the app (a Space bundle); its app.py runs there.
    Default: this checkout's app.py."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False")
    env.update(extra_env or {})
    with open(log_path, "w") as log:
        folder = Path(cwd) if cwd is not None else ROOT
        proc = subprocess.Popen([sys.executable, str(folder / "app.py")], cwd=folder, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/"


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float, log_path: str | os.PathLike = "its log") -> None:
    """Poll until the page answers 200; RuntimeError if the app exits, TimeoutError after `timeout` s."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            raise TimeoutError(f"the app did not answer within {timeout:.0f} s; see {log_path}")
        time.sleep(0.2)


def stop_app(proc: subprocess.Popen) -> None:
    """Terminate the app by its PID; kill it if it does not stop within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_app_or_none(log_path: str | os.PathLike, extra_env: dict | None = None, timeout: float = 180.0,
                      cwd: str | os.PathLike | None = None) -> tuple[subprocess.Popen, str] | None:
    """start_app, then wait until it answers: (process, URL), or None after printing one `error:` line
    (the app exited or never answered; it is stopped). For CLIs that exit 1 when the app cannot start."""
    proc, url = start_app(log_path, extra_env, cwd=cwd)
    try:
        wait_until_up(url, proc, timeout, log_path)
    except (RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        if proc.poll() is None:
            stop_app(proc)
        return None
    return proc, url
