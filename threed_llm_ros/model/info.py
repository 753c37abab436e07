"""``threed-llm model-info``: the parameter table of a model preset, config file or checkpoint.

Builds the model on the CPU (the base language model is loaded from local files) and
prints trainable vs total parameters per component, or the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from threed_llm_ros.errors import ThreeDLLMError

MINIGPT_3D_TRAINABLE = 47.8e6  # trainable parameters reported by MiniGPT-3D, for scale


def _format_count(count: int) -> str:
    if count >= 1e6:
        return f"{count / 1e6:.2f} M"
    if count >= 1e3:
        return f"{count / 1e3:.1f} k"
    return str(count)


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`~threed_llm_ros.model.checkpoint.parameter_report`."""
    rows = [(name, entry["trainable"], entry["total"]) for name, entry in report["components"].items()]
    rows.append(("all", report["trainable"], report["total"]))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"model: {report['name']}", f"{'component'.ljust(width)}  {'trainable':>12}  {'total':>12}"]
    for index, (name, trainable, total) in enumerate(rows):
        if index == len(rows) - 1:
            lines.append("-" * (width + 28))
        lines.append(f"{name.ljust(width)}  {_format_count(trainable):>12}  {_format_count(total):>12}")
    share = report["trainable"] / MINIGPT_3D_TRAINABLE
    lines.append(f"trainable parameters: {report['trainable']:,} ({share:.1%} of MiniGPT-3D's 47.8 M)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``threed-llm model-info``."""
    parser = argparse.ArgumentParser(prog="threed-llm model-info", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default="mini",
        help="preset (mini, base), a model config file (.yaml/.json) or a checkpoint directory (default: mini)",
    )
    parser.add_argument("--language-model", default=None, help="base LM (.gguf or HF directory); default: the config's")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    arguments = parser.parse_args(argv)

    from dataclasses import replace

    # lazy: transformers loads only when `threed-llm info` describes a model, not for --help or bad arguments
    from threed_llm_ros.model.checkpoint import parameter_report
    from threed_llm_ros.model.threed_llm import ThreeDLLM
    from threed_llm_ros.model.threed_llm_config import load_model_config

    try:
        config = load_model_config(arguments.config)
        if arguments.language_model:
            config = replace(config, language_model_path=arguments.language_model)
        model = ThreeDLLM(config)
    except ThreeDLLMError as error:
        print(f"threed-llm model-info: {error}", file=sys.stderr)
        return 2
    report = parameter_report(model)
    report["num_scene_tokens"] = model.config.scene_encoder.num_scene_tokens
    report["num_location_bins"] = model.config.location.num_bins
    checkpoint = Path(arguments.config)
    if checkpoint.is_dir() and (checkpoint / "model.safetensors").is_file():
        report["checkpoint_bytes"] = (checkpoint / "model.safetensors").stat().st_size
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        print(f"scene tokens: {report['num_scene_tokens']}, location bins: {report['num_location_bins']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
