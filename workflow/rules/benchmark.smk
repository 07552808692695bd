# Stage 4: latency and throughput on every target (config/targets.yaml): this host or a SLURM GPU
# node (rule bench), a board over SSH (rule bench_ssh, always run from the submitting host).
# One timing per device at a time: resource bench_<target>, capped at 1 by the profiles.

localrules: bench_ssh

rule bench:
    input:
        unpack(_bench_input),
    output:
        BENCH_OUT,
    wildcard_constraints:
        target=alternatives(HOST_TARGETS),
        batch=r"\d+",
        mode="eager|graphs",
    params:
        **_bench_params(),
    threads: lambda w: bench_threads(w.target)
    resources:
        **bench_resources(),
    conda:
        "../../envs/mpm.yaml"
    log:
        BENCH_LOG,
    shell:
        BENCH_CMD


rule bench_ssh:
    input:
        unpack(_bench_input),
    output:
        BENCH_OUT,
    wildcard_constraints:
        target=alternatives(SSH_TARGETS),
        batch=r"\d+",
        mode="eager|graphs",
    params:
        **_bench_params(),
    resources:
        **bench_resources(),
    conda:
        "../../envs/mpm.yaml"
    log:
        BENCH_LOG,
    shell:
        BENCH_CMD
