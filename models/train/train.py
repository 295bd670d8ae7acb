"""Trains Verdict's fraud model and writes it beside the Rust crate.

Input: a Parquet table of point-in-time training rows, as written by
`verdict features export` (columns event_id, event_type, timestamp, label,
is_fraud, then one column per feature path such as
`feature.user.txn_count_1h` and per numeric event field such as
`event.amount`; null where a value is missing).

Output, in --out (models/ by default):
  fraud-gbt.onnx           the model: input `input` float32 [N, len(INPUTS)],
                           NaN for missing; output `probabilities` [N, 2]
  fraud-gbt.manifest.toml  its manifest (inputs in column order, missing = nan)
  fraud-gbt.metrics.json   held-out ROC AUC, precision and recall at the
                           review and deny thresholds, data sizes, versions
  fraud-gbt.golden.json    a few hundred held-out input rows (with NaNs) and
                           scikit-learn's own predict_proba for each, for the
                           Rust parity test
  fraud-gbt.covers.json    each ONNX tree node's training-row count, which
                           Verdict's explanations (path-dependent TreeSHAP)
                           need and an ONNX file does not carry
  fraud-gbt.explanations.json
                           shap's TreeExplainer contributions for the first
                           golden rows, for the Rust explanation test

The held-out split is by time: the last --test-share of events, so the model
is judged on traffic it has not seen, as in production.

    python train.py --data training.parquet --out ..
    python train.py --from-events events.jsonl --data training.parquet ...
        (builds an event-fields-only table from generator output instead of
        reading `verdict features export`'s; every feature column is null)
"""

import argparse
import datetime as dt
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import onnxruntime as ort
import shap
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from covers import golden_explanations, hgb_trees, match_covers, write_covers
from export import to_onnx

NAME = "fraud-gbt"
# Model inputs, in column order. Each is a rules-language path and a column
# of the training table.
INPUTS = [
    "feature.user.txn_count_1h",
    "feature.user.txn_count_24h",
    "feature.user.app_count_24h",
    "feature.user.amount_sum_24h",
    "feature.user.amount_avg_30d",
    "feature.user.amount_max_7d",
    "feature.user.distinct_devices_7d",
    "feature.user.distinct_ips_24h",
    "feature.user.secs_since_last",
    "feature.user.account_age_days",
    "feature.user.credit_limit",
    "feature.user.prior_defaults",
    "feature.device.account_count_7d",
    "feature.device.app_count_1h",
    "feature.ip.account_count_24h",
    "feature.ip.txn_count_1h",
    "event.amount",
    "event.attributes.term_months",
]
# The thresholds of the example rules (shared/spec/rules-dsl.md).
REVIEW_THRESHOLD = 0.6
DENY_THRESHOLD = 0.92
GOLDEN_ROWS = 300
EXPLAINED_ROWS = 100
SEED = 11


def table_from_events(events: Path) -> pd.DataFrame:
    """An event-fields-only training table from `verdict gen` output."""
    rows = []
    with events.open() as f:
        for line in f:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(e, dict) or not all(
                k in e for k in ("event_id", "event_type", "timestamp", "label")
            ):
                continue
            ts = e["timestamp"]
            try:
                ts_ms = int(ts) if isinstance(ts, (int, float)) else pd.Timestamp(ts).value // 1_000_000
            except (ValueError, TypeError):
                continue
            attrs = e.get("attributes") if isinstance(e.get("attributes"), dict) else {}
            amount = e.get("amount")
            term = attrs.get("term_months")
            rows.append(
                {
                    "event_id": e["event_id"],
                    "event_type": e["event_type"],
                    "timestamp": ts_ms,
                    "label": e["label"],
                    "is_fraud": e["label"] != "legit",
                    "event.amount": amount if isinstance(amount, (int, float)) else None,
                    "event.attributes.term_months": term if isinstance(term, (int, float)) else None,
                }
            )
    df = pd.DataFrame(rows).drop_duplicates("event_id")
    for col in INPUTS:
        if col not in df:
            df[col] = np.nan
    return df


def sort_key(ts: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(ts):
        return ts
    return pd.to_datetime(ts, utc=True, format="mixed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="training table (Parquet)")
    ap.add_argument("--from-events", type=Path, help="build --data from generator JSON lines first")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--test-share", type=float, default=0.2)
    ap.add_argument("--max-iter", type=int, default=120)
    ap.add_argument("--version", help="model version (default: fraud-gbt-<date>-<hash>)")
    args = ap.parse_args()

    source = "verdict features export"
    if args.from_events:
        table_from_events(args.from_events).to_parquet(args.data, index=False)
        source = "event fields only (no feature store)"
    df = pd.read_parquet(args.data)
    absent = [c for c in INPUTS if c not in df]
    if absent:
        print(f"train: columns absent from {args.data}, fed as missing: {', '.join(absent)}", file=sys.stderr)
        for c in absent:
            df[c] = np.nan
    for c in ("is_fraud", "timestamp"):
        if c not in df:
            print(f"train: {args.data} has no `{c}` column", file=sys.stderr)
            return 1
    df = df.assign(_t=sort_key(df["timestamp"])).sort_values("_t", kind="stable")
    x = df[INPUTS].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    y = df["is_fraud"].astype(bool).to_numpy().astype(int)
    n_test = int(len(df) * args.test_share)
    if n_test < 100 or y[:-n_test].sum() < 10 or y[-n_test:].sum() < 10:
        print(f"train: too little data ({len(df)} rows, {y.sum()} fraud)", file=sys.stderr)
        return 1
    x_train, y_train = x[:-n_test], y[:-n_test]
    x_test, y_test = x[-n_test:], y[-n_test:]

    clf = HistGradientBoostingClassifier(
        max_iter=args.max_iter,
        learning_rate=0.1,
        max_leaf_nodes=31,
        max_depth=6,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=SEED,
    )
    # The model sees float32 values in production; train on the same.
    clf.fit(x_train.astype(np.float64), y_train)
    p_test = clf.predict_proba(x_test.astype(np.float64))[:, 1]

    def at(threshold):
        pred = p_test >= threshold
        return {
            "threshold": threshold,
            "precision": float(precision_score(y_test, pred, zero_division=0)),
            "recall": float(recall_score(y_test, pred, zero_division=0)),
            "flagged": int(pred.sum()),
        }

    onnx_bytes = to_onnx(clf, len(INPUTS))
    digest = hashlib.sha256(onnx_bytes).hexdigest()[:8]
    version = args.version or f"{NAME}-{dt.date.today().isoformat()}-{digest}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.onnx").write_bytes(onnx_bytes)

    manifest = [
        "# Written by models/train/train.py; see models/train/README.md.",
        f'name = "{NAME}"',
        f'version = "{version}"',
        f'file = "{NAME}.onnx"',
        "inputs = [",
        *[f'    "{p}",' for p in INPUTS],
        "]",
        "# HistGradientBoosting learns a branch for missing values: feed NaN.",
        "missing = nan",
        "# Node covers for explanations (path-dependent TreeSHAP).",
        f'covers = "{NAME}.covers.json"',
        "",
        "[[outputs]]",
        'name = "fraud_score"',
        'from = "probabilities"',
        "index = 1",
        "",
    ]
    (args.out / f"{NAME}.manifest.toml").write_text("\n".join(manifest))

    # Golden rows: held-out rows, some with extra values blanked out, plus
    # an all-missing row; scored by scikit-learn itself.
    rng = np.random.default_rng(SEED)
    pick = rng.choice(len(x_test), size=min(GOLDEN_ROWS - 1, len(x_test)), replace=False)
    golden_x = x_test[pick].copy()
    blank = rng.random(golden_x.shape) < 0.15
    golden_x[blank] = np.nan
    golden_x = np.vstack([golden_x, np.full((1, len(INPUTS)), np.nan, dtype=np.float32)])
    golden_p = clf.predict_proba(golden_x.astype(np.float64))[:, 1]

    # The exported model must agree with scikit-learn before anything ships.
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_p = sess.run(["probabilities"], {"input": golden_x})[0][:, 1]
    worst = float(np.max(np.abs(onnx_p - golden_p)))
    if worst > 1e-5:
        bad = int(np.argmax(np.abs(onnx_p - golden_p)))
        print(
            f"train: ONNX export disagrees with scikit-learn by {worst:g} "
            f"(row {golden_x[bad].tolist()}: onnx {onnx_p[bad]}, sklearn {golden_p[bad]})",
            file=sys.stderr,
        )
        return 1

    def num(v):
        v = float(v)
        return None if math.isnan(v) else v

    golden = {
        "model": NAME,
        "version": version,
        "inputs": INPUTS,
        "tolerance": 1e-5,
        "rows": [
            {"input": [num(v) for v in row], "probability": float(p)}
            for row, p in zip(golden_x, golden_p)
        ],
    }
    (args.out / f"{NAME}.golden.json").write_text(json.dumps(golden, indent=None) + "\n")

    # Covers beside the manifest, and shap's explanations of golden rows
    # with the same covers (shap reads them from the fitted model).
    write_covers(args.out / f"{NAME}.covers.json", onnx_bytes, match_covers(onnx_bytes, hgb_trees(clf)))
    explained = golden_x[:EXPLAINED_ROWS]
    margins = clf.decision_function(explained.astype(np.float64))
    additivity = golden_explanations(
        args.out / f"{NAME}.explanations.json",
        version,
        INPUTS,
        explained,
        shap.TreeExplainer(clf, feature_perturbation="tree_path_dependent"),
        margins,
    )
    if additivity > 1e-6:
        print(f"train: shap's contributions miss the margin by {additivity:g}", file=sys.stderr)
        return 1

    metrics = {
        "model": NAME,
        "version": version,
        "data": {
            "source": source,
            "rows": int(len(df)),
            "train_rows": int(len(x_train)),
            "test_rows": int(len(x_test)),
            "train_fraud": int(y_train.sum()),
            "test_fraud": int(y_test.sum()),
            "split": f"by time, last {args.test_share:.0%} held out",
            "inputs_all_missing": [c for c in INPUTS if df[c].isna().all()],
        },
        "roc_auc": float(roc_auc_score(y_test, p_test)),
        "review": at(REVIEW_THRESHOLD),
        "deny": at(DENY_THRESHOLD),
        "onnx_max_abs_diff_vs_sklearn": worst,
        "onnx_bytes": len(onnx_bytes),
        "params": {k: v for k, v in clf.get_params().items() if isinstance(v, (int, float, str, type(None)))},
        "versions": {"scikit-learn": sklearn.__version__, "onnxruntime": ort.__version__, "shap": shap.__version__},
    }
    (args.out / f"{NAME}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"train: {version}: ROC AUC {metrics['roc_auc']:.4f}, precision {metrics['review']['precision']:.3f} "
        f"/ recall {metrics['review']['recall']:.3f} at review threshold {REVIEW_THRESHOLD}; "
        f"{len(onnx_bytes)} bytes; wrote {args.out}/{NAME}.*",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
