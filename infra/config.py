"""Stack config -> the same `Environment` that `meshserve render` reads, plus the Pulumi secrets.

Plain settings are validated by mesh/compile/settings.py (unknown keys and bad values fail with the
key's name). Secrets are read only as Pulumi secrets and stay `Output`s: they never become plain
strings in this program, so Pulumi encrypts them in state and masks them in logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi

from mesh.compile.settings import CONFIG_NAMESPACE, Environment, environment_from_config
from mesh.spec import DEFAULT_SPEC_PATH


@dataclass(frozen=True)
class Secrets:
    api_keys: pulumi.Output | None  # username -> key
    grafana_admin_password: pulumi.Output | None
    elastic_password: pulumi.Output | None
    apm_token: pulumi.Output | None  # APM Server's secret token (mesh/compile/logging.py says why ours)


def _how(key: str) -> str:
    return f"set it with `pulumi config set --secret {CONFIG_NAMESPACE}:{key} <value>`"


def read_environment() -> Environment:
    cfg = pulumi.Config(CONFIG_NAMESPACE)
    values = {}
    for name, field in Environment.model_fields.items():
        key = field.alias or name
        if name == "stack":
            continue
        raw = cfg.get(key) if field.annotation in (str, str | None) else cfg.get_object(key)
        if raw is not None:
            values[key] = raw
    stack = pulumi.get_stack()
    return environment_from_config(values, stack=stack, source=f"Pulumi.{stack}.yaml")


def read_secrets(env: Environment) -> Secrets:
    cfg = pulumi.Config(CONFIG_NAMESPACE)
    api_keys = cfg.get_secret_object("apiKeys") if env.platform.kong else None
    grafana = cfg.get_secret("grafanaAdminPassword") if env.platform.monitoring else None
    elastic = cfg.get_secret("elasticPassword") if env.platform.logging else None
    apm = cfg.get_secret("apmSecretToken") if env.platform.logging else None
    missing = [
        f"{CONFIG_NAMESPACE}:{key} ({_how(key)})"
        for key, wanted, value in (
            ("apiKeys", env.platform.kong, api_keys),
            ("grafanaAdminPassword", env.platform.monitoring, grafana),
            ("elasticPassword", env.platform.logging, elastic),
            ("apmSecretToken", env.platform.logging, apm),
        )
        if wanted and value is None
    ]
    if missing:
        raise pulumi.RunError("missing secret config: " + "; ".join(missing))
    return Secrets(api_keys, grafana, elastic, apm)


def api_key(secrets: Secrets, username: str) -> pulumi.Output:
    """One consumer's key, still secret; a missing entry fails the deployment with the command to fix it."""

    def pick(keys: dict) -> str:
        if username not in keys:
            raise pulumi.RunError(
                f"no API key for consumer {username!r}: pulumi config set --secret --path "
                f"'{CONFIG_NAMESPACE}:apiKeys.{username}' <key>"
            )
        return keys[username]

    assert secrets.api_keys is not None
    return pulumi.Output.secret(secrets.api_keys.apply(pick))


def spec_path() -> Path:
    """$MESHSERVE_SPEC, else the project's mesh/mesh.yaml (Pulumi runs the program in the project's root)."""
    from services.common.settings import SettingsError, resolve_spec

    try:
        return resolve_spec().path
    except SettingsError:
        return DEFAULT_SPEC_PATH  # `pulumi up` from this source tree, whatever the working directory
