# Dataset preparation, held-out carving and group-ratio subsets.


rule prepare_synthetic:
    output:
        meta=res("{dataset}/metadata.csv"),
        inputs=res("{dataset}/inputs.npy"),
    log:
        logp("prepare/{dataset}.log"),
    wildcard_constraints:
        dataset=alternatives(dataset_names(synthetic=True, modality="image")),
    conda:
        "../../envs/llr.yaml"
    params:
        p=lambda wc: GRID.prepare_params(wc.dataset),
    shell:
        "python -m llr prepare --dataset {wildcards.dataset} --params '{params.p}' "
        "--out-metadata {output.meta} --out-inputs {output.inputs} > {log} 2>&1"


rule prepare_synthetic_text:
    output:
        meta=res("{dataset}/metadata.csv"),
        inputs=res("{dataset}/tokens.npz"),
    log:
        logp("prepare/{dataset}.log"),
    wildcard_constraints:
        dataset=alternatives(dataset_names(synthetic=True, modality="text")),
    conda:
        "../../envs/llr.yaml"
    params:
        p=lambda wc: GRID.prepare_params(wc.dataset),
    shell:
        "python -m llr prepare --dataset {wildcards.dataset} --params '{params.p}' "
        "--out-metadata {output.meta} --out-inputs {output.inputs} > {log} 2>&1"


rule prepare_real:
    output:
        res("{dataset}/metadata.csv"),
    log:
        logp("prepare/{dataset}.log"),
    wildcard_constraints:
        dataset=alternatives(dataset_names(synthetic=False)),
    conda:
        "../../envs/llr.yaml"
    params:
        root=DATA_ROOT,
    shell:
        "python -m llr prepare --dataset {wildcards.dataset} --data-root {params.root} "
        "--out-metadata {output} > {log} 2>&1"


rule inputs_real:
    input:
        res("{dataset}/metadata.csv"),
    output:
        res("{dataset}/{kind}"),
    log:
        logp("inputs/{dataset}_{kind}.log"),
    benchmark:
        bench("inputs/{dataset}_{kind}.tsv")
    wildcard_constraints:
        dataset=alternatives(dataset_names(synthetic=False)),
        kind="inputs.npy|tokens.npz",
    conda:
        "../../envs/llr.yaml"
    params:
        root=DATA_ROOT,
        p=lambda wc: GRID.inputs_params(wc.dataset),
    shell:
        "python -m llr inputs --dataset {wildcards.dataset} --metadata {input} --data-root {params.root} "
        "--params '{params.p}' --out {output} > {log} 2>&1"


rule pretrain:
    output:
        res("{dataset}/pretrain/backbone.pt"),
    log:
        logp("pretrain/{dataset}.log"),
    benchmark:
        bench("pretrain/{dataset}.tsv")
    wildcard_constraints:
        dataset=alternatives(dataset_names(synthetic=True)),
    cache: cache_if_asked("pretrain")
    conda:
        "../../envs/llr.yaml"
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    params:
        p=lambda wc: GRID.pretrain_params(wc.dataset, cache_code_hash()),
        log_csv=res("{dataset}/pretrain/log.csv"),
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
