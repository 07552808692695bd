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
        uri=TRACKING_URI,
        experiment=config["experiment"],
        invocation=INVOCATION,
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/tables.log",
    shell:
        "mpm tables --eval-results {input.evals} --bench-results {input.benches} "
        "--out-tables {params.tables} --out-figures {output.figures} "
        "--gpu-target {params.gpu} --cpu-target {params.cpu} --batch-size {params.batch} --index {output.index} "
        "> {log} 2>&1 && "
        "mpm track artifacts {params.tables}/*.md {params.tables}/*.tex {params.tables}/*.csv --artifact-path tables "
        "--uri {params.uri} --experiment {params.experiment} --key \"$(cat {params.invocation} 2>/dev/null || echo manual)\" "
        ">> {log} 2>&1 && "
        "mpm track artifacts {output.figures}/*.png {output.figures}/*.pdf --artifact-path figures "
        "--uri {params.uri} --experiment {params.experiment} --key \"$(cat {params.invocation} 2>/dev/null || echo manual)\" "
        ">> {log} 2>&1"
