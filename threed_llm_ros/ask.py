"""`threed-llm ask SCENE "question"`: the node's answers without ROS, from a file.

`threed-llm ask --node "question"` asks a running threed_llm_node instead, through its ``~/ask``
action (``--action /ns/threed_llm_node/ask`` names another node's; this path needs ROS
and the built interfaces, and runs :mod:`threed_llm_ros.ros.prompt_client`).

Reads a point cloud from .ply / .pcd (open3d) or .npz (this package's dataset scenes with
``points``/``colors``/``up_axis``, SUN RGB-D style ``pc`` N×6 arrays, or ``xyz``/``rgb``),
routes the prompt by intent like ``threed_llm_node`` (describe / question / find / plan)
and prints the answer, the grounded boxes or the plan, using the same inference engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from threed_llm_ros.errors import ConfigError, MessageFormatError, ThreeDLLMError
from threed_llm_ros.runtime.engine import LM_BACKENDS, EngineSettings, InferenceEngine, SceneCloud
from threed_llm_ros.runtime.intent import route

DEFAULT_CHECKPOINT = "models/threed-llm-mini"
NODE_ACTION = "/threed_llm_node/ask"


def _colors_to_uint8(colors: np.ndarray | None) -> np.ndarray | None:
    if colors is None or len(colors) == 0:
        return None
    colors = np.asarray(colors)
    if np.issubdtype(colors.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(colors)) <= 1.0 else 1.0
        return np.clip(colors * scale, 0, 255).astype(np.uint8)
    return colors.astype(np.uint8)


def read_cloud_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Points (N×3), colours (N×3 uint8 or None) and the up axis the file records (or None)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("scene", f"{path} does not exist", "give a .ply, .pcd or .npz point cloud file")
    suffix = path.suffix.lower()
    if suffix in (".ply", ".pcd"):
        import open3d

        cloud = open3d.io.read_point_cloud(str(path))
        points = np.asarray(cloud.points, dtype=np.float32)
        # Organised clouds (PCL, depth cameras) mark missing pixels with NaN: keep only real returns.
        valid = np.isfinite(points).all(axis=1)
        if not valid.any():
            raise ConfigError("scene", f"{path} holds no valid point", "check the file with open3d or CloudCompare")
        colors = np.asarray(cloud.colors)[valid] if cloud.has_colors() else None
        return np.ascontiguousarray(points[valid]), _colors_to_uint8(colors), None
    if suffix == ".npz":
        try:
            points, colors, up_axis = _read_npz(path)
        except ConfigError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            raise ConfigError("scene", f"{path} cannot be read as an .npz cloud ({type(error).__name__}: {error})",
                              "give an .npz written by numpy.savez with a 'points' (N×3) array, or a .ply / .pcd") from None
        if points.ndim != 2 or points.shape[1] != 3 or (colors is not None and len(colors) != len(points)):
            raise ConfigError("scene", f"{path} holds points of shape {points.shape}"
                              + (f" and colours of shape {colors.shape}" if colors is not None else ""),
                              "give N×3 points (and N×3 colours)")
        return points, colors, up_axis
    raise ConfigError("scene", f"unsupported file type {suffix!r}", "use .ply, .pcd or .npz")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(points, colours, up axis) of an .npz cloud: ``points`` (+ ``colors``, ``up_axis``), SUN RGB-D's ``pc``, or ``xyz``."""
    with np.load(path, allow_pickle=False) as data:
        if "points" in data:
            colors = data["colors"] if "colors" in data else None
            up_axis = str(data["up_axis"]) if "up_axis" in data else None
            return data["points"].astype(np.float32), _colors_to_uint8(colors), up_axis
        if "pc" in data:  # SUN RGB-D / VoteNet: upright depth coordinates, z up by the format's definition
            array = data["pc"]
            colors = array[:, 3:6] if array.shape[1] >= 6 else None
            return array[:, :3].astype(np.float32), _colors_to_uint8(colors), "z"
        if "xyz" in data:
            colors = data["rgb"] if "rgb" in data else None
            return data["xyz"].astype(np.float32), _colors_to_uint8(colors), None
        raise ConfigError("scene", f"{path} has none of the keys points, pc, xyz", "see docs/dataset_format.md")


def ask(engine: InferenceEngine, cloud: SceneCloud, prompt: str) -> dict:
    """The engine's reply to ``prompt`` as a JSON-ready dict (intent, text, boxes or plan, timings)."""
    intent = route(prompt)
    if intent.kind == "find":
        reply = engine.ground(cloud, prompt, label=intent.target)
        boxes = [
            {
                "label": item.label,
                "score": item.score,
                "source": item.source,
                "position": list(item.position),
                "orientation": list(item.orientation),
                "size": list(item.box.size),
                "yaw_about_up": item.box.yaw,
            }
            for item in reply.objects
        ]
        return {"intent": intent.kind, "text": reply.text, "boxes": boxes, "timings": reply.timings}
    if intent.kind == "plan":
        reply = engine.plan(cloud, prompt)
        return {"intent": intent.kind, "text": reply.text, "plan": reply.plan.to_dict(), "timings": reply.timings}
    reply = engine.answer(cloud, prompt, programs=intent.kind == "question")
    return {"intent": intent.kind, "text": reply.text, "timings": reply.timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threed-llm ask", description=__doc__.splitlines()[0])
    parser.add_argument("scene", nargs="?", help=".ply, .pcd or .npz point cloud (not with --node)")
    parser.add_argument("prompt", help='e.g. "describe the scene", "where is the red chair?", "bring the cup to the sofa"')
    parser.add_argument("--node", action="store_true", help="ask a running threed_llm_node through its Ask action")
    parser.add_argument("--action", default=NODE_ACTION, help="--node: the node's Ask action (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="--node: seconds to wait for the answer")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint directory (default: %(default)s)")
    parser.add_argument("--up-axis", choices=("-y", "z"), default=None,
                        help="the cloud frame's up axis: -y camera optical frame, z REP-103 (default: the file's, else -y)")
    parser.add_argument("--backend", default="torch", help="torch or onnxruntime")
    parser.add_argument("--lm-backend", choices=LM_BACKENDS, default="auto",
                        help="language model: auto (onnxruntime on the CPU for a trained checkpoint, else torch), "
                             "torch or onnxruntime (default: %(default)s, as the node)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    arguments = parser.parse_args(argv)
    if arguments.node:
        if arguments.scene is not None:
            parser.error("give either a SCENE file or --node, not both (with --node the node's sensor is the scene)")
        from threed_llm_ros.ros.prompt_client import main as ask_node  # ROS only on this path

        return ask_node(["--prompt", arguments.prompt, "--action", arguments.action, "--timeout", str(arguments.timeout),
                         "--wait", "10"])
    if arguments.scene is None:
        parser.error("give the SCENE file (.ply, .pcd or .npz), or --node to ask a running node")
    try:
        points, colors, recorded_up_axis = read_cloud_file(arguments.scene)
        settings = EngineSettings(
            checkpoint=arguments.checkpoint,
            backend=arguments.backend,
            up_axis=arguments.up_axis or recorded_up_axis or "-y",
            max_new_tokens=arguments.max_new_tokens,
            lm_backend=arguments.lm_backend,
        )
        settings.validate()
        engine = InferenceEngine(settings)
        engine.load()
        print(engine.language_backend_note, file=sys.stderr)
        reply = ask(engine, SceneCloud(points, colors, frame_id=Path(arguments.scene).stem), arguments.prompt)
    except (ThreeDLLMError, MessageFormatError) as error:
        print(f"threed-llm ask: {error}", file=sys.stderr)
        return 2
    if arguments.json:
        print(json.dumps(reply, indent=2, default=float))
        return 0
    print(f"[{reply['intent']}] {reply['text']}")
    for box in reply.get("boxes", []):
        x, y, z = box["position"]
        print(f"  {box['label']} ({box['source']}, score {box['score']:.2f}): centre ({x:+.2f}, {y:+.2f}, {z:+.2f}) m, "
              f"size {' x '.join(f'{value:.2f}' for value in box['size'])} m")
    if "plan" in reply:
        for step in reply["plan"]["steps"]:
            pose = step.get("pose")
            where = f" -> goal {np.round(pose['position'], 2).tolist()}" if pose else ""
            print(f"  {step['action']}({step['target']}){where}")
    print(f"  ({reply['timings'].get('total_s', float('nan')):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
