"""The documented profile (workflow/profiles/slurm) submits a real job, with only its site keys edited.

What a user edits for a cluster (the header of the profile says so): the account, the partitions, the
GPU type; and this cluster has no accounting database, so job status comes from squeue. Everything
else is the file as committed: a typo in a key or a value SLURM refuses fails here.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from cluster import PACKAGES, SlurmCluster, missing_binaries
from runs import DOC_PROFILE, REPO, memory_mb, rule_of, slurm_env, slurm_run_id, snakemake, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

#: (text in the documented profile, what this site puts there)
SITE_EDITS = [
    ('slurm_account: "CHANGE_ME"', 'slurm_account: "mpm-ci"'),
    ('slurm_partition: "cpu"', 'slurm_partition: "ci"'),
    ('slurm_partition: "gpu"', 'slurm_partition: "ci"'),
]
#: executor settings of this site that the profile leaves to the plugin's defaults: job status from
#: squeue (no accounting database), and a first status check after 5 s instead of 40 (a controller
#: on this host answers at once)
SITE_ADDITIONS = "\nslurm-status-command: squeue\nslurm-init-seconds-before-status-checks: 5\n"


def site_profile(folder):
    """The documented profile with this site's values, written to ``folder/config.yaml``."""
    text = (REPO / DOC_PROFILE / "config.yaml").read_text()
    for old, new in SITE_EDITS:
        assert old in text, f"{DOC_PROFILE}/config.yaml no longer has {old!r} for users to edit"
        text = text.replace(old, new)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(text + SITE_ADDITIONS)
    return folder


def test_site_edits_change_only_the_site_keys(tmp_path):
    doc = yaml.safe_load((REPO / DOC_PROFILE / "config.yaml").read_text())
    site = yaml.safe_load((site_profile(tmp_path / "profile") / "config.yaml").read_text())
    assert site.pop("slurm-status-command") == "squeue"
    assert site.pop("slurm-init-seconds-before-status-checks") == 5
    for section in [site["default-resources"], *site["set-resources"].values()]:
        section.pop("slurm_account", None)
        section.pop("slurm_partition", None)
    for section in [doc["default-resources"], *doc["set-resources"].values()]:
        section.pop("slurm_account", None)
        section.pop("slurm_partition", None)
    assert site == doc


def test_documented_profile_submits_a_job(slurm_cluster, tracking_server, tmp_path):
    profile = site_profile(tmp_path / "profile")
    data = tmp_path / "data"
    config = write_config(tmp_path / "ci.yaml", data, tmp_path / "results")
    target = data / "synthetic" / "manifests" / "synthetic-val.json"  # rule synth: the default resources
    run = snakemake([str(target), "--profile", str(profile), "--configfile", str(config)],
                    slurm_env(slurm_cluster, tracking_server), log=tmp_path / "run.log")
    assert run.returncode == 0, run.output[-3000:]
    assert target.is_file()
    assert f"tracking store ready: {tracking_server.url}" in run.output  # the profile's tracking URI
    [job] = [j for j in slurm_cluster.all_jobs() if j["JobName"] == slurm_run_id(run.output)]
    defaults = yaml.safe_load((REPO / DOC_PROFILE / "config.yaml").read_text())["default-resources"]
    assert job["Comment"].startswith("rule_synth") and job["JobState"] == "COMPLETED"
    assert job["Account"] == "mpm-ci" and job["Partition"] == "ci"
    assert job["NumCPUs"] == str(defaults["cpus_per_task"])
    assert memory_mb(job["MinMemoryNode"]) == defaults["mem_mb"]
    hours, minutes = divmod(defaults["runtime"], 60)
    assert re.fullmatch(rf"0?{hours}:{minutes:02d}:00", job["TimeLimit"]), job["TimeLimit"]


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    """A second one-node cluster whose node declares one h100 (backed by /dev/null) and the CPUs and
    memory the profile's GPU rules ask for: only whether SLURM accepts those requests is under test."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM is not installed: {', '.join(missing)} not found (apt-get install -y {' '.join(PACKAGES)})")
    cluster = SlurmCluster(tmp_path_factory.mktemp("gpu-slurm") / "cluster", cpus=16, memory_mb=64000,
                           fake_gpus="h100:1", max_time_min=720)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_documented_gpu_rules_are_accepted_by_slurm(ci_dag, gpu_cluster, tracking_server, tmp_path):
    """The GPU rules' resources (gres, --exclusive, 16 CPUs, 64000 MB) as SLURM sees them.

    ``bench`` (a CPU timing, placed on the GPU node as the profile says) runs and records its
    allocation; ``evaluate`` with ``device: cuda`` is submitted with the profile's gres and nothing
    beside it (the rule's own ``gpu`` resource would add ``--gpus=1``, which SLURM refuses next to a
    typed gres), then fails in its command: this node has no CUDA device behind its h100.
    """
    profile = site_profile(tmp_path / "profile")
    results = tmp_path / "results"
    shutil.copytree(ci_dag.results / "models", results / "models", copy_function=shutil.copy2)
    config = write_config(tmp_path / "ci.yaml", ci_dag.data, results, evaluation__device="cuda")
    evaluation = results / "eval/synthetic/seg-t-demo/none/dense.json"
    bench = results / "bench/local/seg-t-demo/none/dense/bs1-math-float32-eager.json"
    run = snakemake([str(evaluation), str(bench), "--profile", str(profile), "--configfile", str(config)],
                    slurm_env(gpu_cluster, tracking_server), log=tmp_path / "run.log")
    assert "SLURM sbatch failed" not in run.output, run.output[-3000:]
    jobs = {rule_of(j): j for j in gpu_cluster.all_jobs() if j["JobName"] == slurm_run_id(run.output)}
    assert set(jobs) == {"bench", "evaluate"}
    for job in jobs.values():
        assert "gpu:h100:1" in job["TresPerNode"] and job["NumCPUs"] == "16" and memory_mb(job["MinMemoryNode"]) == 64000
    assert jobs["bench"]["JobState"] == "COMPLETED" and jobs["bench"]["OverSubscribe"] == "NO"  # --exclusive
    assert json.loads(bench.read_text())["target"]["slurm"]["job_id"] == jobs["bench"]["JobId"]
    assert run.returncode != 0 and jobs["evaluate"]["JobState"] == "FAILED" and not evaluation.exists()
