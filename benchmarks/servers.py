"""A benchmark server in its own process: started, its ``KEY=VALUE`` lines read, stopped.

Shared by the sandbox of the extract regimes (:class:`benchmarks.run.SandboxProcess`) and the
export server (:class:`benchmarks.export_bench.ExportServer`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class ServerProcess:
    """``python -m module *args`` from the repository root, read until ``done(lines)`` holds.

    :param module: the server's module.
    :param args: its command-line arguments.
    :param env: its environment.
    :param done: true once the lines read so far announce a ready server (a ``READY`` line is
        recorded under the key ``READY``).
    :param name: how errors name the server.
    """

    def __init__(
        self, module: str, args: list[str], env: dict[str, str], done: Callable[[dict[str, str]], bool], name: str
    ) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the server's stderr, closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        self.lines: dict[str, str] = {}
        while not done(self.lines):
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line:
                self._stderr.seek(0)
                raise RuntimeError(f"the {name} exited: {self._stderr.read().decode(errors='replace')[-2000:]}")
            key, _, value = line.strip().partition("=")
            self.lines[key] = value

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 15 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self._stderr.close()
