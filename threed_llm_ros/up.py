"""``threed-llm up --config config/demo.yaml``: start a node graph from YAML where ``ros2 launch`` is absent.

The YAML lists the nodes, each as it would appear in a launch file::

    nodes:
      - name: threed_llm_node                        # node name (-r __node:=)
        module: threed_llm_ros.ros.threed_llm_node   # run as `python -m <module>`
        executable: threed_llm_node                  # the console script a launch file names
        namespace: ''                                # -r __ns:=
        parameter_files: [config/threed_llm.yaml]    # relative to the package share directory
        parameters: {autostart: true}                # -p name:=value, after the files
        remappings: {points: /camera/points}         # -r from:=to

Every node runs as a separate process (``processes.NodeProcess``); Ctrl-C (or SIGTERM)
stops them all, in reverse order. ``--param node.name=value`` overrides a parameter,
``--foxglove`` adds the live Foxglove view (``threed-llm view``, ws://localhost:8765), and
``--print`` shows the commands without starting anything. The launch files in
``launch/`` name the same executables, parameter files and parameters (a test checks it).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.processes import NodeProcess, NodeProcessSpec
from threed_llm_ros.resources import share_directory

NODE_KEYS = {"name", "module", "executable", "namespace", "parameter_files", "parameters", "remappings"}


def _resolve_file(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    for root in (share_directory(), base):
        if (root / path).is_file():
            return root / path
    return share_directory() / path


def load_graph(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> list[NodeProcessSpec]:
    """The node specs of a graph YAML; ``overrides`` = {node name: {parameter: value}}. ConfigError if malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", f"{path} does not exist", "give a graph YAML such as config/demo.yaml")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError("--config", f"{path} is not valid YAML{where}: {problem}", "fix the YAML there (see config/demo.yaml)") from None
    if not isinstance(document, dict):
        raise ConfigError("--config", f"{path} holds a {type(document).__name__}, not a mapping", "see config/demo.yaml")
    nodes = document.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ConfigError("nodes", f"{path} has no 'nodes' list", "list the nodes as in config/demo.yaml")
    specs = []
    overrides = dict(overrides or {})
    for index, entry in enumerate(nodes):
        if not isinstance(entry, dict) or "module" not in entry or "name" not in entry:
            raise ConfigError(f"nodes[{index}]", "needs at least 'name' and 'module'", "see config/demo.yaml")
        unknown = set(entry) - NODE_KEYS
        if unknown:
            raise ConfigError(f"nodes[{index}]", f"unknown keys {sorted(unknown)}", f"use only {sorted(NODE_KEYS)}")
        files = [_resolve_file(str(item), path.parent) for item in entry.get("parameter_files") or []]
        for file in files:
            if not file.is_file():
                raise ConfigError(f"nodes[{index}].parameter_files", f"{file} does not exist", "fix the path")
        parameters = {**(entry.get("parameters") or {}), **overrides.pop(entry["name"], {})}
        specs.append(NodeProcessSpec(
            module=str(entry["module"]), name=str(entry["name"]), namespace=entry.get("namespace") or None,
            parameters=parameters, parameter_files=files, remappings=dict(entry.get("remappings") or {}),
        ))
    if overrides:
        raise ConfigError("--param", f"no node named {sorted(overrides)} in {path}", "use node.parameter=value with a listed node")
    return specs


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['node.param=value', ...] → {node: {param: value}} (values read as YAML scalars)."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        key, separator, value = item.partition("=")
        node, dot, parameter = key.partition(".")
        if not separator or not dot or not node or not parameter:
            raise ConfigError("--param", f"got {item!r}", "write node.parameter=value")
        try:
            overrides.setdefault(node, {})[parameter] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            raise ConfigError("--param", f"the value of {item!r} is not a YAML scalar", "quote it, e.g. node.parameter='a: b'") from None
    return overrides


def run_graph(specs: list[NodeProcessSpec], log_directory: Path | None = None) -> int:
    """Start every node, wait until one exits or a signal arrives, then stop them all."""
    stopping = {"flag": False}

    def request_stop(signum: int, frame: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    processes: list[NodeProcess] = []
    try:
        for spec in specs:
            log_path = None if log_directory is None else log_directory / f"{spec.name}.log"
            processes.append(NodeProcess(spec, log_path=log_path))
            print(f"[up] started {spec.name} (pid {processes[-1].process.pid})", flush=True)
        while not stopping["flag"]:
            exited = [process for process in processes if not process.running()]
            if exited:
                for process in exited:
                    print(f"[up] {process.spec.name} exited with status {process.process.returncode}", flush=True)
                break
            time.sleep(0.2)
    finally:
        codes = [process.stop() for process in reversed(processes)]
        print("[up] stopped all nodes", flush=True)
    return 0 if stopping["flag"] else max([abs(code) for code in codes] + [1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threed-llm up", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(share_directory() / "config" / "demo.yaml"), help="graph YAML")
    parser.add_argument("--param", action="append", default=[], metavar="NODE.NAME=VALUE", help="override a parameter")
    parser.add_argument("--log-dir", type=Path, default=None, help="write each node's output to <dir>/<node>.log")
    parser.add_argument("--foxglove", action="store_true",
                        help="also run the live Foxglove view (threed-llm view) on ws://localhost:8765")
    parser.add_argument("--print", action="store_true", help="print the commands and exit")
    arguments = parser.parse_args(argv)
    try:
        specs = load_graph(arguments.config, parse_overrides(arguments.param))
        if arguments.foxglove:
            specs.append(NodeProcessSpec(module="threed_llm_ros.ros.foxglove_live", name="foxglove_live"))
    except ConfigError as error:
        print(f"threed-llm up: {error}", file=sys.stderr)
        return 2
    if arguments.print:
        for spec in specs:
            print(" ".join(spec.command()))
        return 0
    if arguments.log_dir is not None:
        arguments.log_dir.mkdir(parents=True, exist_ok=True)
    return run_graph(specs, arguments.log_dir)


if __name__ == "__main__":
    sys.exit(main())
