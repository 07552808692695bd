# Stage 1: downloads (datasets and checkpoints), resumable and checksum-verified.
# Local rules: on a cluster they run on the submitting host (compute nodes often have no internet).

localrules: fetch_dataset, fetch_checkpoint


rule fetch_dataset:
    output:
        touch(f"{DATA}/{{dataset}}/.fetched"),
    params:
        root=lambda w: dataset_root(w.dataset),
        sources=lambda w: " ".join(f"--from {shlex.quote(p)}" for p in config["datasets"][w.dataset].get("fetch_from", [])),
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/fetch/{{dataset}}.log",
    retries: 1
    shell:
        "mpm fetch dataset {wildcards.dataset} --root {params.root} {params.sources} --no-progress > {log} 2>&1"


rule fetch_checkpoint:
    output:
        f"{DATA}/checkpoints/{{entry}}/{{filename}}",
    wildcard_constraints:
        filename=r"[^/]+\.pth",
    params:
        dest=lambda w, output: str(Path(output[0]).parent.parent),
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/fetch/checkpoint-{{entry}}-{{filename}}.log",
    retries: 1
    shell:
        "mpm fetch checkpoint {wildcards.entry} --dest {params.dest} --no-progress > {log} 2>&1"
