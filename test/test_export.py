"""ONNX export of the scene encoder (+ MQE + projector) and the box head, checked against torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from threed_llm_ros.model.box_head import BoxHead, BoxHeadConfig
from threed_llm_ros.model.preprocessing import prepare_scenes
from threed_llm_ros.model.scene_encoder import SceneEncoder, SceneEncoderConfig
from threed_llm_ros.runtime import export
from threed_llm_ros.runtime.backends import OnnxRuntimeBoxHead, OnnxRuntimeSceneEncoder, TorchSceneEncoder

TOLERANCE = 1e-4  # fp32, absolute


@pytest.fixture(scope="module")
def encoder() -> SceneEncoder:
    torch.manual_seed(3)
    return SceneEncoder(SceneEncoderConfig.preset("mini")).eval()


@pytest.fixture(scope="module")
def exported(encoder: SceneEncoder, tmp_path_factory) -> export.ExportedGraph:
    return export.export_scene_encoder(encoder, tmp_path_factory.mktemp("onnx") / "scene_encoder.onnx", opset=17)


@pytest.fixture(scope="module")
def runtime_encoder(exported: export.ExportedGraph) -> OnnxRuntimeSceneEncoder:
    return OnnxRuntimeSceneEncoder(exported.path, providers=["CPUExecutionProvider"], threads=1)


def _random_inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 128, 32, 6, generator=generator) * 0.1, torch.rand(batch, 128, 3, generator=generator) * 2 - 1


def _assert_matches_torch(encoder: SceneEncoder, runtime: OnnxRuntimeSceneEncoder, patches, centers) -> None:
    reference_tokens, reference_weights, reference_patches = TorchSceneEncoder(encoder).encode(patches, centers)
    tokens, weights, patch_tokens = runtime.encode(patches.numpy(), centers.numpy())
    assert tokens.shape == reference_tokens.shape == (patches.shape[0], 32, 576)
    assert patch_tokens.shape == reference_patches.shape == (patches.shape[0], 128, encoder.config.encoder.width)
    assert float((patch_tokens - reference_patches).abs().max()) < TOLERANCE
    assert weights.shape == reference_weights.shape == (patches.shape[0], 8)
    assert float((tokens - reference_tokens).abs().max()) < TOLERANCE
    assert float((weights - reference_weights).abs().max()) < TOLERANCE
    assert torch.equal(weights > 0, reference_weights > 0), "the same experts are chosen"
    assert torch.all((weights > 0).sum(dim=1) == 2), "top-2 routing"


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_onnxruntime_matches_torch_on_random_scenes(encoder, runtime_encoder, batch: int) -> None:
    _assert_matches_torch(encoder, runtime_encoder, *_random_inputs(batch, seed=batch))


def test_different_scenes_in_one_batch_pick_their_own_experts(encoder, runtime_encoder) -> None:
    """Dynamic batch: each row of a batch of 3 equals that scene run alone (no batch-1 broadcast baked in)."""
    patches, centers = _random_inputs(3, seed=11)
    patches[1] *= 8.0  # push scenes apart so the router may differ
    centers[2] = centers[2].flip(-1)
    tokens, weights, _ = runtime_encoder.encode(patches, centers)
    for row in range(3):
        alone_tokens, alone_weights, _ = runtime_encoder.encode(patches[row : row + 1], centers[row : row + 1])
        assert float((tokens[row] - alone_tokens[0]).abs().max()) < TOLERANCE
        assert torch.allclose(weights[row], alone_weights[0], atol=TOLERANCE)


def _sunrgbd_cloud(realdata: Path) -> np.ndarray:
    return np.load(realdata / "sunrgbd_mmdet3d" / "lidar" / "000001.npz")["pc"]


def test_onnxruntime_matches_torch_on_real_scenes(encoder, runtime_encoder, realdata: Path) -> None:
    cloud = _sunrgbd_cloud(realdata)
    mirrored = cloud.copy()
    mirrored[:, 0] *= -1.0
    scenes = [(cloud[:, :3], cloud[:, 3:]), (cloud[: len(cloud) // 2, :3], cloud[: len(cloud) // 2, 3:]),
              (mirrored[:, :3], mirrored[:, 3:])]
    config = encoder.config.preprocess
    config = type(config)(**{**config.to_dict(), "up_axis": "z"})
    single = prepare_scenes(scenes[:1], config, seed=0)
    _assert_matches_torch(encoder, runtime_encoder, single.patches, single.centers)
    batch = prepare_scenes(scenes, config, seed=0)
    assert batch.batch_size == 3
    _assert_matches_torch(encoder, runtime_encoder, batch.patches, batch.centers)


@pytest.mark.parametrize("instances", [False, True], ids=["groups", "instances"])
def test_word_tokens_export_and_pick_the_same_groups(tmp_path: Path, realdata: Path, instances: bool) -> None:
    """A scene encoder with word tokens (top-k over the groups, then gathers; with instances also the
    votes and the pairwise repeat mask) runs the same in ONNX Runtime."""
    config = SceneEncoderConfig.preset("mini")
    config.word_groups = 16
    config.word_instances = instances
    config.preprocess = type(config.preprocess)(**{**config.preprocess.to_dict(), "up_axis": "z"})
    torch.manual_seed(5)
    encoder = SceneEncoder(config).eval()
    generator = torch.Generator().manual_seed(6)
    encoder.set_word_embeddings(torch.randn(len(config.semantic_categories), 576, generator=generator) * 0.13,
                                torch.randn(len(config.semantic_colors), 576, generator=generator) * 0.13)
    graph = export.export_scene_encoder(encoder, tmp_path / "scene_encoder.onnx", opset=17)
    assert json.loads(graph.sidecar.read_text())["num_scene_tokens"] == 32 + 32
    runtime = OnnxRuntimeSceneEncoder(graph.path, providers=["CPUExecutionProvider"], threads=1)
    cloud = _sunrgbd_cloud(realdata)
    batch = prepare_scenes([(cloud[:, :3], cloud[:, 3:]), (cloud[::2, :3], cloud[::2, 3:])], config.preprocess, seed=0)
    reference, _, _ = TorchSceneEncoder(encoder).encode(batch.patches, batch.centers)
    tokens, _, _ = runtime.encode(batch.patches.numpy(), batch.centers.numpy())
    assert tokens.shape == reference.shape == (2, 64, 576)
    assert float((tokens - reference).abs().max()) < TOLERANCE


def test_sidecar_records_opset_hash_names_and_shapes(exported: export.ExportedGraph) -> None:
    metadata = json.loads(exported.sidecar.read_text())
    assert exported.sidecar == exported.path.with_suffix(".json")
    assert metadata["opset"] == 17
    assert metadata["sha256"] == export.file_sha256(exported.path) == exported.sha256
    assert [item["name"] for item in metadata["inputs"]] == ["patches", "centers"]
    assert [item["name"] for item in metadata["outputs"]] == ["scene_tokens", "expert_weights", "patch_tokens"]
    assert metadata["inputs"][0]["shape"] == ["batch", 128, 32, 6]
    assert metadata["outputs"][0]["shape"] == ["batch", 32, 576]
    assert metadata["outputs"][1]["shape"] == ["batch", 8]
    assert metadata["outputs"][2]["shape"] == ["batch", 128, 256]
    import onnx

    model = onnx.load(str(exported.path))
    assert {entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")} == {17}
    batch_dimension = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dimension.dim_param == "batch", "the batch axis is dynamic"


@pytest.mark.parametrize("context", ["points", "encoder", "both"])
@pytest.mark.parametrize("batch,groups", [(1, 128), (3, 64)])
def test_box_head_graph_matches_torch(tmp_path: Path, batch: int, groups: int, context: str) -> None:
    torch.manual_seed(0)
    head = BoxHead(576, BoxHeadConfig(context=context), context_dim=256).eval()
    graph = export.export_box_head(head, tmp_path / "box_head.onnx", num_groups=128)
    scene = {
        "patches": torch.randn(batch, groups, 32, 6) * 0.1,
        "patch_tokens": torch.randn(batch, groups, 256),
        "centers": torch.rand(batch, groups, 3) * 2 - 1,
    }
    hidden = torch.randn(batch, 576) * 2.0
    with torch.inference_mode():
        reference = head.decode(head(hidden, **{name: scene[name] for name in head.scene_inputs}))
    assert [item["name"] for item in graph.metadata["inputs"]] == ["hidden", *head.scene_inputs]
    runtime = OnnxRuntimeBoxHead(graph.path, providers=["CPUExecutionProvider"], threads=1)
    predicted = runtime.predict(hidden, **scene)
    with pytest.raises(ValueError, match="attends over the scene"):
        runtime.predict(hidden)
    assert predicted.shape == (batch, 7)
    assert float((predicted - reference).abs().max()) < TOLERANCE
    assert bool((predicted[:, 3:6] > 0).all()) and bool((predicted[:, 6].abs() <= np.pi + 1e-6).all())


def test_a_head_without_scene_attention_exports_with_the_hidden_state_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    head = BoxHead(64, BoxHeadConfig(scene_attention=False)).eval()
    graph = export.export_box_head(head, tmp_path / "box_head.onnx")
    assert [item["name"] for item in graph.metadata["inputs"]] == ["hidden"]
    hidden = torch.randn(2, 64)
    with torch.inference_mode():
        reference = head.decode(head(hidden))
    predicted = OnnxRuntimeBoxHead(graph.path, providers=["CPUExecutionProvider"], threads=1).predict(hidden)
    assert float((predicted - reference).abs().max()) < TOLERANCE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint

    return build_untrained_checkpoint(tmp_path_factory.mktemp("checkpoint") / "untrained-mini")


@pytest.mark.slow
def test_cli_exports_both_graphs_of_a_checkpoint(checkpoint: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "out" / "encoder.onnx"
    assert export.main(["onnx", "--checkpoint", str(checkpoint), "--output", str(output), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    assert "ONNX Runtime vs torch" in printed
    for path in (output, output.parent / export.BOX_HEAD_FILE):
        metadata = export.read_sidecar(path)
        assert metadata["opset"] == 18
        assert metadata["checkpoint"] == str(checkpoint.resolve())
        assert metadata["checkpoint_sha256"] == export.checkpoint_weights_sha256(checkpoint)
    encoder, head, _ = export.load_exportable_parts(checkpoint)
    patches, centers = _random_inputs(2, seed=5)
    runtime = OnnxRuntimeSceneEncoder(output, providers=["CPUExecutionProvider"], threads=1)
    _assert_matches_torch(encoder, runtime, patches, centers)
    # the head graph reads the grouped points and centres the encoder graph reads
    head_runtime = OnnxRuntimeBoxHead(output.parent / export.BOX_HEAD_FILE, providers=["CPUExecutionProvider"], threads=1)
    assert head_runtime.input_names == ("hidden", *head.scene_inputs)
    hidden = torch.randn(2, head.input_dim)
    scene = {"patches": patches, "centers": centers, "patch_tokens": encoder.export_forward(patches, centers)[2]}
    with torch.inference_mode():
        reference = head.decode(head(hidden, **{name: scene[name] for name in head.scene_inputs}))
    assert float((head_runtime.predict(hidden, **scene) - reference).abs().max()) < TOLERANCE


@pytest.mark.slow
def test_ensure_exported_reuses_current_graphs_and_replaces_stale_ones(checkpoint: Path, tmp_path: Path) -> None:
    encoder_path, head_path = export.ensure_exported(checkpoint, directory=tmp_path)
    first = encoder_path.stat().st_mtime_ns
    assert export.ensure_exported(checkpoint, directory=tmp_path) == (encoder_path, head_path)
    assert encoder_path.stat().st_mtime_ns == first, "a current export is reused"
    encoder_path.write_bytes(encoder_path.read_bytes()[:-10])  # damaged file: its hash no longer matches the sidecar
    export.ensure_exported(checkpoint, directory=tmp_path)
    assert export.read_sidecar(encoder_path)["sha256"] == export.file_sha256(encoder_path)
    OnnxRuntimeSceneEncoder(encoder_path, threads=1)  # loadable again


def test_missing_graph_is_a_model_file_error(tmp_path: Path) -> None:
    from threed_llm_ros.errors import ModelFileError

    with pytest.raises(ModelFileError, match="threed-llm export onnx"):
        OnnxRuntimeSceneEncoder(tmp_path / "absent.onnx")


@pytest.mark.slow
def test_cli_export_without_output_writes_where_the_onnxruntime_backend_looks(checkpoint: Path) -> None:
    assert export.main(["onnx", "--checkpoint", str(checkpoint), "--no-check"]) == 0
    target = checkpoint / export.EXPORT_DIRECTORY
    encoder_path, head_path = target / export.SCENE_ENCODER_FILE, target / export.BOX_HEAD_FILE
    assert encoder_path.is_file() and head_path.is_file()
    assert not list(checkpoint.glob("*.onnx")), "nothing beside the checkpoint's own files"
    written = encoder_path.stat().st_mtime_ns
    assert export.ensure_exported(checkpoint) == (encoder_path, head_path)  # what backend: onnxruntime loads
    assert encoder_path.stat().st_mtime_ns == written, "the engine reuses the command's export"


def test_the_default_export_directory_is_ignored_by_git() -> None:
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for name in (export.SCENE_ENCODER_FILE, export.BOX_HEAD_FILE, "lm-default-int8/model.onnx"):
        path = f"models/threed-llm-mini/{export.EXPORT_DIRECTORY}/{name}"
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0, f"{path} is not ignored"
