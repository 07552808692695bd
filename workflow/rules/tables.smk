# Stage 6: the paper's tables (Markdown, LaTeX, CSV) and figures, from every result of the run.


rule tables:
    input:
        evals=eval_results(),
        benches=bench_results(),
    output:
        index=TABLES_DONE,
        figures=report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            category="Figures",
            caption="../report/figures.rst",
        ),
    params:
        tables=lambda w, output: os.path.dirname(output.index),
        gpu=config["tables"].get("gpu_target", ""),
        cpu=config["tables"].get("cpu_target", ""),
        batch=config["tables"].get("batch_size", 32),
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/tables.log",
    shell:
        "mpm tables --eval-results {input.evals} --bench-results {input.benches} "
        "--out-tables {params.tables} --out-figures {output.figures} "
        "--gpu-target {params.gpu} --cpu-target {params.cpu} --batch-size {params.batch} > {log} 2>&1"
