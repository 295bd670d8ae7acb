"""Writes the LightGBM and XGBoost test models of models/tests/data/, as
their own tools export them to ONNX (onnxmltools), with manifests, covers
and shap's golden explanations.

- lgbm.onnx: a LightGBM binary classifier, exported with onnxmltools'
  defaults (a ZipMap of the probabilities, Identity and Cast nodes around
  the TreeEnsembleClassifier); the manifest reads the ZipMap.
- lgbm-multi.onnx: a LightGBM three-class classifier (SOFTMAX), exported
  without ZipMap (a Mul by one follows the ensemble).
- xgb.onnx: an XGBoost binary classifier (BRANCH_LT splits, a base value).
- xgb-reg.onnx: an XGBoost regressor (TreeEnsembleRegressor).

Each `<name>.covers.json` holds the trained model's covers (LightGBM's
row counts, XGBoost's hessian sums) and `<name>.explanations.json` shap's
path-dependent contributions for a few rows, for the Rust tests. The rows
are synthetic, over six of the example catalogue's inputs, with missing
values. Deterministic: rerunning writes the same files.

    .verdict/venv/bin/python models/train/make_fixtures.py
"""

from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import shap
import xgboost as xgb
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

from covers import golden_explanations, lightgbm_trees, match_covers, write_covers, xgboost_trees

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"
INPUTS = [
    "event.amount",
    "event.attributes.term_months",
    "feature.user.txn_count_1h",
    "feature.user.amount_avg_30d",
    "feature.device.account_count_7d",
    "feature.ip.txn_count_1h",
]
EXPLAINED = 40


def sample(rng: np.random.Generator, n: int = 4000):
    x = rng.normal(size=(n, len(INPUTS))).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) * 900
    x[:, 2] = np.round(np.abs(x[:, 2]) * 3)
    signal = x[:, 0] / 900 + 0.7 * x[:, 2] - 0.5 * x[:, 3] * x[:, 4] + rng.normal(scale=0.6, size=n)
    x[rng.random(x.shape) < 0.15] = np.nan
    return x, signal


def manifest(name: str, version: str, outputs: str, covers: bool) -> str:
    lines = [
        f"# Written by models/train/make_fixtures.py ({version}).",
        f'name = "{name}"',
        f'version = "{version}"',
        f'file = "{name}.onnx"',
        "inputs = [",
        *[f'    "{p}",' for p in INPUTS],
        "]",
        "missing = nan",
    ]
    if covers:
        lines.append(f'covers = "{name}.covers.json"')
    return "\n".join(lines) + "\n\n" + outputs


def output(name: str, source: str, index: int) -> str:
    return f'[[outputs]]\nname = "{name}"\nfrom = "{source}"\nindex = {index}\n'


def save(name, onx, version, outputs, native_trees=None, explainer=None, margins=None, rows=None, margin_tolerance=1e-6):
    data = onx.SerializeToString()
    (OUT / f"{name}.onnx").write_bytes(data)
    (OUT / f"{name}.manifest.toml").write_text(manifest(name, version, outputs, native_trees is not None))
    if native_trees is not None:
        write_covers(OUT / f"{name}.covers.json", data, match_covers(data, native_trees))
        worst = golden_explanations(
            OUT / f"{name}.explanations.json", version, INPUTS, rows, explainer, margins, margin_tolerance
        )
        if worst > 1e-6:
            raise SystemExit(f"{name}: shap's contributions miss the margin by more than {margin_tolerance:g}")
    print(f"wrote {OUT / name}.* ({len(data)} bytes)")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    x, signal = sample(rng)
    y = (signal > 1.0).astype(int)
    probe = x[:EXPLAINED].copy()
    types = [("input", FloatTensorType([None, len(INPUTS)]))]

    clf = lgb.LGBMClassifier(n_estimators=40, num_leaves=15, learning_rate=0.1, verbose=-1, random_state=3)
    clf.fit(x, y)
    booster = clf.booster_
    save(
        "lgbm",
        convert_lightgbm(clf, initial_types=types, target_opset=15),
        "lgbm-1",
        output("fraud_score", "probabilities", 1),
        lightgbm_trees(booster),
        shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent"),
        booster.predict(probe.astype(np.float64), raw_score=True),
        probe,
    )

    y3 = np.digitize(signal, [0.3, 1.4])
    multi = lgb.LGBMClassifier(n_estimators=12, num_leaves=7, verbose=-1, random_state=3).fit(x, y3)
    save(
        "lgbm-multi",
        convert_lightgbm(multi, initial_types=types, target_opset=15, zipmap=False),
        "lgbm-multi-1",
        output("low", "probabilities", 0) + "\n" + output("high", "probabilities", 2),
    )

    xc = xgb.XGBClassifier(n_estimators=40, max_depth=4, learning_rate=0.2, random_state=3)
    xc.fit(x, y)
    xb = xc.get_booster()
    save(
        "xgb",
        convert_xgboost(xc, initial_types=types, target_opset=15),
        "xgb-1",
        output("fraud_score", "probabilities", 1),
        xgboost_trees(xb),
        shap.TreeExplainer(xb, feature_perturbation="tree_path_dependent"),
        xb.predict(xgb.DMatrix(probe), output_margin=True),
        probe,
        # XGBoost predicts in float32.
        margin_tolerance=1e-5,
    )

    xr = xgb.XGBRegressor(n_estimators=20, max_depth=3, random_state=3).fit(x, np.nan_to_num(signal))
    save("xgb-reg", convert_xgboost(xr, initial_types=types, target_opset=15), "xgb-reg-1", output("risk", "variable", 0))
    for name in ("lgbm", "lgbm-multi", "xgb", "xgb-reg"):
        onnx.checker.check_model(onnx.load(OUT / f"{name}.onnx"))


if __name__ == "__main__":
    main()
