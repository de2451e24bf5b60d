# Dataset preparation, held-out carving and group-ratio subsets.


rule prepare_synthetic:
    output:
        meta=res("{dataset}/metadata.csv"),
        inputs=res("{dataset}/inputs.npy"),
    wildcard_constraints:
        dataset=synthetic_names("image"),
    params:
        p=lambda wc: prepare_params(wc.dataset),
    log:
        logp("prepare/{dataset}.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr prepare --dataset {wildcards.dataset} --params '{params.p}' "
        "--out-metadata {output.meta} --out-inputs {output.inputs} > {log} 2>&1"


rule prepare_synthetic_text:
    output:
        meta=res("{dataset}/metadata.csv"),
        inputs=res("{dataset}/tokens.npz"),
    wildcard_constraints:
        dataset=synthetic_names("text"),
    params:
        p=lambda wc: prepare_params(wc.dataset),
    log:
        logp("prepare/{dataset}.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr prepare --dataset {wildcards.dataset} --params '{params.p}' "
        "--out-metadata {output.meta} --out-inputs {output.inputs} > {log} 2>&1"


rule prepare_real:
    output:
        res("{dataset}/metadata.csv"),
    wildcard_constraints:
        dataset="waterbirds|celeba|civilcomments|multinli",
    params:
        root=DATA_ROOT,
    log:
        logp("prepare/{dataset}.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr prepare --dataset {wildcards.dataset} --data-root {params.root} "
        "--out-metadata {output} > {log} 2>&1"


rule inputs_real:
    input:
        res("{dataset}/metadata.csv"),
    output:
        res("{dataset}/{kind}"),
    wildcard_constraints:
        dataset="waterbirds|celeba|civilcomments|multinli",
        kind="inputs.npy|tokens.npz",
    params:
        root=DATA_ROOT,
        p=lambda wc: inputs_params(wc.dataset),
    log:
        logp("inputs/{dataset}_{kind}.log"),
    benchmark:
        bench("inputs/{dataset}_{kind}.tsv")
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr inputs --dataset {wildcards.dataset} --metadata {input} --data-root {params.root} "
        "--params '{params.p}' --out {output} > {log} 2>&1"


rule pretrain:
    output:
        res("{dataset}/pretrain/backbone.pt"),
    wildcard_constraints:
        dataset=synthetic_names(),
    params:
        p=lambda wc: pretrain_params(wc.dataset),
        log_csv=res("{dataset}/pretrain/log.csv"),
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    cache: cache_if_asked("pretrain")
    log:
        logp("pretrain/{dataset}.log"),
    benchmark:
        bench("pretrain/{dataset}.tsv")
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr pretrain --dataset {wildcards.dataset} --params '{params.p}' "
        "--out {output} --log-csv {params.log_csv} > {log} 2>&1"


no_benchmark_when_cached(rules.pretrain)


rule split:
    input:
        res("{dataset}/metadata.csv"),
    output:
        res("{dataset}/seed{seed}/split.csv"),
    log:
        logp("split/{dataset}/seed{seed}.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr split --dataset {wildcards.dataset} --metadata {input} --seed {wildcards.seed} "
        "--out {output} > {log} 2>&1"


rule subset:
    input:
        meta=res("{dataset}/metadata.csv"),
        split=res("{dataset}/seed{seed}/split.csv"),
    output:
        res("{dataset}/seed{seed}/subsets/{role}_ratio{ratio}.csv"),
    log:
        logp("subset/{dataset}/seed{seed}/{role}_ratio{ratio}.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr subset --dataset {wildcards.dataset} --metadata {input.meta} --split {input.split} "
        "--role {wildcards.role} --ratio {wildcards.ratio} --seed {wildcards.seed} --out {output} > {log} 2>&1"
