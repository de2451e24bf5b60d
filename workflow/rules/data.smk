# Dataset preparation, held-out carving and group-ratio subsets.

# Between-workflow output cache of the training rules (pretrain, erm): on with
# `--cache pretrain erm` and $SNAKEMAKE_OUTPUT_CACHE (docs/cluster.md). The
# cache key hashes a rule's params, its source inputs and its upstream steps,
# not its wildcards: a cached rule's params must name its cell. Snakemake
# refuses a benchmark on a cached rule, so a cached rule runs without one.
def cache_if_asked(rule):
    asked = workflow.workflow_settings.cache
    return "omit-software" if asked is not None and (not asked or rule in asked) else False


def no_benchmark_when_cached(proxy):
    if proxy.rule.cache and proxy.rule.cache.output:
        proxy.rule._benchmark = None


rule prepare_synthetic:
    output:
        meta="results/{dataset}/metadata.csv",
        inputs="results/{dataset}/inputs.npy",
    wildcard_constraints:
        dataset="synth_waterbirds",
    params:
        p=lambda wc: dataset_params(wc.dataset),
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} prepare --dataset {wildcards.dataset} --params '{params.p}' "
        "--out-metadata {output.meta} --out-inputs {output.inputs} > {log} 2>&1"


rule prepare_synthetic_text:
    output:
        meta="results/{dataset}/metadata.csv",
        inputs="results/{dataset}/tokens.npz",
    wildcard_constraints:
        dataset="synth_multinli",
    params:
        p=lambda wc: dataset_params(wc.dataset),
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} prepare --dataset {wildcards.dataset} --params '{params.p}' "
        "--out-metadata {output.meta} --out-inputs {output.inputs} > {log} 2>&1"


rule prepare_real:
    output:
        "results/{dataset}/metadata.csv",
    wildcard_constraints:
        dataset="waterbirds|celeba|civilcomments|multinli",
    params:
        root=DATA_ROOT,
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} prepare --dataset {wildcards.dataset} --data-root {params.root} "
        "--out-metadata {output} > {log} 2>&1"


rule inputs_real:
    input:
        "results/{dataset}/metadata.csv",
    output:
        "results/{dataset}/{kind}",
    wildcard_constraints:
        dataset="waterbirds|celeba|civilcomments|multinli",
        kind="inputs.npy|tokens.npz",
    params:
        root=DATA_ROOT,
        p=lambda wc: json.dumps(config["erm"][wc.dataset], sort_keys=True),
    log:
        "logs/inputs/{dataset}_{kind}.log",
    benchmark:
        "benchmarks/out/inputs/{dataset}_{kind}.tsv"
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} inputs --dataset {wildcards.dataset} --metadata {input} --data-root {params.root} "
        "--params '{params.p}' --out {output} > {log} 2>&1"


rule pretrain:
    output:
        "results/{dataset}/pretrain/backbone.pt",
    wildcard_constraints:
        dataset="synth_waterbirds|synth_multinli",
    params:
        p=lambda wc: dataset_params(wc.dataset),
        log_csv="results/{dataset}/pretrain/log.csv",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    cache: cache_if_asked("pretrain")
    log:
        "logs/pretrain/{dataset}.log",
    benchmark:
        "benchmarks/out/pretrain/{dataset}.tsv"
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} pretrain --dataset {wildcards.dataset} --params '{params.p}' "
        "--out {output} --log-csv {params.log_csv} > {log} 2>&1"


no_benchmark_when_cached(rules.pretrain)


rule split:
    input:
        "results/{dataset}/metadata.csv",
    output:
        "results/{dataset}/seed{seed}/split.csv",
    log:
        "logs/split/{dataset}/seed{seed}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} split --dataset {wildcards.dataset} --metadata {input} --seed {wildcards.seed} "
        "--out {output} > {log} 2>&1"


rule subset:
    input:
        meta="results/{dataset}/metadata.csv",
        split="results/{dataset}/seed{seed}/split.csv",
    output:
        "results/{dataset}/seed{seed}/subsets/{role}_ratio{ratio}.csv",
    log:
        "logs/subset/{dataset}/seed{seed}/{role}_ratio{ratio}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} subset --dataset {wildcards.dataset} --metadata {input.meta} --split {input.split} "
        "--role {wildcards.role} --ratio {wildcards.ratio} --seed {wildcards.seed} --out {output} > {log} 2>&1"
