"""The robot path (issue 21): `colcon build` of a clean copy of the repository, then the node from
the install space, answering an ``Ask`` goal over DDS.

colcon comes from its own small venv (``make colcon-tools`` → .venv-colcon; colcon-core pins
setuptools<80); CMake runs this interpreter, where the rosidl generators are (the wheels of
requirements.txt). The packages: threed_llm_interfaces (ament_cmake, ``threed_llm_interfaces/``) and
threed_llm_ros (ament_python, the repository root), named with ``--base-paths`` because colcon does
not look for a package inside another.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from threed_llm_ros.processes import NodeProcessSpec
from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
BUILD_S = 600
STARTUP_S = 180


def _colcon() -> Path:
    for candidate in (os.environ.get("THREED_LLM_COLCON"), REPO / ".venv-colcon" / "bin" / "colcon", shutil.which("colcon")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("colcon not found: run `make colcon-tools` (or set THREED_LLM_COLCON)")


def _clean_copy(destination: Path) -> None:
    """The repository's tracked and unignored files, as a fresh clone would have them."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _sourced(workspace: Path, command: str) -> list[str]:
    return ["bash", "-c", f". {shlex.quote(str(workspace / 'install' / 'setup.sh'))} && {command}"]


def test_colcon_build_and_the_node_from_the_install_space(tmp_path: Path) -> None:
    colcon = _colcon()
    workspace = tmp_path / "ws"
    source = workspace / "src" / "threed_llm_ros"
    _clean_copy(source)
    environment = {**os.environ, "AMENT_PREFIX_PATH": sys.prefix, "CMAKE_PREFIX_PATH": sys.prefix,
                   "PATH": os.pathsep.join((str(Path(sys.prefix) / "bin"), os.environ.get("PATH", "")))}
    environment.pop("PYTHONPATH", None)  # nothing from the source tree: the install space must carry it all
    started = time.monotonic()
    build = subprocess.run(
        [str(colcon), "build", "--base-paths", "src/threed_llm_ros", "src/threed_llm_ros/threed_llm_interfaces",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=environment, capture_output=True, text=True, timeout=BUILD_S)
    build_s = time.monotonic() - started
    assert build.returncode == 0, f"colcon build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    print(f"colcon build of threed_llm_interfaces + threed_llm_ros: {build_s:.1f} s")
    for package in ("threed_llm_interfaces", "threed_llm_ros"):
        assert f"Finished <<< {package}" in build.stdout, build.stdout[-2000:]

    # run outside the checkout (python puts the working directory first on sys.path)
    where = subprocess.run(_sourced(workspace, f"{shlex.quote(sys.executable)} -c 'import threed_llm_ros, "
                                               "threed_llm_interfaces.action as a; print(threed_llm_ros.__file__); "
                                               "print(a.__file__); print(a.Ask.Goal())'"),
                           cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    package_file, interfaces_file, goal = where.stdout.strip().splitlines()[-3:]
    assert package_file.startswith(str(workspace / "install" / "threed_llm_ros")), package_file
    assert interfaces_file.startswith(str(workspace / "install" / "threed_llm_interfaces")), interfaces_file
    assert goal.startswith("threed_llm_interfaces.action.Ask_Goal(prompt=''")

    # the node from the install space (no sensor: a goal waits reply_timeout_s for a first frame, then is refused
    # for want of one, with that reason)
    checkpoint = build_untrained_checkpoint(tmp_path / "untrained-mini")
    spec = NodeProcessSpec(module="threed_llm_ros.ros.threed_llm_node", parameters={"checkpoint": str(checkpoint),
                                                                                 "max_new_tokens": 4,
                                                                                 "reply_timeout_s": 2.0})
    node_command = " ".join(shlex.quote(part) for part in spec.command())
    log = (tmp_path / "node.log").open("w")
    node = subprocess.Popen(_sourced(workspace, f"exec {node_command}"), cwd=tmp_path,
                            env={**environment, "PYTHONUNBUFFERED": "1"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = subprocess.Popen(
            _sourced(workspace, f"{shlex.quote(sys.executable)} -m threed_llm_ros.ros.prompt_client --quiet "
                                f"--wait {STARTUP_S} --prompt 'Is there a red cup?'"),
            cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + STARTUP_S + 60
        while client.poll() is None and node.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        output = (tmp_path / "node.log").read_text()
        if client.poll() is None:
            client.kill()
        said = client.communicate()[0]
        assert node.poll() is None, f"the node exited:\n{output[-3000:]}"
        assert "(aborted: refused: No sensor frame yet" in said, (said, output[-3000:])
        assert client.returncode == 1
        assert "active:" in output  # the same environment imported threed_llm_ros from install/ (above)
    finally:
        if node.poll() is None:
            os.killpg(node.pid, 2)
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, 9)
                node.wait()
        log.close()
