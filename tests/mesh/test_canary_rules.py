"""One rule in one place: the canary edits read a model's stable version and weights by the spec's rule.

mesh/canary.py edits the raw YAML (comments kept) but asks mesh/spec.py's ModelSpec which version is
stable and which weights are in effect; these specs are the ones where a second reading of the raw YAML
went wrong (no traffic block, unserved versions, `v`-spelled keys, defaults left out).
"""

from __future__ import annotations

import io

import pytest

from mesh import canary
from mesh.spec import DEFAULT_SPEC_PATH, round_trip_yaml, validate_spec

TRICKY: dict[str, str] = {
    "no traffic block: the highest served version takes everything": """
      versions: {1: {replicas: 1}, 2: {replicas: 1}, 3: {replicas: 1}}
    """,
    "no traffic block, the highest version unserved": """
      versions: {1: {replicas: 1}, 2: {}, 3: {replicas: 0}}
    """,
    "lowest version unserved, replicas left to their default": """
      versions: {1: {replicas: 0}, 2: {}, 3: {}}
      traffic: {weights: {2: 70, 3: 30}}
    """,
    "v-spelled keys and a v-spelled stable": """
      versions: {v1: {replicas: 1}, v2: {replicas: 1}, "3": {replicas: 1}}
      traffic: {weights: {v1: 20, v2: 80}, stable: v2}
    """,
    "a version left out of the weights": """
      versions: {1: {}, 2: {}, 4: {}}
      traffic: {weights: {4: 100}, stable: 4}
    """,
    "no version served": """
      required: false
      versions: {1: {replicas: 0}, 2: {replicas: 0}}
    """,
}


def spec_doc_with(model_yaml: str):
    """The demo spec, round-trip read as the CLI reads it, with a model `extra` added."""
    yaml = round_trip_yaml()
    doc = yaml.load(DEFAULT_SPEC_PATH.read_text())
    doc["models"]["extra"] = yaml.load(io.StringIO(model_yaml.strip().replace("\n      ", "\n")))
    return doc


@pytest.mark.parametrize("model_yaml", TRICKY.values(), ids=TRICKY.keys())
def test_canary_reads_the_spec_rule(model_yaml: str) -> None:
    doc = spec_doc_with(model_yaml)
    model = validate_spec(doc).models["extra"]
    assert canary.stable_version(doc, "extra") == model.stable_version()
    assert canary.current_weights(doc, "extra") == model.weights()


def test_set_without_a_traffic_block_takes_from_the_version_carrying_traffic() -> None:
    """Before: the raw reading saw every weight as 0 and gave the rest to v2, moving v3's traffic away."""
    doc = spec_doc_with(TRICKY["no traffic block: the highest served version takes everything"])
    new = canary.set_weights(doc, "extra", {1: 10})
    assert validate_spec(new).models["extra"].weights() == {1: 10, 2: 0, 3: 90}


def test_a_spec_rule_error_names_the_model() -> None:
    doc = spec_doc_with("versions: {1: {replicas: -1}}")
    with pytest.raises(ValueError, match=r"models\.extra\.versions\.1\.replicas"):
        canary.stable_version(doc, "extra")
