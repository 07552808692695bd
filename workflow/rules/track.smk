# Stage 5: every evaluation and benchmark job becomes an MLflow run (idempotent: a re-run updates
# the job's run, found by its job key), children of one parent run per pipeline invocation.
# The store is created and migrated once, before any job starts (no race on a fresh SQLite file).
# The parent run is RUNNING while the invocation runs and ends FINISHED (onsuccess) or FAILED
# (onerror); Snakemake runs none of these handlers for a dry run or when nothing is to be done.

import datetime
import os

# Logging a result is a few HTTP calls to the tracking store: on a cluster it runs on the submit host,
# beside the MLflow server, rather than as a job of its own in the queue.
localrules: track_result

_INVOCATION_KEY = []  # this invocation's parent key (set by onstart, read by onsuccess / onerror)


onstart:
    key = f"{config['experiment']}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"
    Path(INVOCATION).parent.mkdir(parents=True, exist_ok=True)
    shell(
        f"mpm track init --uri {TRACKING_URI} --experiments {config['experiment']} "
        f"&& mpm track parent --uri {TRACKING_URI} --experiment {config['experiment']} --key {key} "
        f"--param configfile={shlex.quote(','.join(map(str, workflow.overwrite_configfiles)) or 'config/demo.yaml')} > /dev/null"
    )
    Path(INVOCATION).write_text(f"{key}\n")
    _INVOCATION_KEY.append(key)


# `mpm track finish` of this invocation's parent run (none when onstart made none)
onsuccess:
    for key in _INVOCATION_KEY:
        shell(f"mpm track finish --uri {shlex.quote(TRACKING_URI)} --experiment {shlex.quote(config['experiment'])} "
              f"--key {key} --status FINISHED")


onerror:
    for key in _INVOCATION_KEY:
        shell(f"mpm track finish --uri {shlex.quote(TRACKING_URI)} --experiment {shlex.quote(config['experiment'])} "
              f"--key {key} --status FAILED")


rule track_result:
    input:
        f"{RESULTS}/{{kind}}/{{job}}.json",
    output:
        f"{RESULTS}/tracking/{{kind}}/{{job}}.json",
    wildcard_constraints:
        kind="eval|bench",
        job=r"[^.]+(\.[^.]+)*?",
    params:
        uri=TRACKING_URI,
        experiment=config["experiment"],
        invocation=INVOCATION,
    conda:
        "../../envs/mpm.yaml"
    log:
        f"{RESULTS}/logs/tracking/{{kind}}/{{job}}.log",
    shell:
        "mpm track log {input} --uri {params.uri} --experiment {params.experiment} "
        "--parent-key \"$(cat {params.invocation} 2>/dev/null || echo manual)\" "
        "--param pipeline.job={wildcards.kind}/{wildcards.job} --done-file {output} > {log} 2>&1"
