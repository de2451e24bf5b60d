# ERM finetuning, one job per dataset x seed x ERM cell. The job's final
# evaluation pass writes the penultimate embeddings of every example, so the
# backbone runs over the data once per cell.


rule erm:
    input:
        meta=res("{dataset}/metadata.csv"),
        split=res("{dataset}/seed{seed}/split.csv"),
        inputs=inputs_file,
        subset=erm_subset,
        pretrained=pretrained_file,
    output:
        embeddings=res("{dataset}/seed{seed}/erm/{erm}/embeddings.npy"),
        head=res("{dataset}/seed{seed}/erm/{erm}/head.npz"),
        metrics=res("{dataset}/seed{seed}/erm/{erm}/metrics.json"),
        log_csv=res("{dataset}/seed{seed}/erm/{erm}/log.csv"),
        model=res("{dataset}/seed{seed}/erm/{erm}/model.pt"),
    log:
        logp("erm/{dataset}/seed{seed}/{erm}.log"),
    benchmark:
        bench("erm/{dataset}/seed{seed}/{erm}.tsv")
    cache: cache_if_asked("erm")  # the key includes params.outdir (the cell) and the code hash
    conda:
        "../../envs/llr.yaml"
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    params:
        p=erm_params,
        subset=lambda wc, input: f"--subset {input.subset}" if input.subset else "",
        pretrained=lambda wc, input: f"--pretrained {input.pretrained}" if input.pretrained else "",
        outdir=lambda wc, output: os.path.dirname(output.metrics),
    shell:
        "python -m llr erm --dataset {wildcards.dataset} --metadata {input.meta} --split {input.split} "
        "--inputs {input.inputs} {params.subset} {params.pretrained} --cell {wildcards.erm} "
        "--seed {wildcards.seed} --params '{params.p}' --outdir {params.outdir} > {log} 2>&1"


no_benchmark_when_cached(rules.erm)
