"""Edits of the ONNX graph around quantization: where the detect head's float tail is, and the rewrites
that keep it float and the quantized model compact (see converter/quantize.py for why the tail stays float).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import onnx

__all__ = ["compact_qdq_names", "decompose_inner_softmax", "find_head_tail_nodes", "keep_tail_inputs_float"]

# Ultralytics names every node after the nn.Module that produced it: "/model.23/cv2.0/cv2.0.2/Conv".
_BLOCK_NAME = re.compile(r"^/model\.(\d+)/")

# Ops that make up the head's per-scale convolution branches: the convolutions and their activation
# (SiLU exports as Sigmoid + Mul; other activations listed so a retrained variant still parses).
_BRANCH_OPS = frozenset(
    {"Conv", "Sigmoid", "Mul", "Add", "Relu", "LeakyRelu", "HardSigmoid", "HardSwish", "Clip", "Tanh", "Elu"}
)


def _block_index(node: onnx.NodeProto) -> int | None:
    match = _BLOCK_NAME.match(node.name)
    return int(match.group(1)) if match else None


def find_head_tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes of the detect head's decoding tail, in graph order.

    Found from the graph's structure (apart from the block number Ultralytics puts in every node name,
    no name is looked at), so YOLOv8, YOLO11 and YOLO26, classic and end-to-end, all work:

    1. The head is the last block: the largest N among nodes named ``/model.N/...``.
    2. Its convolution branches (cv2/cv3, YOLO26's one2one_cv2/one2one_cv3) are stacks of Conv and
       activation ops fed by the feature maps of earlier blocks. Walking forward from those inputs,
       a head node belongs to a branch while it is a Conv or activation op whose every non-constant
       input comes from the head's inputs or from a branch node. The first op that reshapes,
       concatenates, splits or takes a softmax leaves the branches; so does everything after it,
       including the DFL convolution, a fixed-weight (0..15) 1x1 conv that turns each softmaxed
       16-bin distribution into a distance.
    3. Branch ops past the last convolution of their branch (an activation applied to a final conv
       output) are decoding too: a branch node is kept only if it is a Conv or feeds one.
    4. The tail is every other node of the head, plus every node downstream of it (whatever its name,
       e.g. post-processing appended after the head) and every node producing a graph output.

    Raises:
        ValueError: if no node is named ``/model.N/...`` (not an Ultralytics export).
    """
    graph = model.graph
    blocks = [index for node in graph.node if (index := _block_index(node)) is not None]
    if not blocks:
        raise ValueError("no node is named /model.<N>/...: this is not an Ultralytics YOLO export")
    head_index = max(blocks)
    head = [node for node in graph.node if _block_index(node) == head_index]
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    made_in_head = {out for node in head for out in node.output}

    # Step 2: forward from the head's inputs through Conv/activation ops (graph.node is topologically sorted).
    branch_tensors: set[str] = set()
    spatial: list[onnx.NodeProto] = []
    for node in head:
        data = [name for name in node.input if name and name not in constants]
        from_branch = all(name in branch_tensors or name not in made_in_head for name in data)
        if node.op_type in _BRANCH_OPS and data and from_branch:
            spatial.append(node)
            branch_tensors.update(node.output)

    # Step 3: backwards from the branch convolutions: only what feeds a conv is part of a branch.
    producer = {out: node for node in spatial for out in node.output}
    branch: set[str] = set()
    stack = [node for node in spatial if node.op_type == "Conv"]
    while stack:
        node = stack.pop()
        if node.name in branch:
            continue
        branch.add(node.name)
        stack.extend(producer[name] for name in node.input if name in producer)

    # Step 4: the rest of the head, then everything fed by it or producing a graph output.
    tail = {node.name for node in head if node.name not in branch}
    tail_tensors = {out for node in head if node.name in tail for out in node.output}
    graph_outputs = {out.name for out in graph.output}
    for node in graph.node:  # topological order: one pass closes the set downstream
        if node.name in tail:
            continue
        if any(name in tail_tensors for name in node.input) or any(out in graph_outputs for out in node.output):
            tail.add(node.name)
            tail_tensors.update(node.output)
    return [node.name for node in graph.node if node.name in tail]


def keep_tail_inputs_float(model: onnx.ModelProto, tail: Iterable[str]) -> None:
    """Remove the QuantizeLinear -> DequantizeLinear pairs through which the tail reads its inputs.

    quantize_static quantizes every Conv output, including those of the head's last convolutions,
    whose only readers are tail nodes. Rewiring those readers to the float tensor keeps the
    regression distributions and class logits in float32, as the tail expects; the Q/DQ nodes left
    without readers are dropped.
    """
    graph = model.graph
    tail = set(tail)
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.name not in tail:
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    _drop_unread_nodes(graph, {"QuantizeLinear", "DequantizeLinear"})
    # Their scales and zero points too, or onnxruntime warns about each one at every load.
    read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    unused = [init for init in graph.initializer if init.name not in read]
    for init in unused:
        graph.initializer.remove(init)


def decompose_inner_softmax(model: onnx.ModelProto, node_names: Iterable[str] | None = None) -> list[str]:
    """Rewrite each Softmax over a non-last axis as ReduceMax, Sub, Exp, ReduceSum, Div, in place.

    The DFL takes a softmax over the 16 bins of (1, 16, 4, anchors), i.e. over axis 1. onnxruntime's
    CPU Softmax only works on the last axis, so it transposes the tensor there and back, which takes
    about 8 % of a whole YOLO11n FP32 inference at 640 (x86, 1 thread) and 9-10 % of the INT8 one. The
    five elementwise/reduce ops compute the same values (max abs difference 5e-5 px on the boxes) in a
    tenth of the time. The ops are float32 either way; this only makes the float tail cheaper, and
    applies equally to an FP32 model.

    Args:
        model: an opset >= 13 model (Softmax's axis semantics changed in opset 13).
        node_names: only consider these nodes (default: all).

    Returns:
        The names of the nodes added, empty if nothing was rewritten.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        return []
    graph = model.graph
    allowed = None if node_names is None else set(node_names)
    ranks = _tensor_ranks(model)
    added: list[str] = []
    index = 0
    while index < len(graph.node):
        node = graph.node[index]
        index += 1
        if node.op_type != "Softmax" or (allowed is not None and node.name not in allowed):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        rank = ranks.get(node.input[0])
        if rank is None or axis in (-1, rank - 1):
            continue  # already a last-axis softmax (or unknown rank): onnxruntime handles it directly
        x, y, base = node.input[0], node.output[0], node.name or node.output[0]
        axes = f"{base}/axes"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array([axis], dtype=np.int64), axes))
        if opset >= 18:
            reduce_max = onnx.helper.make_node("ReduceMax", [x, axes], [f"{base}/max"], name=f"{base}/ReduceMax")
        else:  # ReduceMax takes its axes as an attribute before opset 18
            reduce_max = onnx.helper.make_node("ReduceMax", [x], [f"{base}/max"], name=f"{base}/ReduceMax", axes=[axis])
        new = [
            reduce_max,
            # Subtracting the max keeps exp() finite whatever the logits' range, as Softmax does.
            onnx.helper.make_node("Sub", [x, f"{base}/max"], [f"{base}/shifted"], name=f"{base}/Sub"),
            onnx.helper.make_node("Exp", [f"{base}/shifted"], [f"{base}/exp"], name=f"{base}/Exp"),
            onnx.helper.make_node("ReduceSum", [f"{base}/exp", axes], [f"{base}/sum"], name=f"{base}/ReduceSum"),
            onnx.helper.make_node("Div", [f"{base}/exp", f"{base}/sum"], [y], name=f"{base}/Div"),
        ]
        position = index - 1
        graph.node.remove(node)
        for offset, new_node in enumerate(new):
            graph.node.insert(position + offset, new_node)
        index = position + len(new)
        added += [new_node.name for new_node in new]
    return added


def _tensor_ranks(model: onnx.ModelProto) -> dict[str, int]:
    values = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}


def compact_qdq_names(model: onnx.ModelProto) -> None:
    """Give the tensors quantize_static inserted short names, in place.

    quantize_static names them after the tensor they quantize plus a suffix ("<tensor>_QuantizeLinear_Output",
    "<tensor>_zero_point", ...): about 300 bytes of names per quantized tensor, 6 % of a nano model's
    INT8 file and enough to miss the 0.3x size target. The float tensors and the weights keep their
    names, so the graph reads the same: each Q/DQ still names the tensor it quantizes.
    """
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    renames: dict[str, str] = {}

    def shorten(name: str, prefix: str) -> None:
        if name and name not in keep and name not in renames:
            renames[name] = f"{prefix}{len(renames)}"

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        shorten(node.input[1], "s")  # scale
        if len(node.input) > 2:
            shorten(node.input[2], "z")  # zero point
        shorten(node.output[0], "q" if node.op_type == "QuantizeLinear" else "dq")
        node.name = renames.get(node.output[0], node.output[0])
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)


def _drop_unread_nodes(graph: onnx.GraphProto, op_types: set[str]) -> None:
    """Remove nodes of `op_types` whose outputs nobody reads, repeatedly (a Q feeding only a dropped DQ)."""
    while True:
        read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        unread = [node for node in graph.node if node.op_type in op_types and not any(o in read for o in node.output)]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)
