#!/usr/bin/env bash
# One-command set-up of a Raspberry Pi 5 (64-bit Raspberry Pi OS) as an `mpm bench` ssh target.
#
#   bash setup.sh [--venv DIR] [--with-onnx] [--no-apt] [--governor] [--force]
#
# Creates a virtual environment (default ~/mpm-venv) with the CPU aarch64 torch/torchvision wheels
# from PyPI, timm, numpy, pillow, pyyaml (and onnxruntime + onnx with --with-onnx: then an export and an
# ONNX Runtime session are tried too), checks that they import, and prints the `targets:` entry to
# declare on the machine that drives the benchmarks.
# The mpm package itself is NOT installed: the ssh runner ships its source with every job.
#
#   --venv DIR    where to create the environment (default: $MPM_VENV or ~/mpm-venv)
#   --with-onnx   also install onnxruntime and onnx (for --runtime onnxruntime, with merging too)
#   --no-apt      do not apt-get install python3-venv and the vcgencmd tools (no sudo needed)
#   --governor    set the CPU frequency governor to `performance` now (until reboot; needs sudo)
#   --force       run on a machine that is not aarch64 (for testing the script elsewhere)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${MPM_VENV:-$HOME/mpm-venv}"
WITH_ONNX=0
APT=1
GOVERNOR=0
FORCE=0

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --venv=*) VENV="${1#--venv=}"; shift ;;
    --with-onnx) WITH_ONNX=1; shift ;;
    --no-apt) APT=0; shift ;;
    --governor) GOVERNOR=1; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

arch="$(uname -m)"
if [ "$arch" != "aarch64" ] && [ "$FORCE" != 1 ]; then
  die "this is a $arch machine; a Raspberry Pi 5 with 64-bit Raspberry Pi OS reports aarch64 (use --force to go on)"
fi
if [ -r /proc/device-tree/model ]; then
  say "board: $(tr -d '\0' < /proc/device-tree/model)"
fi

if [ "$APT" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  say "system packages (python3-venv; vcgencmd for temperature and throttling flags)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq python3-venv python3-pip
  # vcgencmd: `raspi-utils` on current Raspberry Pi OS, `libraspberrypi-bin` on older releases
  if ! command -v vcgencmd >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq raspi-utils 2>/dev/null || $SUDO apt-get install -y -qq libraspberrypi-bin 2>/dev/null \
      || echo "warning: vcgencmd not installed; the SoC temperature is read from /sys/class/thermal instead"
  fi
fi

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "$PY not found"
"$PY" - <<'EOF' || die "Python >= 3.10 is needed"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF

say "virtual environment: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
say "installing torch/torchvision (CPU aarch64 wheels from PyPI), timm, numpy, pillow, pyyaml"
"$VENV/bin/python" -m pip install --quiet --only-binary=torch,torchvision -r "$HERE/requirements.txt"
if [ "$WITH_ONNX" = 1 ]; then
  say "installing onnxruntime and onnx"
  "$VENV/bin/python" -m pip install --quiet -r "$HERE/requirements-onnx.txt"
fi

say "checking the environment"
MPM_WITH_ONNX="$WITH_ONNX" "$VENV/bin/python" - <<'EOF'
import importlib, importlib.util, os, platform, sys
import torch
mods = ["torch", "torchvision", "timm", "numpy", "PIL", "yaml"]
with_onnx = os.environ.get("MPM_WITH_ONNX") == "1"
for name in ("onnxruntime", "onnx"):
    if with_onnx or importlib.util.find_spec(name):
        mods.append(name)
for name in mods:
    mod = importlib.import_module(name)
    print(f"  {name:12s} {getattr(mod, '__version__', '?')}")
x = torch.randn(64, 64)
assert torch.allclose((x @ x.T), (x @ x.T).T, atol=1e-4)
print(f"  python {platform.python_version()} on {platform.machine()}, torch threads {torch.get_num_threads()}")
if "onnxruntime" in mods:
    # a two-node graph through the exporter and a session: what --runtime onnxruntime does, in small
    import tempfile
    import warnings
    import numpy as np
    import onnxruntime as ort
    lin = torch.nn.Linear(8, 4).eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = f"{tmp}/check.onnx"
        kw = dict(input_names=["x"], output_names=["y"], dynamic_axes={"x": {1: "tokens"}, "y": {1: "tokens"}},
                  opset_version=17)
        try:
            torch.onnx.export(lin, (torch.randn(1, 3, 8),), path, dynamo=False, **kw)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(lin, (torch.randn(1, 3, 8),), path, **kw)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        x = np.random.rand(1, 5, 8).astype(np.float32)
        with torch.no_grad():
            ref = lin(torch.from_numpy(x)).numpy()
        assert np.abs(sess.run(None, {"x": x})[0] - ref).max() < 1e-5, "onnxruntime disagrees with torch"
    print(f"  onnxruntime providers {', '.join(ort.get_available_providers())}; export + session check passed")
EOF

if [ "$GOVERNOR" = 1 ]; then
  say "CPU frequency governor -> performance (until reboot)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  for g in /sys/devices/system/cpu/cpufreq/policy*/scaling_governor; do
    [ -e "$g" ] && echo performance | $SUDO tee "$g" >/dev/null
  done
fi
if [ -r /sys/devices/system/cpu/cpufreq/policy0/scaling_governor ]; then
  echo "  governor: $(cat /sys/devices/system/cpu/cpufreq/policy0/scaling_governor)"
fi
if command -v vcgencmd >/dev/null 2>&1; then
  echo "  $(vcgencmd measure_temp)  $(vcgencmd get_throttled)"
fi

say "done. Declare the target on the machine that drives the benchmarks (config/targets.yaml):"
cat <<EOF
targets:
  rpi5:
    type: ssh
    host: $(hostname).local
    user: $(id -un)
    python: $VENV/bin/python
    work_dir: ~/mpm-bench
    threads: 4
    cooldown: {max_temp_c: 50, poll_s: 5, timeout_s: 900}
EOF
echo "then: mpm bench --target rpi5 --check"
