"""Compiles a tree-ensemble ONNX model with treelite + tl2cgen into a shared
library, the peer `benches/benches/models.rs` measures the native evaluator
against (scripts/ensure-treelite.sh runs this).

The treelite model is built from the ONNX file's own trees (the same
thresholds, leaf values, missing-value branches and base value), so both
evaluate the same model; before writing the library the script checks that
treelite's predictions equal ONNX Runtime's on random rows.

    python treelite_build.py MODEL.onnx OUT.so
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tl2cgen
import treelite
from treelite.model_builder import Metadata, ModelBuilder, PostProcessorFunc, TreeAnnotation


def main() -> int:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    model = onnx.load(src)
    node = next(n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier")
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    if a.get("post_transform") != b"LOGISTIC" or len(set(a["class_ids"])) != 1:
        print("treelite_build: a binary LOGISTIC classifier is expected", file=sys.stderr)
        return 1
    n_features = max(a["nodes_featureids"]) + 1
    width = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value or n_features
    trees = a["nodes_treeids"]
    n_trees = len(set(trees))
    leaf = {(t, n): w for t, n, w in zip(a["class_treeids"], a["class_nodeids"], a["class_weights"])}
    base = list(a.get("base_values", [0.0]))
    builder = ModelBuilder(
        threshold_type="float32",
        leaf_output_type="float32",
        metadata=Metadata(
            num_feature=width,
            task_type="kBinaryClf",
            average_tree_output=False,
            num_target=1,
            num_class=[1],
            leaf_vector_shape=(1, 1),
        ),
        tree_annotation=TreeAnnotation(num_tree=n_trees, target_id=[0] * n_trees, class_id=[0] * n_trees),
        postprocessor=PostProcessorFunc(name="sigmoid"),
        base_scores=[base[0] if base else 0.0],
    )
    for t in sorted(set(trees)):
        builder.start_tree()
        for k in (k for k in range(len(trees)) if trees[k] == t):
            builder.start_node(a["nodes_nodeids"][k])
            if a["nodes_modes"][k] == b"LEAF":
                builder.leaf(leaf[(t, a["nodes_nodeids"][k])])
            else:
                if a["nodes_modes"][k] != b"BRANCH_LEQ":
                    print("treelite_build: BRANCH_LEQ splits are expected", file=sys.stderr)
                    return 1
                builder.numerical_test(
                    feature_id=a["nodes_featureids"][k],
                    threshold=a["nodes_values"][k],
                    default_left=bool(a["nodes_missing_value_tracks_true"][k]),
                    opname="<=",
                    left_child_key=a["nodes_truenodeids"][k],
                    right_child_key=a["nodes_falsenodeids"][k],
                )
            builder.end_node()
        builder.end_tree()
    tl = builder.commit()

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(20000, width)) * rng.choice([1, 10, 1000], size=width)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {model.graph.input[0].name: x}
    )[0][:, 1]
    got = np.asarray(treelite.gtil.predict(tl, x)).reshape(-1)
    worst = float(np.max(np.abs(got - want)))
    if worst > 1e-6:
        print(f"treelite_build: treelite disagrees with ONNX Runtime by {worst:g}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tl2cgen.export_lib(tl, toolchain="gcc", libpath=str(out), params={"parallel_comp": 4}, verbose=False)
    print(f"treelite_build: {out} ({n_trees} trees; agrees with ONNX Runtime to {worst:g})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
