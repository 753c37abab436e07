"""One decoder graph for every LoRA adapter: the base weights quantized once, each adapter a small fp32 branch.

The other layout (``lm_adapters: merged``, ``runtime/lm_export.py``) merges each adapter into its own
graph. This one (``lm_adapters: switchable``) builds the graph from the base weights alone (the
checkpoint's added-token rows and trained norms included: they are shared by the adapters) and
adds, on every projection a LoRA targets (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` here), the
adapters' low-rank updates beside the quantized ``MatMulNBits``::

    y = x W  +  ((x A) * s[adapter of each rank column]) B

``A`` stacks every adapter's ``lora_A`` (fp32, ``in × adapters·rank``), ``B`` their ``lora_B`` with the
LoRA scaling folded in (zero outside the adapter's own output columns, as the builder packs q, k and
v into one ``qkv_proj``). ``s`` comes from a graph input, ``adapter_scales`` (float, one entry per
adapter, in the sidecar's ``adapters`` order): ``[1, 0]`` is the default adapter, ``[0, 1]`` the
``programs`` one. Switching is one different input at run time, with the same session and weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ADAPTER_INPUT = "adapter_scales"
#: The builder's projection outputs per layer, and the LoRA targets each one holds (in output order).
PROJECTION_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn/qkv_proj", ("q_proj", "k_proj", "v_proj")),
    ("attn/q_proj", ("q_proj",)), ("attn/k_proj", ("k_proj",)), ("attn/v_proj", ("v_proj",)),
    ("attn/o_proj", ("o_proj",)),
    ("mlp/gate_proj", ("gate_proj",)), ("mlp/up_proj", ("up_proj",)), ("mlp/down_proj", ("down_proj",)),
)


def lora_factors(model: Any, adapters: list[str]) -> dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]]:
    """Per (layer index, projection name): each adapter's ``(A (rank, in), B (out, rank) × scaling)``, fp32
    (zeros where an adapter does not target the projection)."""
    factors: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, module in model.causal_lm.named_modules():
        if not (hasattr(module, "lora_A") and hasattr(module, "base_layer")) or ".layers." not in name:
            continue
        layer = int(name.split(".layers.")[1].split(".")[0])
        out_features, in_features = module.base_layer.weight.shape
        pairs = []
        for adapter in adapters:
            if adapter in module.lora_A:
                a = module.lora_A[adapter].weight.detach().float().cpu().numpy()
                b = module.lora_B[adapter].weight.detach().float().cpu().numpy() * float(module.scaling[adapter])
            else:
                a, b = np.zeros((1, in_features), np.float32), np.zeros((out_features, 1), np.float32)
            pairs.append((a.astype(np.float32), b.astype(np.float32)))
        factors[(layer, name.rsplit(".", 1)[-1])] = pairs
    return factors


def _branch_weights(pairs_per_target: list[list[tuple[np.ndarray, np.ndarray]]],
                    adapter_count: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Stacked ``A (in, R)``, block ``B (R, out)`` and each rank column's adapter index for one projection
    output holding ``pairs_per_target`` (e.g. q, k, v packed in that order)."""
    a_blocks, b_blocks, owners = [], [], []
    out_total = sum(pairs[0][1].shape[0] for pairs in pairs_per_target)
    offset = 0
    for pairs in pairs_per_target:
        out_features = pairs[0][1].shape[0]
        for adapter_index in range(adapter_count):
            a, b = pairs[adapter_index]
            a_blocks.append(a.T)
            block = np.zeros((a.shape[0], out_total), np.float32)
            block[:, offset:offset + out_features] = b.T
            b_blocks.append(block)
            owners.extend([adapter_index] * a.shape[0])
        offset += out_features
    return np.concatenate(a_blocks, axis=1), np.concatenate(b_blocks, axis=0), owners


def add_switchable_lora(model_path: Path, factors: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]],
                        adapters: list[str]) -> int:
    """Rewrite the graph at ``model_path`` (weights in ``<file>.data``) with the adapters' branches and the
    ``adapter_scales`` input; returns the number of projections given a branch. RuntimeError when a
    LoRA-targeted projection is not found in the graph (a builder whose node names changed)."""
    import onnx
    from onnx import helper, numpy_helper

    graph_model = onnx.load(str(model_path))
    graph = graph_model.graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    layers = sorted({layer for layer, _ in factors})
    targets = {target for _, target in factors}
    branches: dict[str, list[Any]] = {}  # producer node name -> nodes to insert after it
    owners_inputs: dict[tuple[int, ...], str] = {}
    head: list[Any] = []
    covered: set[tuple[int, str]] = set()
    for layer in layers:
        for group, members in PROJECTION_GROUPS:
            output = f"/model/layers.{layer}/{group}/MatMul/output_0"
            if output not in producers or not any(member in targets for member in members):
                continue
            present = [member for member in members if (layer, member) in factors]
            if len(present) != len(members):
                raise RuntimeError(f"{output} packs {members} but LoRA targets only {present}; "
                                   "use lm_adapters: merged for this checkpoint")
            a, b, owners = _branch_weights([factors[(layer, member)] for member in members], len(adapters))
            covered.update((layer, member) for member in members)
            prefix = f"/lora/layers.{layer}/{group}"
            key = tuple(owners)
            if key not in owners_inputs:
                owners_inputs[key] = f"/lora/scales_{len(owners_inputs)}"
                indices = numpy_helper.from_array(np.asarray(owners, np.int64), f"{owners_inputs[key]}/indices")
                graph.initializer.append(indices)
                head.append(helper.make_node("Gather", [ADAPTER_INPUT, indices.name], [owners_inputs[key]],
                                             name=f"{owners_inputs[key]}/Gather", axis=0))
            graph.initializer.extend([numpy_helper.from_array(a, f"{prefix}/A"),
                                      numpy_helper.from_array(b, f"{prefix}/B")])
            source, scales = producers[output].input[0], owners_inputs[key]
            for consumer, index in consumers.get(output, []):
                consumer.input[index] = f"{prefix}/output_0"
            branches[producers[output].name] = _branch_nodes(prefix, source, output, scales)
    missing = sorted(set(factors) - covered)
    if missing:
        raise RuntimeError(f"no projection in {model_path} for the LoRA targets {missing[:4]}; "
                           "use lm_adapters: merged (the model builder's node names may have changed)")
    _save_with_branches(graph_model, head, branches, model_path, len(adapters))
    return len(branches)


def _branch_nodes(prefix: str, source: str, output: str, scales: str) -> list[Any]:
    """The nodes of one projection's branch: ``output`` + ((``source`` A) * ``scales``) B."""
    from onnx import helper

    return [
        helper.make_node("MatMul", [source, f"{prefix}/A"], [f"{prefix}/down"], name=f"{prefix}/MatMulA"),
        helper.make_node("Mul", [f"{prefix}/down", scales], [f"{prefix}/scaled"], name=f"{prefix}/Mul"),
        helper.make_node("MatMul", [f"{prefix}/scaled", f"{prefix}/B"], [f"{prefix}/up"], name=f"{prefix}/MatMulB"),
        helper.make_node("Add", [output, f"{prefix}/up"], [f"{prefix}/output_0"], name=f"{prefix}/Add"),
    ]


def _save_with_branches(graph_model: Any, head: list[Any], branches: dict[str, list[Any]], model_path: Path,
                        adapter_count: int) -> None:
    """Put ``head`` first and each branch right after its projection (the graph stays topologically
    sorted), add the ``adapter_scales`` input and save over ``model_path`` with its weights beside it."""
    import onnx
    from onnx import TensorProto, helper

    graph = graph_model.graph
    ordered = list(head)
    for node in graph.node:
        ordered.append(node)
        ordered.extend(branches.get(node.name, []))
    del graph.node[:]
    graph.node.extend(ordered)
    graph.input.append(helper.make_tensor_value_info(ADAPTER_INPUT, TensorProto.FLOAT, [adapter_count]))
    data_name = f"{model_path.name}.data"
    (model_path.parent / data_name).unlink(missing_ok=True)
    onnx.save_model(graph_model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)


def adapter_scales(adapters: list[str], adapter: str) -> np.ndarray:
    """The ``adapter_scales`` input selecting ``adapter`` (1 for it, 0 for the others)."""
    if adapter not in adapters:
        raise ValueError(f"the switchable decoder has no {adapter!r} adapter (it has {adapters})")
    return np.asarray([1.0 if name == adapter else 0.0 for name in adapters], np.float32)
