"""The SDK surface: what `worker` exports, and that importing it needs no server-side package."""

from __future__ import annotations

import subprocess
import sys

import worker


def test_all_is_a_tuple_of_existing_names() -> None:
    assert isinstance(worker.__all__, tuple)
    assert sorted(worker.__all__) == list(worker.__all__)
    for name in worker.__all__:
        assert hasattr(worker, name), name
    for name in ("Agent", "TaskContext", "Retry", "Fatal", "Registry", "run_handler"):
        assert name in worker.__all__


def test_importing_worker_loads_no_server_packages() -> None:
    code = (
        "import sys, worker, worker.cli; "
        "server = {'redis', 'sqlalchemy', 'litestar', 'api', 'scheduler'}; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & server); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
