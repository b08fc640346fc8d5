"""`main: infra/` as Pulumi runs it: a fresh interpreter with infra/ first on sys.path (where
infra/mesh.py could shadow the `mesh` package) executing the folder's __main__.py, under mocks."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.infra.harness import ROOT

SCRIPT = f"""
import json, runpy, sys
sys.path.insert(0, {str(ROOT)!r})
import pulumi
from tests.infra import harness
sys.path[:] = [{str(ROOT / "infra")!r}] + [p for p in sys.path if p not in ("", {str(ROOT)!r})]
assert "mesh" not in sys.modules and "infra" not in sys.modules
mocks = harness.Mocks()
monitor = harness.RecordingMonitor(mocks)
pulumi.runtime.set_mocks(mocks, project="meshserve", stack="dev", preview=False, monitor=monitor)
secrets = {{f"meshserve:{{k}}": v if isinstance(v, str) else json.dumps(v) for k, v in harness.SECRETS.items()}}
pulumi.runtime.set_all_config({{**harness.stack_config("dev"), **secrets}}, secret_keys=list(secrets))
pulumi.runtime.test(lambda: runpy.run_path({str(ROOT / "infra")!r}, run_name="__main__"))()
import mesh
print(json.dumps({{"mesh": mesh.__file__, "resources": len(monitor.registrations)}}))
"""


def test_pulumi_style_entry_point_imports_the_repository_packages() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd="/", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mesh"] == str(ROOT / "mesh" / "__init__.py")
    assert report["resources"] > 50
