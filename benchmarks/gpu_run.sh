#!/bin/bash
# One device call: GPU correctness checks, the H200 speed rows, and (full) the GPU host CPU's rows.
#
#   bash benchmarks/gpu_run.sh quick   # checks; MPM rows only, photos, 3 repeats; batch 32 graphs with --speculate (about 3 min)
#   bash benchmarks/gpu_run.sh gpu     # checks; MPM, ToMe, ALGM; photos + synthetic; 5 repeats (about 5-6 min)
#   bash benchmarks/gpu_run.sh spec    # checks; MPM rows with and without speculative capacities, eager and graphs,
#                                      # batch 32 from a pool of 2 distinct batches (64 photos) and batch 1 (about 6 min)
#   bash benchmarks/gpu_run.sh kernels # checks; the best-partner kernel's tilings (about 2-3 min)
#   bash benchmarks/gpu_run.sh sym     # checks; row vs symmetric best-partner kernel (sweep, batch 1 and 32), merge steps;
#                                      # MPM rows at batch 32, FA2, both modes, with the symmetric kernel and without
#                                      # it, pool of 2 batches (about 5 min; at most 8 files come back: logs in logs.tar.gz)
#   bash benchmarks/gpu_run.sh fused   # runner checks; MPM rows at batch 1 and 32, FA2, graphs, speculative forwards as one
#                                      # graph and as one graph per merge interval (MPM_FUSE_SPECULATIVE=1/0; about 5 min)
#   bash benchmarks/gpu_run.sh share   # checks, merge steps; MPM rows at batch 1 and 32, FA2, photos, pool of 2 batches: the
#                                      # kernel share of the uncut graphs and each section's costliest kernels (about 7 min)
#   bash benchmarks/gpu_run.sh bs1     # MPM rows at batch 1, FA2, graphs, speculative capacities on and off, photos and
#                                      # synthetic images (about 2 min)
#   bash benchmarks/gpu_run.sh attn    # attention_kernels.py (the Triton attention kernel against FA2), checks (about 2 min)
#   bash benchmarks/gpu_run.sh census  # kernel_census.py: kernels per forward of dense, oracle and MPM, batch 1 and 32, graphs (about 2 min;
#                                      # CENSUS_MODELS, CENSUS_BATCHES, CENSUS_EXTRA="--backend triton --images synthetic")
#   bash benchmarks/gpu_run.sh tuned   # kernels, then checks, merge steps and quick MPM rows with the sweep's tilings
#   bash benchmarks/gpu_run.sh small   # checks; the small batches' best-partner tilings (sweep, batch 1 and 4); with the
#                                      # winners (MPM_TRITON_SMALL_TILES): checks, merge steps, MPM rows at batch 1, triton
#                                      # and FA2, both modes, synthetic and photos, cut at CALL_BUDGET_S (570) s into the call
#   bash benchmarks/gpu_run.sh mpm     # checks; MPM rows only: batch 32 and 1, triton and FA2, both modes, photos and synthetic,
#                                      # 3 repeats (about 6 min; cut at CALL_BUDGET_S into the call)
#   bash benchmarks/gpu_run.sh eager   # checks, merge steps; MPM rows in eager mode, batch 32 and 1, triton and FA2, photos
#                                      # and synthetic, with the plan in one launch (default); on the synthetic set
#                                      # Seg-T/S with it off (MPM_TRITON_ONE_LAUNCH=never), then batch 1 with
#                                      # speculative capacities; cut at CALL_BUDGET_S into the call
#   bash benchmarks/gpu_run.sh edge    # the GPU host CPU's edge.py rows, photos, 6 rounds (about 5 min)
#   bash benchmarks/gpu_run.sh edgeprof # edge_profile.py, Seg-T at 1 and 4 threads (about 2 min)
#   bash benchmarks/gpu_run.sh cpu     # the GPU host CPU's speed.py --device cpu rows (15 repeats: about 4 min)
#   (EDGE_ROUNDS=N and EDGE_EXTRA="--unfused" for edge, CPU_REPEATS=N for cpu change their length; MERGE_KERNELS=0
#   leaves merge_kernels.py out of quick/gpu/spec; SYNTH_BATCHES=32,1 adds batch-1 rows on the synthetic set to gpu;
#   GPU_BACKENDS (default fa2,math) and BATCH1_BACKENDS (default fa2) are gpu's attention backends at batch 32 and 1;
#   GPU_IMAGES=photos or =synthetic runs gpu's rows of one image set: with SYNTH_BATCHES=32,1 the whole run takes
#   about 700 s, over one call's 600, so it goes in two calls, one per set, their speed.json lists joined)
#   bash benchmarks/gpu_run.sh full    # gpu, then edge and cpu (over one device call's limit)
#
# Writes under $OUT: gpu.txt, checks.log, merge_kernels.json/.log, speed.json (or speed.partial.json if cut short), speed.log;
# for kernels: checks.log, tiles.json/.log, tiles_best.json (tuned: and merge_kernels.json, its table in tiles.log, speed.json/.log); for edge: edge.json, edge.log;
# for cpu: cpu_speed.json, cpu_speed.log. Commit speed.json as
# results/reference/h200/speed.json, merge cpu_speed.json's rows into results/reference/cpu/speed.json,
# and edge.json's rows (this run's only) into results/reference/cpu/edge.json.
#
# Give the commit of the tree sent: MPM_GIT_COMMIT=$(git rev-parse HEAD) evaluated HERE, before the call
# (the device's copy of the checkout keeps the git metadata of an earlier commit, so git there lies).
set -o pipefail
cd "$(dirname "$0")/.."
: "${MPM_GIT_COMMIT:?set MPM_GIT_COMMIT to the commit of the tree sent (git rev-parse HEAD where you call from)}"
export MPM_GIT_COMMIT
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/mpm-out}
mkdir -p "$OUT"
what=${1:-quick}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv \
    | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)" \
    | tee -a "$OUT/gpu.txt"
budget_left() {  # seconds left of the call's CALL_BUDGET_S (default 570, inside the device call's 600) for a last, long step
    local left=$(( ${CALL_BUDGET_S:-570} - SECONDS ))
    echo $(( left > 1 ? left : 1 ))  # never 0: timeout 0 would mean no limit
}
mpm_speed() {  # speed.py's MPM rows, 3 repeats, cut at budget_left ($1: output name under $OUT; the rest: its options)
    local name=$1
    shift
    timeout "$(budget_left)" python3 benchmarks/speed.py --device cuda --methods mpm --repeats 3 "$@" \
        --out "$OUT/$name.json" 2>&1 | grep -v "_warn_once\|profiler.py" | tee "$OUT/$name.log"
}
checks_gate() {  # the GPU checks ($1: which parts); the calling part stops (status 1) if a line matches $2
    timeout 200 python3 benchmarks/cuda_checks.py $1 --quick 2>&1 | tee -a "$OUT/checks.log"
    if grep -q "$2" "$OUT/checks.log"; then echo "checks failed: no timings" | tee -a "$OUT/checks.log"; return 1; fi
}
gpu_rows() {
    timeout 200 python3 benchmarks/cuda_checks.py kernels runner --quick 2>&1 | tee "$OUT/checks.log"
    # the kernels' own checks decide which kernels are timed; a runner check that fails is reported in
    # checks.log (and the rows are then not to be trusted), but does not change the kernels
    if ! grep -q "^ok .*triton mutual plan" "$OUT/checks.log" || grep -q "^FAIL triton" "$OUT/checks.log"; then
        echo "Triton kernel checks failed or did not run: timing the PyTorch twins (MPM_TRITON=0)" \
            | tee -a "$OUT/checks.log"
        export MPM_TRITON=0
    fi
    if [ "${MERGE_KERNELS:-1}" != 0 ]; then
        timeout 120 python3 benchmarks/merge_kernels.py --out "$OUT/merge_kernels.json" 2>&1 | tee "$OUT/merge_kernels.log"
    fi
    if [ "$1" = quick ]; then
        python3 benchmarks/speed.py --device cuda --images photos --methods mpm --repeats 3 \
            --out "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log"
        # diagnostic: batch 32 under graphs without the host reads of the counts (speculative capacities)
        python3 benchmarks/speed.py --device cuda --images photos --methods mpm --repeats 3 --batches 32 \
            --backends fa2 --modes graphs --speculate on --out "$OUT/speed_speculate.json" 2>&1 \
            | tee "$OUT/speed_speculate.log"
    elif [ "$1" = spec ]; then
        python3 benchmarks/speed.py --device cuda --images photos --methods mpm --repeats "${SPEC_REPEATS:-5}" \
            --speculate both --pool-batches 2 --out "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log"
    else
        python3 benchmarks/speed.py --device cuda --images "${GPU_IMAGES:-photos,synthetic}" --methods mpm,tome,algm \
            --repeats 5 --synthetic-batches "${SYNTH_BATCHES:-32}" --backends "${GPU_BACKENDS:-fa2,math}" \
            --batch1-backends "${BATCH1_BACKENDS:-fa2}" --out "$OUT/speed.json" 2>&1 \
            | grep -v "_warn_once\|profiler.py" | tee "$OUT/speed.log"
    fi
}
sym_rows() {  # the symmetric best-partner kernel: its checks, its timings against the row kernel, MPM rows with and without it
    checks_gate kernels "^FAIL" || return 1
    grep -q "^ok .*symmetric" "$OUT/checks.log" || { echo "symmetric kernel checks did not run: no timings" \
        | tee -a "$OUT/checks.log"; return 1; }
    # the symmetric tilings against each width's row kernel at batch 32; the winners become SYMMETRIC_TILES
    # for the rest of the run (a width whose row kernel wins keeps the row kernel)
    timeout 200 python3 benchmarks/merge_kernels.py --sweep --sweep-set symmetric --batches 32 --out "$OUT/tiles.json" \
        --best-out "$OUT/tiles_best.json" 2>&1 | tee "$OUT/tiles.log"
    [ -s "$OUT/tiles_best.json" ] && export MPM_TRITON_SYMMETRIC_TILES="$OUT/tiles_best.json"
    checks_gate kernels "^FAIL" || return 1  # again, with the sweep's tilings
    timeout 120 python3 benchmarks/merge_kernels.py --out "$OUT/merge_kernels.json" 2>&1 | tee "$OUT/merge_kernels.log"
    python3 benchmarks/speed.py --device cuda --images photos --methods mpm --repeats "${SPEC_REPEATS:-5}" --batches 32 \
        --backends fa2 --pool-batches 2 --out "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log"
    MPM_TRITON_SYMMETRIC=0 python3 benchmarks/speed.py --device cuda --images photos --methods mpm \
        --repeats "${SPEC_REPEATS:-5}" --batches 32 --backends fa2 --pool-batches 2 --out "$OUT/speed_rowkernel.json" 2>&1 \
        | tee "$OUT/speed_rowkernel.log"
    pack_logs
}
fused_rows() {  # a speculative forward as one graph (segmenter.FUSE_SPECULATIVE) against one graph per merge interval
    checks_gate "kernels runner" "^FAIL" || return 1
    for fuse in 1 0; do
        MPM_FUSE_SPECULATIVE=$fuse python3 benchmarks/speed.py --device cuda --images photos --methods mpm \
            --repeats "${SPEC_REPEATS:-5}" --batches 1,32 --backends fa2 --modes graphs --pool-batches 2 \
            --out "$OUT/speed_fuse$fuse.json" 2>&1 | tee "$OUT/speed_fuse$fuse.log"
    done
    pack_logs
}
share_rows() {  # the merge + unmerge kernel share with the markers inside the timed (uncut) graphs
    checks_gate "kernels runner" "^FAIL triton" || return 1
    timeout 100 python3 benchmarks/merge_kernels.py --out "$OUT/merge_kernels.json" 2>&1 | tee "$OUT/merge_kernels.log"
    python3 benchmarks/speed.py --device cuda --images photos --methods mpm --repeats "${SPEC_REPEATS:-5}" \
        --batches "${SHARE_BATCHES:-32,1}" --backends fa2 --pool-batches 2 --out "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log"
    pack_logs
}
bs1_rows() {  # batch 1 under graphs: speculative capacities against exact reads, photos and synthetic images
    python3 benchmarks/speed.py --device cuda --images photos,synthetic --synthetic-batches 1 --methods mpm \
        --repeats "${SPEC_REPEATS:-5}" --batches 1 --backends fa2 --modes graphs --speculate both \
        --out "$OUT/speed.json" 2>&1 | grep -v "_warn_once\|profiler.py" | tee "$OUT/speed.log"
}
attn_rows() {  # the Triton attention backend: its kernel against FA2 per shape and tiling, then its checks
    timeout 200 python3 benchmarks/attention_kernels.py --out "$OUT/attention_kernels.json" 2>&1 | tee "$OUT/attention_kernels.log"
    checks_gate "kernels runner" "^FAIL"
}
census_rows() {  # which kernels dense, the oracle and MPM run (where the merged models lose time)
    timeout 500 python3 benchmarks/kernel_census.py --models "${CENSUS_MODELS:-T,S,B,L}" --batches "${CENSUS_BATCHES:-1,32}" \
        $CENSUS_EXTRA --out "$OUT/census.json" 2>&1 | grep -v "_warn_once\|profiler.py" | tee "$OUT/census.log"
}
pack_logs() {  # at most 8 files come back from a device call: the logs travel as one archive
    (cd "$OUT" && tar czf logs.tar.gz ./*.log gpu.txt && rm -f ./*.log gpu.txt)
}
kernel_rows() {
    timeout 150 python3 benchmarks/cuda_checks.py kernels --quick 2>&1 | tee "$OUT/checks.log"
    timeout 240 python3 benchmarks/merge_kernels.py --sweep --batches 32 --out "$OUT/tiles.json" --best-out "$OUT/tiles_best.json" \
        2>&1 | tee "$OUT/tiles.log"
}
tuned_rows() {  # the sweep, then checks and MPM rows with its tilings (MPM_TRITON_TILES): commit them as tk.TILES
    kernel_rows
    [ -s "$OUT/tiles_best.json" ] || { echo "no tilings from the sweep" >&2; return 1; }
    export MPM_TRITON_TILES="$OUT/tiles_best.json"
    timeout 150 python3 benchmarks/cuda_checks.py kernels runner --quick 2>&1 | tee -a "$OUT/checks.log"
    timeout 120 python3 benchmarks/merge_kernels.py --out "$OUT/merge_kernels.json" 2>&1 | tee -a "$OUT/tiles.log"
    python3 benchmarks/speed.py --device cuda --images photos --methods mpm --repeats 3 \
        --out "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log"
}
small_rows() {  # the best-partner search's tilings at small batches (tk.SMALL_TILES): commit the winners there
    checks_gate kernels "^FAIL" || return 1
    timeout 200 python3 benchmarks/merge_kernels.py --sweep --sweep-set small --batches 1,4 --out "$OUT/tiles.json" \
        --best-out "$OUT/small_best.json" 2>&1 | tee "$OUT/tiles.log"
    [ -s "$OUT/small_best.json" ] && export MPM_TRITON_SMALL_TILES="$OUT/small_best.json"
    checks_gate "kernels runner" "^FAIL" || return 1  # again, with the sweep's tilings
    timeout 100 python3 benchmarks/merge_kernels.py --batches 1 --out "$OUT/merge_kernels.json" 2>&1 | tee "$OUT/merge_kernels.log"
    mpm_speed speed --images synthetic,photos --synthetic-batches 1 --batches 1 --backends triton,fa2 \
        --batch1-backends triton,fa2
    pack_logs
}
mpm_rows() {  # the MPM rows of the reference run (ToMe and ALGM left out: their code is not what changed)
    checks_gate "kernels runner" "^FAIL" || return 1
    mpm_speed speed --images photos,synthetic --synthetic-batches 32,1 --batches 32,1 --backends triton,fa2 \
        --batch1-backends triton,fa2
}
eager_rows() {  # the plan in one launch (tk.plan_one_launch, outside graph capture) against the plan in kernels
    checks_gate "kernels runner" "^FAIL" || return 1
    timeout 100 python3 benchmarks/merge_kernels.py --batches 1,32 --out "$OUT/merge_kernels.json" 2>&1 \
        | tee "$OUT/merge_kernels.log"
    mpm_speed speed --images photos,synthetic --modes eager --synthetic-batches 32,1 --batches 32,1 \
        --backends triton,fa2 --batch1-backends triton,fa2
    # as time allows, on the synthetic set: Seg-T and Seg-S with the plan in kernels (MPM_TRITON_ONE_LAUNCH=never),
    # then batch 1 with speculative capacities (no host read of the counts at each merge)
    MPM_TRITON_ONE_LAUNCH=never mpm_speed speed_kernels --models T,S --images synthetic --modes eager \
        --synthetic-batches 32,1 --batches 32,1 --backends triton,fa2 --batch1-backends triton,fa2
    mpm_speed speed_spec --images synthetic --modes eager --synthetic-batches 1 --batches 1 \
        --batch1-backends triton,fa2 --speculate on
    pack_logs
}
edge_rows() {  # issue 13's rows need this CPU; edge.json starts empty (the committed rows are merged here)
    lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core)" | tee -a "$OUT/gpu.txt"
    python3 benchmarks/edge.py --out "$OUT" --models T,S --threads 1,4 --images photos --rounds "${EDGE_ROUNDS:-6}" $EDGE_EXTRA 2>&1 \
        | tee "$OUT/edge.log"
}
edge_profile_rows() {  # per-operator ms of ONNX Runtime and PyTorch at 1 and 4 threads (Seg-T)
    lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA|L2|L3|Flags)" | cut -c1-400 | tee -a "$OUT/gpu.txt"; nproc | tee -a "$OUT/gpu.txt"
    for run in "1 shared" "4 shared" "4 per-session" "4 per-session-nospin"; do
        set -- $run
        OMP_NUM_THREADS=$1 python3 benchmarks/edge_profile.py --model T --threads $1 --pool $2 \
            --out "$OUT/profile$1-$2" 2>&1 | grep -v "USDT" | tee -a "$OUT/edge_profile.log"
    done
}
cpu_rows() {
    lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core)" | tee -a "$OUT/gpu.txt"
    python3 benchmarks/speed.py --device cpu --models T,S --threads 1,4 --methods mpm --repeats "${CPU_REPEATS:-15}" \
        --images photos --out "$OUT/cpu_speed.json" 2>&1 | tee "$OUT/cpu_speed.log"
}
case "$what" in
    quick|gpu|spec) gpu_rows "$what" ;;
    sym) sym_rows ;;
    fused) fused_rows ;;
    share) share_rows ;;
    census) census_rows ;;
    attn) attn_rows ;;
    bs1) bs1_rows ;;
    kernels) kernel_rows ;;
    tuned) tuned_rows ;;
    small) small_rows ;;
    mpm) mpm_rows ;;
    eager) eager_rows ;;
    edge) edge_rows ;;
    edgeprof) edge_profile_rows ;;
    cpu) cpu_rows ;;
    full) gpu_rows full; edge_rows; cpu_rows ;;
    *) echo "gpu_run.sh: unknown part '$what' (quick, gpu, spec, sym, fused, share, census, attn, bs1, kernels, tuned, small, mpm, eager, edge, edgeprof, cpu or full)" >&2; exit 2 ;;
esac
