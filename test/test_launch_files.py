"""The launch files (parsed with ast: `launch` is not installable here) agree with config/demo.yaml and `up`."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.up import load_graph, parse_overrides

REPO_ROOT = Path(__file__).resolve().parent.parent
LAUNCH = REPO_ROOT / "launch"
DEMO_YAML = REPO_ROOT / "config" / "demo.yaml"


def _literal(node: ast.AST) -> Any:
    """A literal value, or the last string of an os.path.join(...) call, or None for anything dynamic."""
    if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "join":
        return "/".join(str(_literal(argument)) for argument in node.args[1:])
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def launch_nodes(path: Path) -> list[dict[str, Any]]:
    """Every Node(...) call of a launch file: executable, name, namespace, parameter files and names, remappings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = {target.id: _literal(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)}
    nodes = []
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node"):
            continue
        keywords = {keyword.arg: keyword.value for keyword in call.keywords}
        files, names = [], set()
        for item in getattr(keywords.get("parameters"), "elts", []):
            if isinstance(item, ast.Dict):
                names |= {_literal(key) for key in item.keys}
            elif _literal(item) is not None:
                files.append(_literal(item))
            else:
                files.append("<launch argument>")
        remappings = _literal(keywords["remappings"]) if "remappings" in keywords else []
        if remappings is None:  # list(CAMERA_REMAPPINGS[camera].items()): resolved per camera below
            remappings = "per camera"
        nodes.append({
            "executable": _literal(keywords["executable"]), "name": _literal(keywords.get("name", ast.Constant(None))),
            "namespace": _literal(keywords.get("namespace", ast.Constant(""))), "files": files,
            "parameters": names, "remappings": dict(remappings) if isinstance(remappings, list) else remappings,
        })
    return [dict(node, constants=constants) for node in nodes]


def demo_graph() -> list[dict[str, Any]]:
    return yaml.safe_load(DEMO_YAML.read_text())["nodes"]


def test_demo_launch_matches_the_demo_yaml() -> None:
    launched = {node["name"]: node for node in launch_nodes(LAUNCH / "demo.launch.py")}
    listed = {node["name"]: node for node in demo_graph()}
    assert launched.keys() == listed.keys()
    for name, entry in listed.items():
        node = launched[name]
        assert node["executable"] == entry["executable"], name
        assert node["files"] == entry["parameter_files"], name
        assert node["parameters"] == set(entry["parameters"]), name
        assert node["remappings"] == (entry["remappings"] or {}), name
        assert (node["namespace"] or "") == (entry["namespace"] or ""), name


def test_node_launch_names_the_same_executable_file_and_sim_remappings() -> None:
    (node,) = launch_nodes(LAUNCH / "threed_llm.launch.py")
    (listed,) = [entry for entry in demo_graph() if entry["name"] == "threed_llm_node"]
    assert node["executable"] == listed["executable"] and node["name"] == listed["name"]
    remappings = node["constants"]["CAMERA_REMAPPINGS"]
    assert remappings["sim"] == listed["remappings"]
    assert set(node["constants"]["CAMERA_UP_AXIS"]) == set(remappings)
    assert {"realsense", "azure_kinect", "orbbec", "gazebo"} <= set(remappings)
    for camera, mapping in remappings.items():
        assert set(mapping) == {"points", "color/image_raw", "depth/image_raw", "color/camera_info"}, camera
    source = (LAUNCH / "threed_llm.launch.py").read_text()
    assert '"config", "threed_llm.yaml"' in source


def test_launch_parameters_and_executables_exist() -> None:
    from threed_llm_ros.ros.parameters import ParameterSpec  # noqa: F401 - rclpy must be importable

    for entry in demo_graph():
        module = importlib.import_module(entry["module"])
        assert callable(module.main)
        assert module.NODE_NAME == entry["executable"] == entry["name"]
        declared = {spec.name for spec in module.PARAMETER_SPECS}
        assert set(entry["parameters"]) <= declared, entry["name"]
        file_parameters = yaml.safe_load((REPO_ROOT / entry["parameter_files"][0]).read_text())[entry["name"]]["ros__parameters"]
        assert set(file_parameters) <= declared | {"sensor"}
    (node,) = launch_nodes(LAUNCH / "threed_llm.launch.py")
    from threed_llm_ros.ros.threed_llm_node import PARAMETER_SPECS

    assert node["parameters"] <= {spec.name for spec in PARAMETER_SPECS}


def test_up_builds_the_same_commands_from_the_yaml() -> None:
    specs = load_graph(DEMO_YAML, parse_overrides(["threed_llm_node.checkpoint=/tmp/ckpt", "scene_sim_node.seed=7"]))
    by_name = {spec.name: spec for spec in specs}
    llm = by_name["threed_llm_node"].command()
    assert llm[1:3] == ["-m", "threed_llm_ros.ros.threed_llm_node"]
    assert str(REPO_ROOT / "config" / "threed_llm.yaml") in llm
    assert "checkpoint:=/tmp/ckpt" in llm and "points:=/camera/points" in llm
    assert "seed:=7" in by_name["scene_sim_node"].command()
    assert "__ns:=/camera" in by_name["scene_sim_node"].command()
    with pytest.raises(ConfigError, match="no_such_node"):
        load_graph(DEMO_YAML, {"no_such_node": {"x": 1}})
    with pytest.raises(ConfigError, match="node.parameter=value"):
        parse_overrides(["checkpoint=/x"])
