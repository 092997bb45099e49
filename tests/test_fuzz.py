"""A seeded, bounded fuzz campaign in a child process under an address-space limit:
mutated images through reading, random chains, inline kernels, kernel files and
catalogs through the parsers.  No traceback, no crash, bounded time and memory,
nothing left behind (see fuzz_driver.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import imgconv

HERE = Path(__file__).resolve().parent
ADDRESS_SPACE = 4 * 1024**3  # a decoder asked for 75 GiB fails with MemoryError, not the machine


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the address-space limit is set with Linux's RLIMIT_AS")
def test_fuzz_campaign():
    env = dict(os.environ, PYTHONPATH=str(Path(imgconv.__file__).resolve().parent.parent))
    child = subprocess.run(
        [sys.executable, str(HERE / "fuzz_driver.py"), "20261201", "1000"],
        env=env, capture_output=True, text=True, timeout=600, preexec_fn=_limit_memory,
    )
    report = child.stdout[-8000:] + child.stderr[-4000:]
    assert child.returncode == 0, f"exit {child.returncode}:\n{report}"
    assert "0 findings" in child.stdout, report
