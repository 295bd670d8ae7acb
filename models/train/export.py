"""ONNX export of a fitted scikit-learn classifier, shared by the scripts here.

The model takes one float32 input `input` of shape [N, n_inputs] (NaN for a
missing value) and yields `label` (int64 [N]) and `probabilities`
(float32 [N, n_classes]); no ZipMap, so Verdict reads a plain tensor.
"""

import numpy as np
import skl2onnx.common.tree_ensemble as _tree_ensemble
from skl2onnx import to_onnx as skl_to_onnx
from skl2onnx.common.data_types import FloatTensorType

# Two corrections to skl2onnx's HistGradientBoosting export, applied to every
# tree node it adds:
# - it passes the per-node "missing goes left" flag as numpy.uint8 / bool,
#   which onnx's attribute builder rejects; the attribute is an int list;
# - it rounds each float64 split threshold to the nearest float32, which can
#   land above the threshold and send a float32 input equal to that float32
#   down the other branch than scikit-learn does. The largest float32 not
#   above the threshold keeps `x <= t` exactly as scikit-learn decides it.
_add_node = _tree_ensemble.add_node


def _add_node_fixed(*args, nodes_missing_value_tracks_true=0, **kwargs):
    kwargs["adjust_threshold_for_sklearn"] = True
    if kwargs.get("dtype") is None:
        kwargs["dtype"] = np.float32
    return _add_node(
        *args,
        nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true),
        **kwargs,
    )


_tree_ensemble.add_node = _add_node_fixed


def to_onnx(clf, n_inputs: int) -> bytes:
    onx = skl_to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, n_inputs]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()
