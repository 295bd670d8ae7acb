"""ONNX export of a fitted scikit-learn classifier, shared by the scripts here.

The model takes one float32 input `input` of shape [N, n_inputs] (NaN for a
missing value) and yields `label` (int64 [N]) and `probabilities`
(float32 [N, n_classes]); no ZipMap, so Verdict reads a plain tensor.
"""

import skl2onnx.common.tree_ensemble as _tree_ensemble
from skl2onnx import to_onnx as skl_to_onnx
from skl2onnx.common.data_types import FloatTensorType

# skl2onnx passes HistGradientBoosting's per-node "missing goes left" flag
# through as numpy.uint8 / bool, which onnx's attribute builder rejects; the
# ONNX attribute is an int list, so hand it a plain int.
_add_node = _tree_ensemble.add_node


def _add_node_int_missing(*args, nodes_missing_value_tracks_true=0, **kwargs):
    return _add_node(
        *args,
        nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true),
        **kwargs,
    )


_tree_ensemble.add_node = _add_node_int_missing


def to_onnx(clf, n_inputs: int) -> bytes:
    onx = skl_to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, n_inputs]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()
