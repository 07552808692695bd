"""The workflow parses without torch: `snakemake -n` never imports it (nor do mpm.methods, mpm.backends,
mpm.records and mpm.tables)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: runs its arguments' code after installing an import hook that records the first import of torch (and
#: where it came from); prints NO-TORCH or TORCH-IMPORTED and the stack at exit
_WATCH = textwrap.dedent("""
    import atexit, sys, traceback
    seen = []
    class Watch:
        def find_spec(self, name, path=None, target=None):
            if (name == "torch" or name.startswith("torch.")) and not seen:
                seen.append("".join(traceback.format_stack(limit=30)))
            return None
    sys.meta_path.insert(0, Watch())
    atexit.register(lambda: print("TORCH-IMPORTED\\n" + seen[0] if seen else "NO-TORCH", file=sys.stderr))
""")


def _watched(code: str, smk, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WATCH + code, *args], cwd=smk.repo, capture_output=True,
                          text=True, timeout=300, env=smk.env())


def test_dry_run_never_imports_torch(smk, config_file):
    done = _watched("from snakemake.cli import main\nsys.argv = ['snakemake', *sys.argv[1:]]\nmain()", smk,
                    "-n", "--configfile", str(config_file()))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NO-TORCH" in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("module", ["mpm.methods", "mpm.backends", "mpm.records", "mpm.tables", "mpm.cli._args"])
def test_module_imports_without_torch(module, smk):
    done = _watched(f"import {module}", smk)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NO-TORCH" in done.stderr, done.stderr[-3000:]
