"""Writes the small ONNX models Verdict's Rust tests load (models/tests/data/).

- tiny.onnx: a gradient-boosted classifier over three inputs
  (event.amount, event.attributes.term_months, event.attributes.new_device),
  trained on a fixed synthetic sample; NaN is a valid input.
- tiny-2in.onnx: the same kind of model over two inputs, which disagrees with
  tiny.manifest.toml's three inputs (the shape-mismatch test).

Deterministic: rerunning writes the same predictions. Run with the venv that
scripts/ensure-python.sh creates:

    .verdict/venv/bin/python models/train/make_test_model.py
"""

from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from export import to_onnx

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"


def sample(n_inputs: int, rng: np.random.Generator):
    x = rng.normal(size=(2000, n_inputs)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=2000) > 0.8).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x, y


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, n in (("tiny", 3), ("tiny-2in", 2)):
        rng = np.random.default_rng(5)
        x, y = sample(n, rng)
        clf = HistGradientBoostingClassifier(max_iter=8, max_depth=3, random_state=0)
        clf.fit(x, y)
        (OUT / f"{name}.onnx").write_bytes(to_onnx(clf, n))
        print(f"wrote {OUT / name}.onnx")


if __name__ == "__main__":
    main()
