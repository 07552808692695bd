# mpm: the reproducibility pipeline of "MPM: Mutual Pair Merging for Efficient Vision Transformers".
#
#   snakemake --cores all                                   offline demo (config/demo.yaml)
#   snakemake --cores all --configfile config/config.yaml   the paper
#   snakemake --lint / --report results/report.html
#
# Rules call the `mpm` command; they hold no logic. Outputs name every parameter:
#   RESULTS/eval/{dataset}/{model}/{method}/{schedule}.json
#   RESULTS/bench/{target}/{model}/{method}/{schedule}/bs{batch}-{backend}-{dtype}.json

from snakemake.utils import min_version, validate

min_version("8.0")

if not config:  # no --configfile: the embedded offline demo
    configfile: "config/demo.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/tables.smk"


rule all:
    input:
        eval_results(),
        bench_results(),
        tracking_markers(),
        TABLES_DONE,
    default_target: True
