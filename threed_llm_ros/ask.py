"""`threed-llm ask SCENE "question" ["question" ...]`: the node's answers without ROS, from a file.

`threed-llm ask IMAGE --camera-info K.yaml "where is the bed?"` grounds the object in one RGB image
from its intrinsics alone (no depth: the single-image path of :mod:`threed_llm_ros.mono3d.ask`,
checkpoint ``models/mono3d``).

`threed-llm ask --node "question"` asks a running threed_llm_node instead, through its ``~/ask``
action (``--action /ns/threed_llm_node/ask`` names another node's; this path needs ROS
and the built interfaces, and runs :mod:`threed_llm_ros.ros.prompt_client`).

Reads a point cloud from .ply / .pcd (open3d) or .npz (this package's dataset scenes with
``points``/``colors``/``up_axis``, SUN RGB-D style ``pc`` N×6 arrays, or ``xyz``/``rgb``),
routes the prompt by intent like ``threed_llm_node`` (describe / question / find / plan)
and prints the answer, the grounded boxes or the plan, using the same inference engine.

Loading takes seconds, so one call answers several prompts (given in turn, or typed one per line
with ``--interactive``). The arguments, the prompts and the file are checked before anything
heavy is imported or loaded: a mistake is reported at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from threed_llm_ros.errors import ConfigError, MessageFormatError, ThreeDLLMError
from threed_llm_ros.mono3d.ask import IMAGE_SUFFIXES, tilt_problem  # light: no torch
from threed_llm_ros.mono3d.projection import camera_height_problem
from threed_llm_ros.runtime.choices import BACKENDS, LM_BACKENDS
from threed_llm_ros.runtime.intent import MAX_PROMPT_CHARS, route

if TYPE_CHECKING:  # the engine imports torch: only once the input is known to be good
    from threed_llm_ros.runtime.engine import InferenceEngine
    from threed_llm_ros.runtime.replies import SceneCloud

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
                "score": item.score,  # the object layer's calibrated confidence that it is `category`
                "category": item.category,
                "point_count": item.point_count,
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="threed-llm ask", description=__doc__.splitlines()[0],
        usage="threed-llm ask SCENE PROMPT [PROMPT ...] | SCENE --interactive | --node PROMPT [PROMPT ...] | "
              "IMAGE --camera-info K.yaml PROMPT [PROMPT ...]")
    parser.add_argument("items", nargs="*", metavar="SCENE PROMPT",
                        help='a .ply, .pcd or .npz point cloud (not with --node), then one or more prompts, e.g. '
                             '"describe the scene" "where is the red chair?" "bring the cup to the sofa"')
    parser.add_argument("--interactive", "-i", action="store_true",
                        help="after loading, read prompts from standard input, one per line "
                             "(an empty line or EOF ends)")
    parser.add_argument("--node", action="store_true", help="ask a running threed_llm_node through its Ask action")
    parser.add_argument("--action", default=NODE_ACTION, help="--node: the node's Ask action (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="--node: seconds to wait for the answer")
    parser.add_argument("--camera-info", type=Path, default=None,
                        help="with an IMAGE (.png, .jpg) instead of a SCENE: its ROS camera-calibration YAML; "
                             "the object is then grounded from the RGB image alone")
    parser.add_argument("--camera-pitch", type=float, default=None, metavar="DEG",
                        help="with an IMAGE: the camera's optical axis above the horizon in degrees (negative: "
                             "looking down, e.g. -15); the image is levelled before the model (default: level)")
    parser.add_argument("--camera-roll", type=float, default=None, metavar="DEG",
                        help="with an IMAGE: the camera's roll about its optical axis in degrees (positive: "
                             "clockwise seen from behind it)")
    parser.add_argument("--camera-height", type=float, default=None, metavar="M",
                        help="with an IMAGE: the camera's height above the floor in metres (default: 1.2, the "
                             "training frames'); it sets the depth of objects on the floor")
    parser.add_argument("--checkpoint", default=None,
                        help=f"checkpoint directory (default: {DEFAULT_CHECKPOINT}; models/mono3d for an IMAGE)")
    parser.add_argument("--up-axis", choices=("-y", "z"), default=None,
                        help="the cloud frame's up axis: -y camera optical frame, z REP-103 (default: the file's, else -y)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="the scene encoder's runtime")
    parser.add_argument("--lm-backend", choices=LM_BACKENDS, default="auto",
                        help="language model: auto (onnxruntime on the CPU for a trained checkpoint, else torch), "
                             "torch or onnxruntime (default: %(default)s, as the node)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print each reply as one line of JSON")
    return parser


def check_prompt(prompt: str) -> str | None:
    """None when the node would take ``prompt``, else the problem and its fix (the node's own rules)."""
    try:
        route(prompt, MAX_PROMPT_CHARS)
    except MessageFormatError as error:
        shown = prompt if len(prompt) <= 40 else prompt[:37] + "..."
        return f"the prompt {shown!r} {error.problem}"
    return None


def print_reply(reply: dict[str, Any], frame: str, as_json: bool) -> None:
    """One reply: its text once, then boxes and goals, each with the frame its coordinates are in."""
    if as_json:
        print(json.dumps({**reply, "frame": frame}, default=float), flush=True)  # JSON Lines: one reply a line
        return
    print(f"[{reply['intent']}] {reply['text']}")
    for box in reply.get("boxes", []):
        x, y, z = box["position"]
        print(f"  {box['label']}: centre ({x:+.2f}, {y:+.2f}, {z:+.2f}) m in {frame}, "
              f"size {' x '.join(f'{value:.2f}' for value in box['size'])} m; "
              f"confidence {box['score']:.2f} that it is a {box.get('category') or 'this category'}, "
              f"from {box.get('point_count', 0)} points")
    if "plan" in reply:
        for step in reply["plan"]["steps"]:
            pose = step.get("pose")
            where = (f" -> goal ({', '.join(f'{value:+.2f}' for value in pose['position'])}) m in {frame}"
                     if pose else " (not seen: no goal)" if step.get("seen") is False else "")
            destination = f", {step['destination']}" if step.get("destination") else ""
            print(f"  {step['action']}({step['target']}{destination}){where}")
    print(f"  ({reply['timings'].get('total_s', float('nan')):.2f} s)", flush=True)


def _prompts_from(stream: Any) -> Any:
    """Prompts typed one per line, until an empty line or the end of input."""
    while True:
        if stream.isatty():
            print("ask> ", end="", file=sys.stderr, flush=True)
        line = stream.readline()
        if not line.strip():
            return
        yield line.strip()


def _image_mode_problem(arguments: argparse.Namespace, scene: str | None, image_given: bool) -> str | None:
    """What is wrong with an IMAGE --camera-info call (None when nothing is)."""
    if scene is None:
        return ("--camera-info / --camera-pitch / --camera-roll / --camera-height go with an IMAGE file, "
                "not with --node")
    if not image_given:
        return (f"--camera-info (and --camera-pitch / --camera-roll / --camera-height) goes with an image "
                f"({', '.join(IMAGE_SUFFIXES)}), not with {Path(scene).name}; drop it to ask about a point cloud")
    if arguments.camera_info is None:
        return (f"{Path(scene).name} is an image: give its intrinsics with --camera-info K.yaml "
                "(a ROS camera-calibration YAML)")
    if arguments.interactive:
        return "--interactive is for a SCENE file; give the prompts after the IMAGE"
    return (tilt_problem(arguments.camera_pitch, arguments.camera_roll)
            or camera_height_problem(arguments.camera_height, "--camera-height"))


def main(argv: list[str] | None = None) -> int:
    """``threed-llm ask``: check every input first, then load once and answer each prompt.

    Length: the checks of the three ways to ask (a cloud file, an image with its camera, a
    running node), one or two lines each, kept together so that all run before torch loads."""
    parser = _parser()
    arguments = parser.parse_intermixed_args(argv)  # `ask IMAGE --camera-info K.yaml "prompt"`: options between
    items = list(arguments.items)
    if arguments.node:
        if arguments.interactive:
            parser.error("--interactive reads prompts for a SCENE file; with --node give the prompts as arguments")
        prompts = items
    else:
        if not items:
            parser.error("give the SCENE file (.ply, .pcd or .npz) and a prompt, or --node to ask a running node")
        scene, prompts = items[0], items[1:]
        if not prompts and not arguments.interactive:
            parser.error(f"give a prompt after {scene}, e.g. \"describe the scene\" (or --interactive to type them)")
    if arguments.node and not prompts:
        parser.error("give a prompt to send to the node")
    image_given = not arguments.node and Path(scene).suffix.lower() in IMAGE_SUFFIXES
    if arguments.camera_info is not None or image_given or arguments.camera_pitch is not None \
            or arguments.camera_roll is not None or arguments.camera_height is not None:
        problem = _image_mode_problem(arguments, scene if not arguments.node else None, image_given)
        if problem:
            parser.error(problem)
    problems = [problem for problem in map(check_prompt, prompts) if problem]
    if problems:  # before any heavy import or load: a mistake costs nothing
        print("\n".join(f"threed-llm ask: {problem}" for problem in problems), file=sys.stderr)
        return 2
    if image_given:
        from threed_llm_ros.mono3d.ask import ask_image  # reads and checks the files before importing torch

        return ask_image(Path(scene), arguments.camera_info, prompts,
                         Path(arguments.checkpoint) if arguments.checkpoint else None, arguments.json,
                         "threed-llm ask", arguments.camera_pitch, arguments.camera_roll, arguments.camera_height)
    arguments.checkpoint = arguments.checkpoint or DEFAULT_CHECKPOINT
    if arguments.node:
        from threed_llm_ros.ros.prompt_client import main as ask_node  # ROS only on this path

        return ask_node([option for prompt in prompts for option in ("--prompt", prompt)]
                        + ["--action", arguments.action, "--timeout", str(arguments.timeout), "--wait", "10"])
    try:
        points, colors, recorded_up_axis = read_cloud_file(scene)  # checked before the engine's imports
    except ThreeDLLMError as error:
        print(f"threed-llm ask: {error}", file=sys.stderr)
        return 2
    up_axis = arguments.up_axis or recorded_up_axis or "-y"
    frame = f"the frame of {Path(scene).name} (up axis {up_axis})"
    try:
        engine = _load_engine(arguments, up_axis)
        from threed_llm_ros.runtime.replies import SceneCloud

        cloud = SceneCloud(points, colors, frame_id=Path(scene).stem)
        failures = 0
        for prompt in prompts if not arguments.interactive else [*prompts, *_prompts_from(sys.stdin)]:
            problem = check_prompt(prompt)
            if problem:  # typed at the prompt: say so, go on
                print(f"threed-llm ask: {problem}", file=sys.stderr)
                failures += 1
                continue
            print_reply(ask(engine, cloud, prompt), frame, arguments.json)
    except (ThreeDLLMError, MessageFormatError) as error:
        print(f"threed-llm ask: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if failures else 0


def _load_engine(arguments: argparse.Namespace, up_axis: str) -> "InferenceEngine":
    """The engine, loaded, each slow step announced on stderr (no warm-up: the first prompt pays that once)."""
    print("importing torch and the model code…", file=sys.stderr, flush=True)
    from threed_llm_ros.runtime.engine import InferenceEngine
    from threed_llm_ros.runtime.engine_settings import EngineSettings

    settings = EngineSettings(checkpoint=arguments.checkpoint, backend=arguments.backend, up_axis=up_axis,
                              max_new_tokens=arguments.max_new_tokens, lm_backend=arguments.lm_backend)
    engine = InferenceEngine(settings, progress=lambda note: print(note + "…", file=sys.stderr, flush=True))
    load_s = engine.load()
    print(engine.language_backend_note, file=sys.stderr)
    print(f"loaded in {load_s:.1f} s; the first reply also initialises open3d and ONNX Runtime (a few seconds)",
          file=sys.stderr, flush=True)
    return engine


if __name__ == "__main__":
    sys.exit(main())
