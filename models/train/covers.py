"""Node covers for Verdict's explanations, and golden explanations from shap.

Path-dependent TreeSHAP weighs each branch by its cover: how many training
rows (scikit-learn, LightGBM) or how much hessian (XGBoost) reached the
node. An ONNX file does not carry covers, so the training tools take them
from the trained model and write them beside the manifest:

    {"format": "verdict-covers-1", "model_sha256": "<sha256 of the .onnx>",
     "covers": [c0, c1, ...]}

one number per entry of the ONNX tree-ensemble operator's `nodes_*` lists,
in their order. Verdict refuses a covers file whose hash is not the model
file's.

The covers are matched to ONNX nodes by walking each ONNX tree beside the
trained tree, root to leaves: the ONNX "true" branch is the trained tree's
left child for all three libraries (x <= t for scikit-learn and LightGBM,
x < t for XGBoost), and each matched split must read the same feature, so a
change in how an exporter numbers or orders nodes fails loudly here rather
than producing wrong explanations.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx


def onnx_trees(onnx_bytes: bytes):
    """The ONNX trees: a list (in ONNX Runtime's tree order) of root entry
    indices, and per entry (feature, true entry, false entry) or None for a
    leaf."""
    model = onnx.load_from_string(onnx_bytes)
    node = next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    trees, ids, modes = a["nodes_treeids"], a["nodes_nodeids"], a["nodes_modes"]
    index = {(t, i): k for k, (t, i) in enumerate(zip(trees, ids))}
    entries = []
    for k in range(len(trees)):
        if modes[k] == b"LEAF":
            entries.append(None)
        else:
            t = trees[k]
            entries.append(
                (
                    a["nodes_featureids"][k],
                    index[(t, a["nodes_truenodeids"][k])],
                    index[(t, a["nodes_falsenodeids"][k])],
                )
            )
    roots = [k for k in range(len(trees)) if k == 0 or trees[k] != trees[k - 1]]
    return roots, entries


def match_covers(onnx_bytes: bytes, native_trees) -> list:
    """Covers per ONNX entry. `native_trees`: one per ONNX tree, each a dict
    node -> (feature, left, right, cover), leaves with feature None, root 0."""
    roots, entries = onnx_trees(onnx_bytes)
    if len(roots) != len(native_trees):
        raise SystemExit(f"covers: {len(roots)} ONNX trees, {len(native_trees)} trained trees")
    covers = [0.0] * len(entries)
    for t, (root, native) in enumerate(zip(roots, native_trees)):
        stack = [(root, 0)]
        while stack:
            k, n = stack.pop()
            feature, left, right, cover = native[n]
            covers[k] = float(cover)
            e = entries[k]
            if (e is None) != (feature is None):
                raise SystemExit(f"covers: tree {t}: ONNX entry {k} and trained node {n} differ (leaf / split)")
            if e is None:
                continue
            if e[0] != feature:
                raise SystemExit(f"covers: tree {t}: ONNX entry {k} splits on {e[0]}, trained node {n} on {feature}")
            stack.append((e[1], left))
            stack.append((e[2], right))
    return covers


def write_covers(path: Path, onnx_bytes: bytes, covers: list) -> None:
    doc = {
        "format": "verdict-covers-1",
        "model_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "covers": covers,
    }
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def hgb_trees(clf):
    """scikit-learn HistGradientBoosting (binary or regression): one tree per
    iteration; the cover is the node's training-row count."""
    out = []
    for predictors in clf._predictors:
        if len(predictors) != 1:
            raise SystemExit("covers: one tree per iteration expected (binary or regression)")
        nodes = predictors[0].nodes
        out.append(
            {
                i: (None, None, None, n["count"])
                if n["is_leaf"]
                else (int(n["feature_idx"]), int(n["left"]), int(n["right"]), n["count"])
                for i, n in enumerate(nodes)
            }
        )
    return out


def lightgbm_trees(booster):
    """LightGBM: internal_count / leaf_count, nodes numbered depth-first."""
    out = []
    for info in booster.dump_model()["tree_info"]:
        tree = {}

        def walk(node):
            me = len(tree)
            tree[me] = None
            if "leaf_index" in node or "split_feature" not in node:
                tree[me] = (None, None, None, node.get("leaf_count", 0))
                return me
            left = walk(node["left_child"])
            right = walk(node["right_child"])
            tree[me] = (int(node["split_feature"]), left, right, node["internal_count"])
            return me

        walk(info["tree_structure"])
        out.append(tree)
    return out


def xgboost_trees(booster):
    """XGBoost: the cover is the hessian sum, as shap uses it."""
    df = booster.trees_to_dataframe()
    out = []
    for tree_no, rows in df.groupby("Tree", sort=True):
        by_id = {r.ID: r for r in rows.itertuples()}
        number = {}

        def walk(node_id):
            me = len(number)
            number[me] = None
            r = by_id[node_id]
            if r.Feature == "Leaf":
                number[me] = (None, None, None, r.Cover)
                return me
            feature = int(str(r.Feature).lstrip("f"))
            left = walk(r.Yes)
            right = walk(r.No)
            number[me] = (feature, left, right, r.Cover)
            return me

        walk(f"{tree_no}-0")
        out.append(number)
    return out


def golden_explanations(
    path: Path, version: str, inputs: list, rows: np.ndarray, explainer, margins, margin_tolerance: float = 1e-6
) -> float:
    """Writes shap's path-dependent contributions for `rows` and returns the
    largest |sum + base - margin| (shap's own additivity). `margins` come
    from the training library (XGBoost's are float32: `margin_tolerance`)."""
    values = np.asarray(explainer.shap_values(rows.astype(np.float64), check_additivity=False))
    if values.ndim == 3:  # some versions give [n, features, outputs]
        values = values[..., -1]
    base = float(np.ravel(explainer.expected_value)[-1])
    margins = np.asarray(margins, dtype=np.float64)
    additivity = float(np.max(np.abs(values.sum(axis=1) + base - margins)))

    def num(v):
        v = float(v)
        return None if np.isnan(v) else v

    doc = {
        "version": version,
        "inputs": inputs,
        "explainer": "shap.TreeExplainer, feature_perturbation=tree_path_dependent",
        "base_value": base,
        "tolerance": 1e-6,
        "margin_tolerance": margin_tolerance,
        "rows": [
            {"input": [num(v) for v in row], "margin": float(m), "contributions": [float(c) for c in phi]}
            for row, m, phi in zip(rows, margins, values)
        ],
    }
    path.write_text(json.dumps(doc) + "\n")
    return additivity / margin_tolerance * 1e-6
