# Analyses on cached embeddings of the standard ERM cell (train_none):
# SVM convergence (Figure 3) and margins of LLR heads (Table 1).


rule svm_convergence:
    input:
        emb="results/{dataset}/seed{seed}/erm/train_none/embeddings.npy",
        meta="results/{dataset}/metadata.csv",
        split="results/{dataset}/seed{seed}/split.csv",
    output:
        "results/{dataset}/seed{seed}/analysis/svm_convergence.csv",
    params:
        epochs=lambda wc: 10 * llr_epochs(wc),
    log:
        "logs/analysis/{dataset}/seed{seed}/svm_convergence.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} svm --dataset {wildcards.dataset} --embeddings {input.emb} --metadata {input.meta} "
        "--split {input.split} --epochs {params.epochs} --seed {wildcards.seed} --out {output} > {log} 2>&1"


rule margins:
    input:
        emb="results/{dataset}/seed{seed}/erm/train_none/embeddings.npy",
        meta="results/{dataset}/metadata.csv",
        split="results/{dataset}/seed{seed}/split.csv",
    output:
        "results/{dataset}/seed{seed}/analysis/margins.csv",
    params:
        epochs=llr_epochs,
        checkpoints=config.get("margins", {}).get("checkpoints", 10),
    log:
        "logs/analysis/{dataset}/seed{seed}/margins.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} margins --dataset {wildcards.dataset} --embeddings {input.emb} --metadata {input.meta} "
        "--split {input.split} --epochs {params.epochs} --checkpoints {params.checkpoints} "
        "--seed {wildcards.seed} --out {output} > {log} 2>&1"
