"""The interface build's fix of the message wheels' exported include paths, and the built package itself."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from threed_llm_ros.build_interfaces import EXPORT_GLOB, fix_exported_paths

BROKEN = '''set_target_properties(std_msgs::std_msgs__rosidl_generator_py PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"
  INTERFACE_LINK_LIBRARIES "std_msgs::std_msgs__rosidl_generator_c"
)
'''


def _prefix_with_export(root: Path, text: str = BROKEN) -> Path:
    path = root / "share" / "std_msgs" / "cmake" / "export_std_msgs__rosidl_generator_pyExport.cmake"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_fix_rewrites_the_builder_paths_once(tmp_path: Path) -> None:
    python_include, numpy_include = tmp_path / "py", tmp_path / "np"
    python_include.mkdir(), numpy_include.mkdir()
    path = _prefix_with_export(tmp_path / "prefix")
    assert fix_exported_paths(tmp_path / "prefix", str(python_include), str(numpy_include)) == [path]
    fixed = path.read_text()
    assert f'INTERFACE_INCLUDE_DIRECTORIES "{python_include};{numpy_include}"' in fixed
    assert "/opt/python" not in fixed
    assert 'INTERFACE_LINK_LIBRARIES "std_msgs::std_msgs__rosidl_generator_c"' in fixed  # the rest untouched
    assert fix_exported_paths(tmp_path / "prefix", str(python_include), str(numpy_include)) == []  # idempotent
    assert path.read_text() == fixed


def test_fix_keeps_paths_that_exist(tmp_path: Path) -> None:
    existing = tmp_path / "include" / "python3.11"
    existing.mkdir(parents=True)
    text = BROKEN.replace("/opt/python/cp311-cp311/include/python3.11", str(existing))
    path = _prefix_with_export(tmp_path / "prefix", text)
    fix_exported_paths(tmp_path / "prefix", "/local/python", "/local/numpy")
    assert f'"{existing};/local/numpy"' in path.read_text()


def test_fix_with_defaults_uses_this_interpreter(tmp_path: Path) -> None:
    import sysconfig

    import numpy

    path = _prefix_with_export(tmp_path / "prefix")
    fix_exported_paths(tmp_path / "prefix")
    assert f'"{sysconfig.get_paths()["include"]};{numpy.get_include()}"' in path.read_text()


def test_the_venv_exports_name_only_existing_include_paths() -> None:
    """After `make` (which runs the fix) no exported rosidl_generator_py target names a missing path."""
    exports = sorted(Path(sys.prefix).glob(EXPORT_GLOB))
    if not exports:
        pytest.skip("no message wheel exports in this prefix")
    for path in exports:
        for entries in re.findall(r'INTERFACE_INCLUDE_DIRECTORIES\s+"([^"]*)"', path.read_text()):
            missing = [entry for entry in entries.split(";") if entry and not Path(entry).exists()]
            assert not missing, f"{path.name} names missing {missing}: run `make interfaces`"


def test_the_built_interfaces_import() -> None:
    """`make` built threed_llm_interfaces into the venv: the generated Python types load."""
    from threed_llm_interfaces.action import Ask
    from threed_llm_interfaces.msg import GroundedObject, GroundedObjectArray, Plan, PlanStep
    from threed_llm_interfaces.srv import GetObjects

    assert set(Ask.Goal.get_fields_and_field_types()) == {"prompt", "min_stamp"}
    assert Ask.Feedback.get_fields_and_field_types() == {"text": "string"}
    assert {"text", "intent", "status", "header", "objects", "target_pose", "plan"} <= set(
        Ask.Result.get_fields_and_field_types())
    assert {"category", "color", "confidence", "pose", "size", "point_count"} == set(
        GroundedObject.get_fields_and_field_types())
    assert GroundedObjectArray.get_fields_and_field_types()["objects"] == "sequence<threed_llm_interfaces/GroundedObject>"
    assert Plan.get_fields_and_field_types()["steps"] == "sequence<threed_llm_interfaces/PlanStep>"
    assert PlanStep().seen is False
    assert GetObjects.Response.get_fields_and_field_types() == {
        "success": "boolean", "message": "string", "objects": "threed_llm_interfaces/GroundedObjectArray"}


def test_the_node_without_its_interfaces_says_how_to_build_them(tmp_path: Path) -> None:
    """No threed_llm_interfaces (not built): one line naming the fix, exit status 1, no traceback."""
    import subprocess

    pytest.importorskip("rclpy")
    hide = ("import runpy, sys; sys.modules['threed_llm_interfaces'] = None; sys.argv = ['threed_llm_node']; "
            "runpy.run_module('threed_llm_ros.ros.threed_llm_node', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "threed_llm_interfaces" in lines[0] and "run `make`" in lines[0] and "colcon build" in lines[0]


def test_tf2_msgs_is_there_with_the_upstream_definition() -> None:
    """`make interfaces` builds vendor/tf2_msgs where no ROS install provides tf2_msgs: TFMessage has the
    upstream field (so mono3d_node reads real /tf and /tf_static), and colcon skips the vendored copy."""
    from tf2_msgs.msg import TFMessage

    assert TFMessage.get_fields_and_field_types() == {"transforms": "sequence<geometry_msgs/TransformStamped>"}
    vendored = Path(__file__).resolve().parents[1] / "vendor" / "tf2_msgs"
    assert (vendored / "COLCON_IGNORE").is_file()
    assert (vendored / "msg" / "TFMessage.msg").read_text().strip() == "geometry_msgs/TransformStamped[] transforms"
