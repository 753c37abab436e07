"""The ``threed-llm`` command: one entry point, one subcommand per task.

Each subcommand lives in its own module as ``main(argv: list[str]) -> int`` with its own
argparse parser, imported only when called so ``threed-llm --help`` stays fast and the
ROS-free subcommands never import rclpy.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("threed_llm_ros.data.sim.cli", "render a simulated RGB-D scene and print or save what it holds"),
    "generate-data": (
        "threed_llm_ros.data.generate",
        "render simulated scenes, annotate them for every task and write a dataset",
    ),
    "train": ("threed_llm_ros.train.trainer", "train the 3D-LLM with the cascaded recipe (config/train_*.yaml)"),
    "eval": ("threed_llm_ros.eval.evaluate", "evaluate a checkpoint and its blind baseline; Markdown + JSON report"),
    "train-objects": ("threed_llm_ros.objects.train", "train the object layer's classifier on the simulator's proposals"),
    "eval-objects": ("threed_llm_ros.eval.objects_eval", "grounding, absence, counts and captions on simulated frames, via the engine"),
    "train-object-tokens": ("threed_llm_ros.train.object_tokens", "train the object-token projector (the language "
                            "model reads the object list) against the frozen language model"),
    "eval-free-text": ("threed_llm_ros.eval.free_text_eval", "the language model's free-text captions from object "
                       "tokens, scene tokens and blind, on simulated frames and SUN RGB-D 000001"),
    "eval-real": ("threed_llm_ros.eval.realdata", "the object layer on the real frames of ../shared/realdata; PNG overlays"),
    "mono3d-train": ("threed_llm_ros.mono3d.train", "train the single-image (RGB + intrinsics) grounder on simulator "
                     "renders; --no-geometry-projection: the ablation"),
    "mono3d-eval": ("threed_llm_ros.mono3d.evaluate", "evaluate a single-image grounder: Acc@IoU per focal bucket, "
                    "blind baseline, SUN RGB-D bed"),
    "mono3d-card": ("threed_llm_ros.mono3d.card", "write a single-image grounder's model card and CI floors "
                    "(measured on the fixed CI subset)"),
    "mono3d-ask": ("threed_llm_ros.mono3d.ask", "ground a prompt's object in one RGB image given its camera YAML "
                   "(no depth, no ROS)"),
    "model-info": ("threed_llm_ros.model.info", "print the parameter table of a model preset or checkpoint"),
    "ask": ("threed_llm_ros.ask", "answer a prompt about a .ply/.pcd/.npz point cloud, without ROS"),
    "up": ("threed_llm_ros.up", "start a node graph (e.g. config/demo.yaml) as separate processes; Ctrl-C stops it"),
    "play": ("threed_llm_ros.ros.bag_play", "replay a rosbag2/MCAP/ROS 1 bag over DDS; --start the node, --prompt, "
             "--record an MCAP"),
    "view": ("threed_llm_ros.ros.foxglove_live", "live Foxglove view of the running graph (foxglove-sdk WebSocket "
             "server; no ROS install needed)"),
    "record": ("threed_llm_ros.ros.bag_record", "record topics into an MCAP recording (rosbag2, ROS 2 CDR) for N seconds"),
    "export": ("threed_llm_ros.runtime.export", "export the scene encoder and box head to ONNX (threed-llm export onnx ...)"),
    "export-lm": (
        "threed_llm_ros.runtime.lm_export",
        "export the language model (LoRA merged) as an ONNX decoder fed with embeddings (int8/int4)",
    ),
    "bench": ("threed_llm_ros.runtime.bench", "benchmark every backend and stage; JSON + Markdown out "
              "(--soak MINUTES: the node under a 30 Hz camera and prompts; RSS, latency, errors)"),
    "bench-conversions": (
        "threed_llm_ros.ros.bench_conversions",
        "time PointCloud2/Image/depth conversions for a 640x480 frame (JSON out)",
    ),
}


SOAK_MODULE = "threed_llm_ros.ros.soak"


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: threed-llm <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += ["", "Run 'threed-llm <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's ``main``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = arguments[0], arguments[1:]
    if name not in SUBCOMMANDS:
        print(f"threed-llm: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = SUBCOMMANDS[name][0]
    if name == "bench" and any(argument == "--soak" or argument.startswith("--soak=") for argument in rest):
        module_name = SOAK_MODULE  # the soak runs the node over ROS; the stage bench stays ROS-free
    module = importlib.import_module(module_name)
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
