"""Start nodes as separate processes with ROS arguments, and stop them cleanly.

Used by `make demo`, by `threed-llm up` and by the end-to-end tests: every node runs in
its own process and the processes talk over DDS, exactly as under `ros2 launch`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def format_parameter_value(value: Any) -> str:
    """A parameter value as `ros2 run --ros-args -p name:=value` expects it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_parameter_value(item) for item in value) + "]"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


@dataclass
class NodeProcessSpec:
    """One node to run: its Python module, name, namespace, parameters and remappings."""

    module: str
    name: str | None = None
    namespace: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    parameter_files: list[Path] = field(default_factory=list)
    remappings: dict[str, str] = field(default_factory=dict)

    def command(self) -> list[str]:
        """The command line that runs this node with the current Python interpreter."""
        arguments = [sys.executable, "-m", self.module, "--ros-args"]
        if self.name:
            arguments += ["-r", f"__node:={self.name}"]
        if self.namespace:
            arguments += ["-r", f"__ns:={self.namespace}"]
        for parameter_file in self.parameter_files:
            arguments += ["--params-file", str(parameter_file)]
        for key, value in self.parameters.items():
            arguments += ["-p", f"{key}:={format_parameter_value(value)}"]
        for source, target in self.remappings.items():
            arguments += ["-r", f"{source}:={target}"]
        return arguments


class NodeProcess:
    """A running node process; its output goes to a log file (or is inherited)."""

    def __init__(self, spec: NodeProcessSpec, *, log_path: Path | None = None, env: dict[str, str] | None = None):
        self.spec = spec
        self.log_path = log_path
        self._log_file = open(log_path, "w", encoding="utf-8") if log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            spec.command(),
            stdout=self._log_file if self._log_file else None,
            stderr=subprocess.STDOUT if self._log_file else None,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """What the process has printed so far (when it logs to a file)."""
        if self.log_path is None:
            return ""
        if self._log_file:
            self._log_file.flush()
        return Path(self.log_path).read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (ROS shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.process.poll() is None:
                time.sleep(0.05)
        code = self.process.wait()
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return code

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
