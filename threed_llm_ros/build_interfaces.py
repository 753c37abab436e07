"""Build ``threed_llm_interfaces`` (``msg/``, ``action/``) into a Python prefix from the pip wheels of ROS 2 Kilted.

    python -m threed_llm_ros.build_interfaces              # into sys.prefix (the venv): what `make` runs
    python -m threed_llm_ros.build_interfaces --fix-only   # only the exported-path fix below

ROS-free: it runs CMake (``rosidl_generate_interfaces``) with ``AMENT_PREFIX_PATH`` and
``CMAKE_PREFIX_PATH`` set to the prefix. Installed there, the generated modules need no
environment at run time (``ros_wheels_bootstrapper`` puts ``<prefix>/lib`` on the library path).

A packaging bug of the message wheels is fixed first: their exported
``share/*/cmake/export_*__rosidl_generator_pyExport.cmake`` files keep the wheel builder's
include paths (``/opt/python/cp311-cp311/include/python3.11`` and its numpy include), and
CMake refuses an imported target with a path that does not exist. :func:`fix_exported_paths`
rewrites those two paths to this interpreter's ``sysconfig`` include and ``numpy.get_include()``;
it is idempotent, and must run again whenever a message wheel is reinstalled (``make`` does).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

INTERFACES_PACKAGE = "threed_llm_interfaces"
REPOSITORY = Path(__file__).resolve().parent.parent
# tf2_msgs (TFMessage only, the upstream definition) where nothing provides it: mono3d_node reads its
# camera's tilt from /tf and /tf_static, and the ROS 2 pip wheels ship no tf2_msgs.
TF2_MSGS_SOURCE = REPOSITORY / "vendor" / "tf2_msgs"
EXPORT_GLOB = "share/*/cmake/export_*__rosidl_generator_pyExport.cmake"
_INCLUDES = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES\s+")([^"]*)(")')


def local_includes() -> tuple[str, str]:
    """This interpreter's C include directory and numpy's."""
    import numpy

    return sysconfig.get_paths()["include"], numpy.get_include()


def _replacement(entry: str, python_include: str, numpy_include: str) -> str:
    """``entry`` itself where it exists, else the local python or numpy include it stands for."""
    if not entry or Path(entry).exists():
        return entry
    normalized = entry.replace("\\", "/").rstrip("/")
    if "/numpy/" in normalized and normalized.endswith("/include"):
        return numpy_include
    if re.search(r"/include/python3\.\d+$", normalized):
        return python_include
    return entry


def fix_exported_paths(prefix: Path, python_include: str | None = None, numpy_include: str | None = None) -> list[Path]:
    """Rewrite missing Python/numpy include paths in the prefix's exported rosidl_generator_py targets.

    Returns the files changed (none on a second run).
    """
    if python_include is None or numpy_include is None:
        local_python, local_numpy = local_includes()
        python_include = python_include or local_python
        numpy_include = numpy_include or local_numpy
    changed = []
    for path in sorted(Path(prefix).glob(EXPORT_GLOB)):
        text = path.read_text()

        def rewrite(match: re.Match[str]) -> str:
            entries = [_replacement(entry, python_include, numpy_include) for entry in match.group(2).split(";")]
            return match.group(1) + ";".join(dict.fromkeys(entries)) + match.group(3)

        fixed = _INCLUDES.sub(rewrite, text)
        if fixed != text:
            path.write_text(fixed)
            changed.append(path)
    return changed


def cmake_executable(prefix: Path) -> str:
    """The prefix's cmake (the pip ``cmake`` wheel) or the one on PATH; a clear error where neither is."""
    for candidate in (Path(prefix) / "bin" / "cmake", shutil.which("cmake")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit("cmake not found: install the pip package `cmake` (requirements.txt) or the system cmake")


def tf2_msgs_missing(prefix: Path) -> bool:
    """Whether ``prefix`` lacks tf2_msgs (then the vendored TFMessage is built into it)."""
    return not (Path(prefix) / "share" / "tf2_msgs" / "package.xml").is_file()


def build(prefix: Path, build_directory: Path, jobs: int = 2, source: Path | None = None) -> float:
    """Configure, build and install an interface package (default: ours) into ``prefix``; the seconds
    it took."""
    started = time.monotonic()
    cmake = cmake_executable(prefix)
    environment = dict(os.environ)
    for variable in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
        environment[variable] = os.pathsep.join(p for p in (str(prefix), environment.get(variable, "")) if p)
    environment["PATH"] = os.pathsep.join((str(Path(prefix) / "bin"), environment.get("PATH", "")))
    source = source or REPOSITORY / INTERFACES_PACKAGE
    configure = [cmake, "-S", str(source), "-B", str(build_directory), f"-DCMAKE_INSTALL_PREFIX={prefix}",
                 f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    for command in (configure, [cmake, "--build", str(build_directory), "-j", str(jobs)],
                    [cmake, "--install", str(build_directory)]):
        result = subprocess.run(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-6000:])
            raise SystemExit(f"building {source.name} failed at: {' '.join(command[:3])} (output above)")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix), help="install prefix (default: this venv)")
    parser.add_argument("--build-dir", type=Path, default=REPOSITORY / "build" / INTERFACES_PACKAGE)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fix-only", action="store_true", help="only rewrite the exported include paths")
    arguments = parser.parse_args(argv)
    python_include, _ = local_includes()
    if not (Path(python_include) / "Python.h").is_file():
        raise SystemExit(f"Python headers not found ({python_include}/Python.h): install python"
                         f"{sys.version_info[0]}.{sys.version_info[1]}-dev (apt), then run again")
    changed = fix_exported_paths(arguments.prefix)
    print(f"exported include paths: {len(changed)} files fixed" if changed else "exported include paths: already fixed")
    if arguments.fix_only:
        return 0
    if tf2_msgs_missing(arguments.prefix):
        seconds = build(arguments.prefix.resolve(), arguments.build_dir.resolve().parent / "tf2_msgs", arguments.jobs,
                        TF2_MSGS_SOURCE)
        print(f"tf2_msgs (vendor/tf2_msgs: TFMessage) built and installed into {arguments.prefix} in {seconds:.1f} s")
    seconds = build(arguments.prefix.resolve(), arguments.build_dir.resolve(), arguments.jobs)
    print(f"{INTERFACES_PACKAGE} built and installed into {arguments.prefix} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
