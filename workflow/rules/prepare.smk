# Stage 2: prepared splits with manifests (and, offline, the synthetic set and the demo model).


rule synth:
    output:
        train=f"{DATA}/{{dataset}}/manifests/synthetic-train.json",
        val=f"{DATA}/{{dataset}}/manifests/synthetic-val.json",
    params:
        root=lambda w: dataset_root(w.dataset),
        opts=lambda w: " ".join(f"--{k.replace('_', '-')} {v}" for k, v in config["datasets"][w.dataset].get("synth", {}).items()),
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/synth/{{dataset}}.log",
    shell:
        "mpm synth --root {params.root} {params.opts} --prepare > {log} 2>&1"


rule prepare:
    input:
        f"{DATA}/{{dataset}}/.fetched",
    output:
        f"{DATA}/{{dataset}}/manifests/{{space}}-{{split}}.json",
    wildcard_constraints:
        space="ade20k|cityscapes|pascal_context",
        split="train|val",
    params:
        root=lambda w: dataset_root(w.dataset),
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}-{{space}}-{{split}}.log",
    threads: 4
    shell:
        "mpm prepare {wildcards.space} --root {params.root} --split {wildcards.split} "
        "--workers {threads} --no-progress > {log} 2>&1"


rule train_demo:
    input:
        lambda w: manifest(config["models"][w.model]["dataset"], "train"),
    output:
        checkpoint=f"{RESULTS}/models/{{model}}.pth",
        sidecar=f"{RESULTS}/models/{{model}}.pth.json",
    params:
        root=lambda w: dataset_root(config["models"][w.model]["dataset"]),
        seed=lambda w: config["models"][w.model].get("train", {}).get("seed", 0),
        steps=lambda w: config["models"][w.model].get("train", {}).get("steps", 300),
    threads: lambda w: config["models"][w.model].get("train", {}).get("threads", 2)
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    shell:
        "mpm train-demo --data-root {params.root} --out {output.checkpoint} --seed {params.seed} "
        "--steps {params.steps} --threads {threads} --no-progress > {log} 2>&1"
