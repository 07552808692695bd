"""Run one benchmark point on a machine reached over SSH (a Raspberry Pi 5).

What :meth:`SSHRunner.run` does, with the system ``ssh`` binary only
(``BatchMode=yes``, ``StrictHostKeyChecking=accept-new`` against a dedicated
known_hosts file, ``ConnectTimeout``):

1. **probe** (one cheap ssh call): is the remote python there, does it import
   torch, numpy, PIL, yaml, timm (and onnxruntime for ``--runtime onnxruntime``),
   is it >= 3.10; creates the per-job directory ``work_dir/jobs/<job id>``.
2. **ship** (one ssh call, a tar stream on stdin, unpacked by the remote python):
   the ``mpm`` package source as it is in this working tree (no git needed; its
   sha256 is recorded), the checkpoint (with a ``variant.yml`` beside it) if the
   model is a file, only the images the point reads, and the spec as JSON.
3. **run** ``python -m mpm.cli.bench --target local --spec spec.json ...`` there, in
   the job directory, with ``PYTHONPATH`` = the shipped source and ``MPM_GIT_COMMIT``
   = this checkout's commit (plus the target's ``env``, ``OMP_NUM_THREADS`` = its
   threads); remote stderr is streamed to the local log. Cooldown (if any) runs on
   the board.
4. **fetch** the result (``cat`` over ssh) into a temporary file beside the output,
   check it against the ``mpm.bench/1`` schema, map the shipped paths back to the
   local ones, add a ``target`` section, and rename it onto the output.
5. **clean up** the remote job directory, whatever happened (unless ``keep_job_dir``).

Quoting: every remote command is ``sh -c SCRIPT mpm ARG...`` with each part quoted
by :func:`shlex.quote` (:func:`remote_command`), and the scripts only ever use
their arguments as ``"$1"``: a ``work_dir`` or ``python`` holding ``;``, ``$(...)``,
quotes or spaces reaches the board as that literal path. No ``scp`` is used: its
remote path is shell-interpreted by the legacy protocol (``scp -O``, the default
before OpenSSH 9.0) and not by the SFTP one, so no single quoting is right for both.

Any failure leaves the output untouched and raises :class:`~mpm.errors.RemoteError`
naming the target, ``user@host:port`` and the tail of the remote stderr.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from mpm.benchmarking.cooldown import CooldownConfig
from mpm.benchmarking.targets import SSHTarget, get_target
from mpm.errors import ConfigError, RemoteError

#: modules the remote python must have for a torch run; "?name": only located (importing timm takes seconds)
REQUIRED_MODULES = ("torch", "numpy", "PIL", "yaml", "?timm")
#: and for ``--runtime onnxruntime`` (torch.onnx.export needs the onnx package)
ONNX_MODULES = ("onnxruntime", "?onnx")
MIN_PYTHON = (3, 10)
_STDERR_TAIL_LINES = 25
_NO_PYTHON_RC, _NO_JOBDIR_RC = 97, 96

# Runs under `sh -c SCRIPT mpm PY WORK_DIR JOB_ID MODULES PROBE_CODE` on the remote host.
_PROBE_SCRIPT = r"""
PY=$1; WD=$2; JOB=$3; MODS=$4; CODE=$5
case "$WD" in "~") WD=$HOME ;; "~/"*) WD="$HOME/${WD#??}" ;; esac
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "remote python '$PY' not found (PATH=$PATH)" >&2; exit 97
fi
"$PY" -c "$CODE" "$MODS" || exit $?
if [ -n "$JOB" ]; then
  mkdir -p "$WD/jobs/$JOB" && cd "$WD/jobs/$JOB" && echo "MPM_JOB_DIR=$(pwd -P)" || exit 96
fi
"""

# Written for old pythons too (no f-strings), so that a too-old interpreter still reports its version.
_PROBE_CODE = r"""
import sys, json
mods = [m for m in sys.argv[1].split(",") if m] if len(sys.argv) > 1 else []
out = {"python": "%d.%d.%d" % tuple(sys.version_info[:3]), "executable": sys.executable, "missing": {},
       "versions": {}}
for m in mods:
    locate = m.startswith("?")
    m = m.lstrip("?")
    try:
        if locate:
            import importlib.util
            if importlib.util.find_spec(m) is None:
                raise ImportError("No module named %r" % m)
            out["versions"][m] = "installed"
        else:
            mod = __import__(m)
            out["versions"][m] = str(getattr(mod, "__version__", "?"))
    except BaseException as e:
        out["missing"][m] = "%s: %s" % (type(e).__name__, e)
print("MPM_PROBE " + json.dumps(out))
sys.stdout.flush()
sys.exit(95 if out["missing"] or tuple(sys.version_info[:2]) < (3, 10) else 0)
"""

# `sh -c SCRIPT mpm JOB_DIR PY CODE` with the tar stream on stdin
_UNPACK_SCRIPT = 'cd "$1" || exit 96; exec "$2" -c "$3"'
_UNPACK_CODE = r"""
import sys, tarfile
kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    t.extractall(".", **kw)
"""

# `sh -c SCRIPT mpm JOB_DIR TIMEOUT_S N_ENV NAME=VALUE... COMMAND...` (export, not `env`: a command
# path holding `=` would be taken for an assignment by env)
_RUN_SCRIPT = r"""
cd "$1" || exit 96
T=$2; N=$3; shift 3
while [ "$N" -gt 0 ]; do export "$1" || exit 96; shift; N=$((N - 1)); done
if [ "$T" != 0 ] && command -v timeout >/dev/null 2>&1; then exec timeout -k 30 "$T" "$@"; fi
exec "$@"
"""

# `sh -c SCRIPT mpm JOB_DIR`: the job's result on stdout
_FETCH_SCRIPT = 'exec cat -- "$1/out/result.json"'

# `sh -c SCRIPT mpm JOB_DIR`: only ever removes a directory under .../jobs/
_CLEAN_SCRIPT = 'case "$1" in */jobs/?*) rm -rf -- "$1" ;; *) echo "refusing to remove $1" >&2; exit 1 ;; esac'


def remote_command(script: str, *args: str) -> str:
    """One command line for the remote login shell: ``sh -c SCRIPT mpm ARGS...``, every part quoted."""
    return " ".join(["sh", "-c", shlex.quote(script), "mpm", *(shlex.quote(str(a)) for a in args)])


def _tail(text: str, lines: int = _STDERR_TAIL_LINES) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return "\n".join("    " + ln for ln in kept) if kept else "    (no stderr)"


def package_source_dir() -> Path:
    """The folder of the ``mpm`` package this process runs."""
    import mpm

    return Path(mpm.__file__).resolve().parent


def _source_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))


def source_digest(root: Path | None = None) -> str:
    """sha256 over the package's files (relative paths and bytes): identifies exactly what was shipped."""
    root = root or package_source_dir()
    h = hashlib.sha256()
    for path in _source_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding the package; (None, None) without git."""
    from mpm.environment import git_commit

    commit = git_commit(root.parent)
    if not commit or shutil.which("git") is None:
        return commit, None
    try:
        out = subprocess.run(["git", "-C", str(root.parent), "status", "--porcelain", "--", root.name],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return commit, None
    return commit, bool(out.stdout.strip()) if out.returncode == 0 else None


def _add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(arcname)
    info.size, info.mode, info.mtime = len(data), 0o644, mtime
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    """``path`` as ``arcname``, owned by root, mode 0644."""
    info = tar.gettarinfo(str(path), arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


def _add_source(tar: tarfile.TarFile, root: Path) -> str:
    """The package under ``src/mpm/``; the sha256 of what was shipped (as :func:`source_digest` computes it)."""
    digest = hashlib.sha256()
    for path in _source_files(root):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()  # hashed and shipped from the same bytes
        digest.update(rel.encode() + b"\0" + data + b"\0")
        _add_bytes(tar, "src/mpm/" + rel, data, int(path.stat().st_mtime))
    return digest.hexdigest()


def _add_images(tar: tarfile.TarFile, images_src: Path, needed: list[Path], job_dir: str) -> str:
    """The images the point reads under ``images/``; the remote path the spec names."""
    if images_src.is_dir() or images_src.suffix.lower() == ".json":  # a folder or a manifest
        for i, path in enumerate(needed):  # numbered: the remote folder keeps this order
            _add_file(tar, path, f"images/{i:06d}_{path.name}")
        return f"{job_dir}/images"
    _add_file(tar, images_src, "images/" + images_src.name)
    return f"{job_dir}/images/{images_src.name}"


def _add_model(tar: tarfile.TarFile, model: str, job_dir: str, facts: dict) -> str:
    """A checkpoint file (and its ``variant.yml``) under ``model/``; the remote model argument."""
    if model.upper() in ("T", "S", "B", "L"):
        return model
    ckpt = Path(model)
    if not ckpt.is_file():
        raise ConfigError(f"model {model!r} is neither a ViT size (T, S, B, L) nor an existing checkpoint file")
    _add_file(tar, ckpt, "model/" + ckpt.name)
    variant = ckpt.with_name("variant.yml")
    if variant.is_file() and ckpt.name != "variant.yml":
        _add_file(tar, variant, "model/variant.yml")
    facts["checkpoint_bytes"] = ckpt.stat().st_size
    return f"{job_dir}/model/{ckpt.name}"


class _Completed:
    def __init__(self, rc: int, stdout: str, stderr: str) -> None:
        self.rc, self.stdout, self.stderr = rc, stdout, stderr


class SSHRunner:
    """Runs benchmark points on one :class:`~mpm.benchmarking.targets.SSHTarget`."""

    def __init__(self, target: SSHTarget, log: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.log = log or (lambda message: None)

    # -- ssh plumbing --------------------------------------------------------------------------------------

    def _options(self) -> list[str]:
        t = self.target
        known = Path(t.known_hosts)
        known.parent.mkdir(parents=True, exist_ok=True)
        opts = [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={t.connect_timeout}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
        ]
        if t.key:
            opts += ["-i", t.key, "-o", "IdentitiesOnly=yes"]
        for opt in t.ssh_options:
            opts += ["-o", opt]
        return opts

    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", *self._options(), "-p", str(self.target.port), "-T", self.target.destination, command]

    def _where(self) -> str:
        return f"target {self.target.name!r} ({self.target.address})"

    def _check_local(self) -> None:
        if shutil.which("ssh") is None:
            raise RemoteError(f"{self._where()}: the `ssh` binary is not installed on this machine")
        if self.target.key and not Path(self.target.key).is_file():
            raise ConfigError(f"targets.{self.target.name}.key: {self.target.key} does not exist")

    def _ssh(self, command: str, stdin_path: Path | None = None, timeout: float | None = None,
             stream: bool = False, stdout_path: Path | None = None) -> _Completed:
        """Run one remote command; stderr is streamed to the log when ``stream``.

        ``stdout_path``: the remote stdout goes into this file, byte for byte (``.stdout`` is then empty).
        """
        argv = self.ssh_argv(command)
        with contextlib.ExitStack() as files:  # the child holds its own copies of these descriptors
            stdin = files.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
            stdout = files.enter_context(open(stdout_path, "wb")) if stdout_path else subprocess.PIPE
            try:
                proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
            except OSError as err:
                raise RemoteError(f"{self._where()}: cannot start ssh: {err}") from None
        out_chunks, err_lines, threads = self._readers(proc, stream)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            for th in threads:
                th.join(5)
            raise RemoteError(f"{self._where()}: no answer within {timeout:.0f} s; remote stderr tail:\n"
                              f"{_tail(chr(10).join(err_lines))}") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        for th in threads:
            th.join()
        return _Completed(rc, b"".join(out_chunks).decode("utf-8", "replace"), "\n".join(err_lines))

    def _readers(self, proc: subprocess.Popen, stream: bool
                 ) -> tuple[list[bytes], collections.deque[str], list[threading.Thread]]:
        """Started threads draining ``proc``'s stdout (chunks) and stderr (last 400 lines, logged when ``stream``)."""
        out_chunks: list[bytes] = []
        err_lines: collections.deque[str] = collections.deque(maxlen=400)

        def read_out() -> None:
            if proc.stdout is not None:
                for chunk in iter(lambda: proc.stdout.read(65536), b""):
                    out_chunks.append(chunk)

        def read_err() -> None:
            assert proc.stderr is not None
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                err_lines.append(line)
                if stream and line.strip():
                    self.log(f"[{self.target.name}] {line}")

        threads = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
        for th in threads:
            th.start()
        return out_chunks, err_lines, threads

    def _connection_error(self, done: _Completed, during: str) -> RemoteError:
        return RemoteError(f"{self._where()}: cannot connect to {self.target.host}:{self.target.port} ({during}; "
                           f"ssh exit 255):\n{_tail(done.stderr)}")

    # -- steps ---------------------------------------------------------------------------------------------

    def probe(self, job_id: str = "", modules: Iterable[str] = REQUIRED_MODULES) -> dict:
        """Check the remote environment (and create the job directory when ``job_id``); return what it found."""
        self._check_local()
        command = remote_command(_PROBE_SCRIPT, self.target.python, self.target.work_dir, job_id,
                                 ",".join(modules), _PROBE_CODE)
        done = self._ssh(command, timeout=self.target.connect_timeout + 120)
        info = self._probe_findings(done)
        if done.rc == _NO_JOBDIR_RC or (job_id and "MPM_JOB_DIR=" not in done.stdout):
            raise RemoteError(f"{self._where()}: cannot create the job directory under {self.target.work_dir} "
                              f"(exit {done.rc}):\n{_tail(done.stderr)}")
        if done.rc != 0:
            raise RemoteError(f"{self._where()}: probe failed (exit {done.rc}):\n{_tail(done.stderr)}")
        for line in done.stdout.splitlines():
            if line.startswith("MPM_JOB_DIR="):
                info["job_dir"] = line.split("=", 1)[1].strip()
        return info

    def _probe_findings(self, done: _Completed) -> dict:
        """The probe's ``MPM_PROBE`` JSON: python version and modules; raise when the environment falls short."""
        py = self.target.python
        if done.rc == 255:
            raise self._connection_error(done, "probe")
        if done.rc == _NO_PYTHON_RC:
            raise RemoteError(f"{self._where()}: missing remote environment: python {py!r} not found on "
                              f"{self.target.host} (set targets.{self.target.name}.python to the venv's python; "
                              f"see envs/rpi5/setup.sh):\n{_tail(done.stderr)}")
        info = None
        for line in done.stdout.splitlines():
            if line.startswith("MPM_PROBE "):
                try:
                    info = json.loads(line[len("MPM_PROBE "):])
                except ValueError:
                    info = None
        if info is None:
            raise RemoteError(f"{self._where()}: missing remote environment: remote python {py!r} failed to run "
                              f"(exit {done.rc}):\n{_tail(done.stderr)}")
        version = tuple(int(v) for v in info["python"].split(".")[:2])
        if version < MIN_PYTHON:
            raise RemoteError(f"{self._where()}: missing remote environment: remote python {py!r} is "
                              f"{info['python']}, need >= {'.'.join(map(str, MIN_PYTHON))}")
        if info["missing"]:
            what = "; ".join(f"{name} ({why})" for name, why in info["missing"].items())
            raise RemoteError(f"{self._where()}: missing remote environment: remote python {py!r} "
                              f"({info['python']}) cannot import {', '.join(info['missing'])}: {what}. "
                              "Install them there (envs/rpi5/setup.sh)")
        return info

    def _bundle(self, spec, job_dir: str, tmp: Path) -> tuple[Path, object, dict]:
        """Write the job's tar (source, checkpoint, images, spec) to ``tmp``; return it, the remote spec, facts."""
        from mpm.benchmarking.bench import BenchSpec
        from mpm.benchmarking.images import find_images

        files = find_images(spec.images)
        needed = files[: spec.batch_size * spec.pool_batches]
        tar_path = tmp / "job.tar"
        facts: dict = {"images_shipped": len(needed), "images_available": len(files)}
        with tarfile.open(tar_path, "w") as tar:
            facts["source_sha256"] = _add_source(tar, package_source_dir())
            remote_images = _add_images(tar, Path(spec.images), needed, job_dir)
            remote_model = _add_model(tar, spec.model, job_dir, facts)
            remote_spec = replace(spec, images=remote_images, model=remote_model)
            _add_bytes(tar, "spec.json", json.dumps(remote_spec.to_dict(), indent=1).encode(), int(time.time()))
        assert isinstance(remote_spec, BenchSpec)
        return tar_path, remote_spec, facts

    def run(self, spec, out: str | os.PathLike, runtime: str = "torch",
            cooldown: CooldownConfig | None = None) -> dict:
        """Measure ``spec`` on the target; write the result to ``out`` atomically; return it.

        Steps: precheck, probe (creates the job directory), ship, run, fetch, clean up.
        """
        t = self.target
        out = Path(out)
        modules = REQUIRED_MODULES + (ONNX_MODULES if runtime == "onnxruntime" else ())
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}"
        start = time.monotonic()
        self._precheck(spec)
        self.log(f"[{t.name}] probing {t.address} ...")
        commit, dirty = _git_state(package_source_dir())
        info = self.probe(job_id, modules)
        job_dir = info["job_dir"]
        try:
            remote_spec, facts = self._ship(spec, job_dir)
            self.log(f"[{t.name}] running {spec.method} {list(spec.schedule)} bs={spec.batch_size} on {t.host}")
            self._execute(self._run_command(job_dir, remote_spec, runtime, cooldown, commit))
            provenance = {
                "remote_job_dir": job_dir,
                "remote_python_version": info["python"],
                "remote_versions": info["versions"],
                "source_sha256": facts["source_sha256"],
                "source_git_commit": commit,
                "source_dirty": dirty,
                "images_shipped": facts["images_shipped"],
            }
            result = self._collect(out, job_dir, spec, remote_spec, facts, provenance, start)
            self.log(f"[{t.name}] wrote {out}")
            return result
        finally:
            if not t.keep_job_dir:
                self.cleanup(job_dir)

    def _ship(self, spec, job_dir: str) -> tuple[object, dict]:
        """Bundle the job and unpack it in ``job_dir`` (one ssh call, the tar on stdin); (remote spec, facts)."""
        t = self.target
        with tempfile.TemporaryDirectory(prefix="mpm-ship-") as tmpdir:
            tar_path, remote_spec, facts = self._bundle(spec, job_dir, Path(tmpdir))
            size_mb = tar_path.stat().st_size / 2**20
            self.log(f"[{t.name}] shipping {size_mb:.1f} MiB to {job_dir}")
            done = self._ssh(remote_command(_UNPACK_SCRIPT, job_dir, t.python, _UNPACK_CODE),
                             stdin_path=tar_path, timeout=t.connect_timeout + 60 + size_mb * 2)
        if done.rc == 255:
            raise self._connection_error(done, "shipping the job")
        if done.rc != 0:
            raise RemoteError(f"{self._where()}: unpacking the job in {job_dir} failed (exit {done.rc}):\n"
                              f"{_tail(done.stderr)}")
        return remote_spec, facts

    def _run_command(self, job_dir: str, remote_spec, runtime: str, cooldown: CooldownConfig | None,
                     commit: str | None) -> str:
        """The remote command line that runs ``mpm.cli.bench --target local`` in the job directory."""
        t = self.target
        # paths relative to the job directory the run script starts in: a work_dir holding ':' cannot
        # split PYTHONPATH (python makes the entry absolute at start-up)
        env = {"PYTHONPATH": "src", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        if commit:
            env["MPM_GIT_COMMIT"] = commit
        if remote_spec.threads:
            env["OMP_NUM_THREADS"] = str(remote_spec.threads)
        env.update(t.env)
        argv = [t.python, "-m", "mpm.cli.bench", "--target", "local", "--spec", "spec.json",
                "--runtime", runtime, "--out", "out/result.json"]
        if cooldown:
            argv += cooldown.cli_args()
        return remote_command(_RUN_SCRIPT, job_dir, str(t.run_timeout or 0), str(len(env)),
                              *(f"{k}={v}" for k, v in env.items()), *argv)

    def _execute(self, command: str) -> None:
        """Run the benchmark command, remote stderr streamed to the log; raise on any failure."""
        t = self.target
        done = self._ssh(command, stream=True,
                         timeout=(t.run_timeout + t.connect_timeout + 90) if t.run_timeout else None)
        if done.rc == 255:
            raise RemoteError(f"{self._where()}: ssh connection failed or was lost during the run (exit 255):\n"
                              f"{_tail(done.stderr)}")
        if done.rc == 124 and t.run_timeout:
            raise RemoteError(f"{self._where()}: the remote benchmark exceeded run_timeout = {t.run_timeout} s "
                              f"and was stopped:\n{_tail(done.stderr)}")
        if done.rc != 0:
            raise RemoteError(f"{self._where()}: remote benchmark failed (exit {done.rc}); remote stderr:\n"
                              f"{_tail(done.stderr)}")

    def _collect(self, out: Path, job_dir: str, spec, remote_spec, facts: dict, provenance: dict,
                 start: float) -> dict:
        """Fetch the result beside ``out``, check its schema, localise it, add ``target``, rename onto ``out``."""
        from mpm.benchmarking.bench import validate_result
        from mpm.io import atomic_path

        with atomic_path(out) as tmp:
            self._fetch(job_dir, tmp)
            try:
                result = json.loads(tmp.read_text())
            except (OSError, ValueError) as err:
                raise RemoteError(f"{self._where()}: the fetched result is not valid JSON: {err}") from None
            problems = validate_result(result)
            if problems:
                raise RemoteError(f"{self._where()}: the fetched result does not match the mpm.bench/1 schema: "
                                  + "; ".join(problems[:5]))
            self._localise(result, spec, remote_spec, facts)
            result["target"] = {**self.target.describe(), **provenance,
                                "elapsed_s": round(time.monotonic() - start, 1)}
            tmp.write_text(json.dumps(result, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        return result

    @staticmethod
    def _precheck(spec) -> None:
        """What can be checked here before touching the remote host."""
        from mpm.benchmarking.bench import DTYPES
        from mpm.benchmarking.images import find_images

        if spec.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {spec.dtype!r}; expected one of {', '.join(DTYPES)}")
        find_images(spec.images)
        if spec.model.upper() not in ("T", "S", "B", "L") and not Path(spec.model).is_file():
            raise ConfigError(f"model {spec.model!r} is neither a ViT size (T, S, B, L) nor an existing "
                              "checkpoint file")

    def _fetch(self, job_dir: str, local: Path) -> None:
        """The job's ``out/result.json`` into ``local``: ``cat`` over ssh, the path one quoted argument."""
        remote_path = f"{job_dir}/out/result.json"
        done = self._ssh(remote_command(_FETCH_SCRIPT, job_dir), timeout=self.target.connect_timeout + 120,
                         stdout_path=local)
        if done.rc == 255:
            raise self._connection_error(done, f"fetching {remote_path}")
        if done.rc != 0 or local.stat().st_size == 0:
            raise RemoteError(f"{self._where()}: cannot fetch {remote_path} (exit {done.rc}):\n{_tail(done.stderr)}")

    @staticmethod
    def _localise(result: dict, spec, remote_spec, facts: dict) -> None:
        """Replace the shipped paths in the result by the local ones (results compare across targets)."""
        result["spec"]["images"] = spec.images
        result["spec"]["model"] = spec.model
        source = result.get("image_source", {})
        if isinstance(source, dict):
            source["source"] = spec.images
            source["images_available"] = facts["images_available"]
        model = result.get("model", {})
        if isinstance(model, dict) and "checkpoint" in model:
            model["checkpoint"] = spec.model

    def cleanup(self, job_dir: str) -> None:
        """Remove the remote job directory (best effort: a failure is logged, not raised)."""
        try:
            done = self._ssh(remote_command(_CLEAN_SCRIPT, job_dir), timeout=self.target.connect_timeout + 60)
        except RemoteError as err:
            self.log(f"[{self.target.name}] warning: could not remove {job_dir}: {err}")
            return
        if done.rc != 0:
            self.log(f"[{self.target.name}] warning: could not remove {job_dir} (exit {done.rc}): "
                     f"{done.stderr.strip()[-500:]}")


def check_target(target: SSHTarget, runtime: str = "torch", log: Callable[[str], None] | None = None) -> dict:
    """Probe a target's environment without running anything; the probe's findings (versions)."""
    wanted = REQUIRED_MODULES + (ONNX_MODULES if runtime == "onnxruntime" else ())
    modules = tuple(m.lstrip("?") for m in wanted)  # a check may take its time: import everything
    return SSHRunner(target, log=log).probe("", modules)


def _main() -> None:  # pragma: no cover - debugging aid: python -m mpm.benchmarking.remote CONFIG TARGET
    target = get_target(sys.argv[2], sys.argv[1])
    if not isinstance(target, SSHTarget):
        raise SystemExit(f"{sys.argv[2]} is not an ssh target")
    print(json.dumps(check_target(target), indent=1))


if __name__ == "__main__":  # pragma: no cover
    _main()
