"""Build `tests/fixtures/models/digits_bad`: digits v1 with its logits rotated by one class.

Same signature as v1, loads and serves fine, but never agrees with v1: the canary a rollout
check must catch. Not a version under models/, where it would be served.
"""

from __future__ import annotations

import numpy as np
import onnx
from build_common import (
    MODELS_DIR,
    REPO_DIR,
    accuracy,
    agreement,
    ort_logits,
    save_checked,
    versions,
    write_sha256sums,
    write_yaml,
)
from digits_data import load_split
from onnx import helper, numpy_helper

FIXTURES_DIR = REPO_DIR / "tests" / "fixtures" / "models"
# Output column j takes v1's column PERMUTATION[j]: predicted class = v1's class - 1 (mod 10).
PERMUTATION = np.roll(np.arange(10, dtype=np.int64), -1)


def permute_logits(model: onnx.ModelProto, permutation: np.ndarray) -> onnx.ModelProto:
    """Append Gather(axis=1) after the producer of `logits`; the graph's interface is unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    (output,) = [o for o in graph.output if o.name == "logits"]
    for node in graph.node:
        node.output[:] = ["logits_unpermuted" if name == "logits" else name for name in node.output]
    graph.initializer.append(numpy_helper.from_array(permutation, name="class_permutation"))
    graph.node.append(helper.make_node("Gather", ["logits_unpermuted", "class_permutation"], [output.name], axis=1))
    out.doc_string = "digits v1 with its logits permuted: a deliberately wrong canary fixture"
    return out


def build() -> None:
    v1_path = MODELS_DIR / "digits" / "1" / "model.onnx"
    bad_path = FIXTURES_DIR / "digits_bad" / "model.onnx"
    save_checked(permute_logits(onnx.load(str(v1_path)), PERMUTATION), bad_path)

    _, _, x_test, y_test = load_split()
    v1, bad = ort_logits(v1_path, x_test), ort_logits(bad_path, x_test)
    agree = agreement(v1, bad)
    correct, acc = accuracy(bad, y_test)
    assert agree < 0.5, f"digits_bad agrees with v1 on {agree:.2%} of the test split"
    write_yaml(
        bad_path.parent / "metadata.yaml",
        {
            "model": "digits_bad",
            "description": "digits v1 with logits rotated by one class: same signature, wrong answers",
            "built_by": "python models/build.py --only fixtures",
            "derived_from": "models/digits/1/model.onnx",
            "class_permutation": PERMUTATION.tolist(),
            "agreement_with_v1": {"split": "test", "top1_agreement": agree},
            "held_out": {"accuracy": acc, "correct": correct, "total": len(y_test)},
            "versions": versions(),
        },
    )
    write_sha256sums(FIXTURES_DIR, list(FIXTURES_DIR.glob("*/model.onnx")))
    print(f"fixture digits_bad: agreement with v1 {agree:.4f}, accuracy {acc:.4f}")


# A retrained digits: v1's architecture and hyper-parameters with another seed. `meshserve model publish`
# takes it as the next version in the lifecycle tests (it passes the gates of models/digits/evaluation.yaml).
RETRAINED_SEED = 11


def build_retrained() -> None:
    from dataclasses import replace

    import torch
    from build_common import export_onnx, torch_logits
    from build_digits import SPECS, train

    split = load_split()
    x_train, y_train, x_test, y_test = split
    spec = replace(SPECS[0], seed=RETRAINED_SEED)
    model = train(spec, x_train, y_train)
    path = FIXTURES_DIR / "digits_retrained" / "model.onnx"
    export_onnx(model, torch.from_numpy(x_test[:1]), path)
    logits = ort_logits(path, x_test)
    np.testing.assert_allclose(logits, torch_logits(model, x_test), rtol=1e-4, atol=1e-4)
    correct, acc = accuracy(logits, y_test)
    agree = agreement(ort_logits(MODELS_DIR / "digits" / "1" / "model.onnx", x_test), logits)
    assert acc >= 0.95 and agree >= 0.95, f"retrained digits: accuracy {acc:.4f}, agreement with v1 {agree:.4f}"
    write_yaml(
        path.parent / "metadata.yaml",
        {
            "model": "digits_retrained",
            "description": "digits v1's architecture and training, another seed: a candidate that passes the gates",
            "built_by": "python models/build.py --only retrained",
            "training": {"seed": RETRAINED_SEED, "as": "digits v1 (models/build_digits.py SPECS[0])"},
            "agreement_with_v1": {"split": "test", "top1_agreement": agree},
            "held_out": {"accuracy": acc, "correct": correct, "total": len(y_test)},
            "versions": versions(),
        },
    )
    write_sha256sums(FIXTURES_DIR, list(FIXTURES_DIR.glob("*/model.onnx")))
    print(f"fixture digits_retrained: accuracy {acc:.4f}, agreement with v1 {agree:.4f}")
