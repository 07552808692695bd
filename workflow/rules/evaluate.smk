# Stage 3: accuracy (mIoU, tokens left, GFLOPs) of every (dataset, model, method, schedule).


rule evaluate:
    input:
        manifest=lambda w: manifest(w.dataset, config["evaluation"]["split"], label_space(w.model)),
        checkpoint=lambda w: checkpoint(w.model),
    output:
        result=f"{RESULTS}/eval/{{dataset}}/{{model}}/{{method}}/{{schedule}}.json",
        classes=f"{RESULTS}/eval/{{dataset}}/{{model}}/{{method}}/{{schedule}}.classes.csv",
    params:
        root=lambda w: dataset_root(w.dataset),
        space=lambda w: label_space(w.model),
        blocks=lambda w: schedule_blocks(w.method, w.schedule),
        method_args=lambda w: method_args(w.method),
        split=config["evaluation"]["split"],
        limit=f"--limit {config['evaluation']['limit']}" if config["evaluation"].get("limit") else "",
        backend=config["evaluation"].get("backend", "math"),
        dtype=config["evaluation"].get("dtype", "float32"),
        device=config["evaluation"].get("device", "cpu"),
        batch=config["evaluation"].get("batch_size", 1),
    threads: config["evaluation"].get("threads", 1)
    resources:
        gpu=1 if str(config["evaluation"].get("device", "cpu")).startswith("cuda") else 0,
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/eval/{{dataset}}/{{model}}/{{method}}/{{schedule}}.log",
    shell:
        "mpm eval --data-root {params.root} --dataset {params.space} --split {params.split} "
        "--checkpoint {input.checkpoint} --method {wildcards.method} --schedule={params.blocks} "
        "{params.method_args} --backend {params.backend} --dtype {params.dtype} --device {params.device} "
        "--batch-size {params.batch} --threads {threads} {params.limit} "
        "--names dataset={wildcards.dataset},model={wildcards.model},method={wildcards.method},schedule={wildcards.schedule} "
        "--out {output.result} --per-class-csv {output.classes} --no-progress > {log} 2>&1"
