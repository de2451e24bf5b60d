# Beyond the paper: Figure 8 (every last-layer method on one axis, the
# effective group ratio it trains with) and the caching ablation (LLR on
# cached eval-mode embeddings vs the authors' LLR through the frozen network
# in training mode). Cells and settings: llr.experiments; input functions: common.smk.


rule lastlayer_matched:
    input:
        emb=res("{dataset}/seed{seed}/erm/{erm}/embeddings.npy"),
        head=res("{dataset}/seed{seed}/erm/{erm}/head.npz"),
        meta=res("{dataset}/metadata.csv"),
        split=res("{dataset}/seed{seed}/split.csv"),
        heldout=heldout_subset,
    output:
        res("{dataset}/seed{seed}/lastlayer_matched/{erm}/{method}/{heldout}/metrics.json"),
    log:
        logp("lastlayer_matched/{dataset}/seed{seed}/{erm}/{method}/{heldout}.log"),
    conda:
        "../../envs/llr.yaml"
    params:
        hp=ablation_hp,
        heldout=heldout_args,
        epochs=erm_epochs,
    shell:
        "python -m llr lastlayer --embeddings {input.emb} --head {input.head} --metadata {input.meta} "
        "--split {input.split} {params.heldout} --method {wildcards.method} "
        "--params '{params.hp}' --seed {wildcards.seed} --epochs {params.epochs} --out {output} > {log} 2>&1"


rule lastlayer_backbone:
    input:
        model=res("{dataset}/seed{seed}/erm/{erm}/model.pt"),
        meta=res("{dataset}/metadata.csv"),
        split=res("{dataset}/seed{seed}/split.csv"),
        inputs=inputs_file,
        pretrained=pretrained_file,
        heldout=heldout_subset,
    output:
        res("{dataset}/seed{seed}/lastlayer_backbone/{erm}/{method}/{heldout}/metrics.json"),
    log:
        logp("lastlayer_backbone/{dataset}/seed{seed}/{erm}/{method}/{heldout}.log"),
    benchmark:
        bench("lastlayer_backbone/{dataset}/seed{seed}/{erm}/{method}/{heldout}.tsv")
    conda:
        "../../envs/llr.yaml"
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    params:
        hp=ablation_hp,
        erm=erm_params,
        heldout=heldout_args,
        epochs=erm_epochs,
        pretrained=lambda wc, input: f"--pretrained {input.pretrained}" if input.pretrained else "",
    shell:
        "python -m llr lastlayer_backbone --dataset {wildcards.dataset} --metadata {input.meta} "
        "--split {input.split} --inputs {input.inputs} --model {input.model} {params.pretrained} "
        "{params.heldout} --method {wildcards.method} --params '{params.hp}' --erm-params '{params.erm}' "
        "--seed {wildcards.seed} --epochs {params.epochs} --out {output} > {log} 2>&1"


rule fig8_table:
    input:
        GRID.fig8_files(),
    output:
        table=report(res("tables/fig8_effective_ratio.csv"), caption="../report/fig8.rst", category="Tables"),
        corr=res("tables/fig8_correlation.csv"),
    log:
        logp("tables/fig8_table.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr plot fig8_table --inputs {input} --out {output.table} {output.corr} > {log} 2>&1"


rule fig8:
    input:
        data=res("tables/fig8_effective_ratio.csv"),
        code=PLOT_CODE,
    output:
        png=report(res("figures/fig8.png"), caption="../report/fig8.rst", category="Figures"),
        pdf=res("figures/fig8.pdf"),
    log:
        logp("figures/fig8.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr plot fig8 --inputs {input.data} --out {output.png} {output.pdf} > {log} 2>&1"


rule ablation_caching_table:
    input:
        GRID.ablation_files(),
    output:
        table=report(res("tables/ablation_caching.csv"), caption="../report/ablation_caching.rst", category="Tables"),
        summary=res("tables/ablation_caching_summary.csv"),
    log:
        logp("tables/ablation_caching_table.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr plot ablation_caching_table --inputs {input} --out {output.table} {output.summary} "
        "> {log} 2>&1"


rule ablation_caching:
    input:
        data=res("tables/ablation_caching.csv"),
        code=PLOT_CODE,
    output:
        png=report(res("figures/ablation_caching.png"), caption="../report/ablation_caching.rst", category="Figures"),
        pdf=res("figures/ablation_caching.pdf"),
    log:
        logp("figures/ablation_caching.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr plot ablation_caching --inputs {input.data} --out {output.png} {output.pdf} > {log} 2>&1"
