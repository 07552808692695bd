# Stage 6: the paper's tables (Markdown, LaTeX, CSV, HTML) and figures, from every result of the run;
# `snakemake --report` shows the figures and the tables' HTML pages.


rule tables:
    input:
        evals=eval_results(),
        benches=bench_results(),
    output:
        tables=report(
            directory(TABLES),
            patterns=["{name}.html"],
            category="Tables",
            caption="../report/tables.rst",
        ),
        figures=report(
            directory(FIGURES),
            patterns=["{name}.png"],
            category="Figures",
            caption="../report/figures.rst",
        ),
    params:
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
        "--out-tables {output.tables} --out-figures {output.figures} "
        "--gpu-target {params.gpu} --cpu-target {params.cpu} --batch-size {params.batch} "
        "--index {output.tables}/index.json > {log} 2>&1 && "
        "mpm track artifacts {output.tables}/*.md {output.tables}/*.tex {output.tables}/*.csv --artifact-path tables "
        "--uri {params.uri} --experiment {params.experiment} --key \"$(cat {params.invocation} 2>/dev/null || echo manual)\" "
        ">> {log} 2>&1 && "
        "mpm track artifacts {output.figures}/*.png {output.figures}/*.pdf --artifact-path figures "
        "--uri {params.uri} --experiment {params.experiment} --key \"$(cat {params.invocation} 2>/dev/null || echo manual)\" "
        ">> {log} 2>&1"
