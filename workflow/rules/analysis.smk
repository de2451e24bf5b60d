# Analyses on cached embeddings of the section-2 ERM cell (train_none, with
# the section-2 architecture where the config names one): SVM convergence
# (Figure 3) and margins of LLR heads (Table 1).


rule svm_convergence:
    input:
        emb=analysis_emb,
        meta=res("{dataset}/metadata.csv"),
        split=res("{dataset}/seed{seed}/split.csv"),
    output:
        res("{dataset}/seed{seed}/analysis/svm_convergence.csv"),
    log:
        logp("analysis/{dataset}/seed{seed}/svm_convergence.log"),
    conda:
        "../../envs/llr.yaml"
    params:
        epochs=lambda wc: 10 * llr_epochs(wc),
    shell:
        "python -m llr svm --dataset {wildcards.dataset} --embeddings {input.emb} --metadata {input.meta} "
        "--split {input.split} --epochs {params.epochs} --seed {wildcards.seed} --out {output} > {log} 2>&1"


rule margins:
    input:
        emb=analysis_emb,
        meta=res("{dataset}/metadata.csv"),
        split=res("{dataset}/seed{seed}/split.csv"),
    output:
        res("{dataset}/seed{seed}/analysis/margins.csv"),
    log:
        logp("analysis/{dataset}/seed{seed}/margins.log"),
    conda:
        "../../envs/llr.yaml"
    params:
        epochs=llr_epochs,
        checkpoints=GRID.margin_checkpoints(),
    shell:
        "python -m llr margins --dataset {wildcards.dataset} --embeddings {input.emb} --metadata {input.meta} "
        "--split {input.split} --epochs {params.epochs} --checkpoints {params.checkpoints} "
        "--seed {wildcards.seed} --out {output} > {log} 2>&1"
