# Last-layer retraining on cached embeddings: one job per dataset x seed x
# ERM cell x method x held-out cell (methods: llr, dfr_*, cbllr_*, afr).


rule lastlayer:
    input:
        emb="results/{dataset}/seed{seed}/erm/{erm}/embeddings.npy",
        head="results/{dataset}/seed{seed}/erm/{erm}/head.npz",
        meta="results/{dataset}/metadata.csv",
        split="results/{dataset}/seed{seed}/split.csv",
        heldout=heldout_subset,
    output:
        "results/{dataset}/seed{seed}/lastlayer/{erm}/{method}/{heldout}/metrics.json",
    params:
        hp=method_params,
        heldout=lambda wc, input: input.heldout[0] if input.heldout else "full",
        epochs=erm_epochs,
    log:
        "logs/lastlayer/{dataset}/seed{seed}/{erm}/{method}/{heldout}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} lastlayer --embeddings {input.emb} --head {input.head} --metadata {input.meta} "
        "--split {input.split} --heldout {params.heldout} --method {wildcards.method} "
        "--params '{params.hp}' --seed {wildcards.seed} --epochs {params.epochs} --out {output} > {log} 2>&1"
