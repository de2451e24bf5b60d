# Last-layer retraining on cached embeddings: one job per dataset x seed x
# ERM cell x method x held-out cell (methods: llr, dfr_*, cbllr_*, afr, afr_gamma0).


rule lastlayer:
    input:
        emb=res("{dataset}/seed{seed}/erm/{erm}/embeddings.npy"),
        head=res("{dataset}/seed{seed}/erm/{erm}/head.npz"),
        meta=res("{dataset}/metadata.csv"),
        split=res("{dataset}/seed{seed}/split.csv"),
        heldout=heldout_subset,
    output:
        res("{dataset}/seed{seed}/lastlayer/{erm}/{method}/{heldout}/metrics.json"),
    log:
        logp("lastlayer/{dataset}/seed{seed}/{erm}/{method}/{heldout}.log"),
    conda:
        "../../envs/llr.yaml"
    params:
        hp=method_params,
        heldout=heldout_args,
        epochs=erm_epochs,
    shell:
        "python -m llr lastlayer --embeddings {input.emb} --head {input.head} --metadata {input.meta} "
        "--split {input.split} {params.heldout} --method {wildcards.method} "
        "--params '{params.hp}' --seed {wildcards.seed} --epochs {params.epochs} --out {output} > {log} 2>&1"
