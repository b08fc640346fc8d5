"""Canary operations on mesh.yaml: `meshserve canary set | promote | rollback` (and `advance`, added elsewhere).

The edit is a pure function from a round-trip YAML document to a new one (comments and order kept);
the CLI validates the result with the spec's own validator BEFORE replacing the file atomically, and
prints a unified diff. The running gateway and business APIs watch the file and apply the new weights.

The stable version of a model is written in the spec (`traffic.stable`; default: the lowest version
with replicas), never guessed from weights: `rollback` returns all traffic to it whatever the canary's
weight, and `promote` makes the promoted version the new stable one.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import io
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.spec import ModelSpec


class CanaryError(ValueError):
    """An operation that cannot apply to this spec (unknown model or version, bad assignment)."""


# --------------------------------------------------------------------------- pure part


def parse_assignment(text: str) -> tuple[int, int]:
    """'v2=10' or '2=10' -> (2, 10); the weight is a percentage, so the error names the value typed."""
    from mesh.spec import parse_version

    version, sep, weight = text.partition("=")
    if not sep:
        raise CanaryError(f"{text!r}: write a weight as VERSION=WEIGHT, e.g. v2=10")
    try:
        parsed = parse_version(version)
    except ValueError as exc:
        raise CanaryError(f"{text!r}: {exc}") from None
    try:
        value = int(weight)
    except ValueError:
        raise CanaryError(f"{text!r}: the weight must be an integer") from None
    if not 0 <= value <= 100:
        raise CanaryError(f"{text!r}: {value} is not a weight: a weight is a percentage from 0 to 100")
    return parsed, value


def _model(doc: Mapping[str, Any], model: str) -> Mapping[str, Any]:
    models = doc.get("models") or {}
    if model not in models:
        raise CanaryError(f"model {model!r} is not in the spec; known models: {sorted(models)}")
    return models[model]


def _versions(model_doc: Mapping[str, Any]) -> dict[int, Any]:
    from mesh.spec import parse_version

    return {parse_version(v): spec for v, spec in (model_doc.get("versions") or {}).items()}


def model_spec(doc: Mapping[str, Any], model: str) -> ModelSpec:
    """The model's entry as the spec reads it: its rules decide, never a second reading of the raw YAML."""
    from mesh.spec import validate_model

    return validate_model(_model(doc, model), model)


def current_weights(doc: Mapping[str, Any], model: str) -> dict[int, int]:
    """The weights in effect (mesh/spec.py's `ModelSpec.weights`: versions not named count 0; without a
    traffic block the highest served version takes everything)."""
    return model_spec(doc, model).weights()


def stable_version(doc: Mapping[str, Any], model: str) -> int:
    """Where a rollback lands (mesh/spec.py's `ModelSpec.stable_version`): `traffic.stable`, else the
    lowest version with replicas."""
    return model_spec(doc, model).stable_version()


def _check_known(doc: Mapping[str, Any], model: str, versions: list[int]) -> None:
    known = sorted(_versions(_model(doc, model)))
    for version in versions:
        if version not in known:
            raise CanaryError(f"model {model!r} has no version v{version}; versions: {known}")


def _write_weights(doc: Any, model: str, weights: Mapping[int, int]) -> Any:
    """A copy of `doc` with the model's traffic.weights replaced, keeping the keys' spelling and order."""
    from ruamel.yaml.comments import CommentedMap

    from mesh.spec import parse_version

    new = copy.deepcopy(doc)
    model_doc = new["models"][model]
    if model_doc.get("traffic") is None:
        model_doc["traffic"] = CommentedMap()
    traffic = model_doc["traffic"]
    if traffic.get("weights") is None:
        flow = CommentedMap()
        flow.fa.set_flow_style()
        traffic["weights"] = flow
    written = traffic["weights"]
    spelled = {parse_version(key): key for key in written}
    for version in sorted(weights):
        key = spelled.get(version, version)
        if key in written or weights[version] != 0:
            written[key] = weights[version]
    return new


def set_weights(doc: Any, model: str, assignments: Mapping[int, int]) -> Any:
    """Set the named versions' weights; the others take the rest.

    With one unnamed version it takes 100 minus the named ones; with several, the stable one takes the
    difference if it is among them and carries traffic (else the heaviest), and the others keep theirs.
    Range and sum are left to the spec's validator.
    """
    if not assignments:
        raise CanaryError("name at least one weight, e.g. v2=10")
    _check_known(doc, model, list(assignments))
    for version, weight in sorted(assignments.items()):  # the value typed, before any derived weight
        if not 0 <= weight <= 100:
            raise CanaryError(f"v{version}={weight}: a weight is a percentage from 0 to 100")
    weights = current_weights(doc, model)
    weights.update(assignments)
    rest = [v for v in weights if v not in assignments]
    if rest:
        named = sum(assignments.values())
        if named > 100:
            typed = " ".join(f"v{v}={w}" for v, w in sorted(assignments.items()))
            raise CanaryError(f"{typed}: the weights you named add up to {named}; together at most 100")
        stable = stable_version(doc, model)
        carrying = stable in rest and weights[stable] > 0
        absorbing = stable if carrying else min(rest, key=lambda v: (-weights[v], v))
        weights[absorbing] = 100 - sum(w for v, w in weights.items() if v != absorbing)
    return _write_weights(doc, model, weights)


def promote(doc: Any, model: str, version: int) -> Any:
    """`version` takes all the traffic and becomes the stable version (where a later rollback lands)."""
    _check_known(doc, model, [version])
    new = _write_weights(doc, model, {v: (100 if v == version else 0) for v in current_weights(doc, model)})
    traffic = new["models"][model]["traffic"]
    if stable_version(new, model) != version or "stable" in traffic:
        if "stable" in traffic:
            traffic["stable"] = version
        else:  # right after `weights`, where a reader looks for it
            traffic.insert(list(traffic).index("weights") + 1, "stable", version)
    return new


def rollback(doc: Any, model: str) -> Any:
    """The stable version (`traffic.stable`) takes all the traffic back; every canary gets 0."""
    return promote(doc, model, stable_version(doc, model))


def dump(doc: Any) -> str:
    from mesh.spec import round_trip_yaml

    out = io.StringIO()
    round_trip_yaml().dump(doc, out)
    return out.getvalue()


def unified_diff(old: str, new: str, path: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{path}", f"b/{path}"))


# --------------------------------------------------------------------------- the edge


def apply_to_file(path: Path, edit: Any) -> str:
    """Read `path`, apply `edit(doc) -> doc`, validate, replace the file atomically; return the diff."""
    from mesh.spec import read_yaml, validate_spec

    old_text = path.read_text()
    new_doc = edit(read_yaml(path))
    validate_spec(new_doc, base_dir=path.parent, source=str(path))  # raises SpecError: nothing is written
    new_text = dump(new_doc)
    if new_text != old_text:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(new_text)
            os.chmod(tmp, path.stat().st_mode & 0o777)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return unified_diff(old_text, new_text, str(path))


def _run(args: argparse.Namespace) -> int:
    import sys

    from mesh.spec import SpecError, parse_version
    from services.common.settings import SettingsError, resolve_run_dir, resolve_spec, running_spec

    try:
        path = resolve_spec(args.spec).path
        watched = running_spec(resolve_run_dir().path)
        if watched is not None and watched != path:
            print(f"note: the local stack in runs/current watches {watched}, not {path}", file=sys.stderr)
        if args.op == "set":
            assignments = dict(parse_assignment(a) for a in args.weights)
            diff = apply_to_file(path, lambda d: set_weights(d, args.model, assignments))
        elif args.op == "promote":
            version = parse_version(args.version)
            diff = apply_to_file(path, lambda d: promote(d, args.model, version))
        else:
            diff = apply_to_file(path, lambda d: rollback(d, args.model))
    except (CanaryError, SpecError, SettingsError, ValueError) as exc:
        print(f"meshserve canary {args.op}: {exc}", file=sys.stderr)
        return 2
    print(diff or f"{path}: no change", end="" if diff else "\n")
    return 0


def add_spec_option(parser: argparse.ArgumentParser) -> None:
    """`--spec` on an OP as well as on `canary`: `canary set --spec X` and `canary --spec X set` both work
    (SUPPRESS: an OP without it keeps what `canary --spec` said)."""
    from services.common.settings import SPEC_HELP

    parser.add_argument("--spec", default=argparse.SUPPRESS, help=SPEC_HELP)


def register(
    subparsers: argparse._SubParsersAction,
    extensions: Sequence[Callable[[argparse._SubParsersAction], None]] = (),
) -> None:
    """`meshserve canary set | promote | rollback`; `extensions` add more OPs (mesh/canary_analysis.py passes
    `advance`: the layer above calls down, this module never imports it)."""
    from services.common.settings import SPEC_HELP

    canary = subparsers.add_parser("canary", help="shift traffic between model versions in mesh.yaml")
    canary.add_argument("--spec", default=None, help=SPEC_HELP)
    ops = canary.add_subparsers(dest="op", required=True, metavar="OP")

    set_ = ops.add_parser("set", help="set version weights, e.g. `canary set digits v2=10` (the rest to the stable)")
    set_.add_argument("model", help="a model of the spec, e.g. digits")
    set_.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT", help="e.g. v2=10 (a percentage, 0 to 100)")
    set_.set_defaults(func=_run)

    promote_ = ops.add_parser("promote", help="send all traffic to a version")
    promote_.add_argument("model", help="a model of the spec, e.g. digits")
    promote_.add_argument("version", help="the version taking all traffic, e.g. v2")
    promote_.set_defaults(func=_run)

    rollback_ = ops.add_parser("rollback", help="send all traffic back to the stable version (traffic.stable)")
    rollback_.add_argument("model", help="a model of the spec, e.g. digits")
    rollback_.set_defaults(func=_run)

    for extend in extensions:
        extend(ops)
    for parser in ops.choices.values():
        add_spec_option(parser)
