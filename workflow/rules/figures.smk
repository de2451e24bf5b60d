# Tidy tables and figures. Each figure has its own collect rule, so naming a
# figure's file builds only that figure's chain. Plot rules list the plotting
# sources (PLOT_CODE) as inputs: editing one reruns the plots and nothing upstream.


rule collect:
    input:
        lambda wc: GRID.figure_runs(wc.fig),
    output:
        res("tables/{fig}_runs.csv"),
    log:
        logp("collect/{fig}_runs.log"),
    wildcard_constraints:
        fig="fig[457]",
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr collect --kind runs --out {output} {input} > {log} 2>&1"


rule collect_logs:
    input:
        lambda wc: GRID.figure_logs(wc.fig),
    output:
        res("tables/{fig}_epochs.csv"),
    log:
        logp("collect/{fig}_epochs.log"),
    wildcard_constraints:
        fig="fig[26]",
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr collect --kind logs --out {output} {input} > {log} 2>&1"


rule collect_analysis:
    input:
        lambda wc: GRID.analysis_files({"fig3_svm": "svm_convergence", "table1_margins": "margins"}[wc.name]),
    output:
        res("tables/{name}.csv"),
    log:
        logp("collect/{name}.log"),
    wildcard_constraints:
        name="fig3_svm|table1_margins",
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr collect --kind analysis --out {output} {input} > {log} 2>&1"


# One rule per figure (a caption per file: `snakemake --report` reads
# captions from workflow/report/<figure>.rst and cannot take a wildcard there).
for _fig in ("fig2", "fig3", "fig5", "fig6", "fig7"):

    rule:
        name:
            f"figure_{_fig}"
        input:
            data=GRID.figure_data(_fig),
            code=PLOT_CODE,
        output:
            png=report(res(f"figures/{_fig}.png"), caption=f"../report/{_fig}.rst", category="Figures"),
            pdf=res(f"figures/{_fig}.pdf"),
        log:
            logp(f"figures/{_fig}.log"),
        conda:
            "../../envs/llr.yaml"
        params:
            fig=_fig,
            p=GRID.figure_params(_fig),
        shell:
            "python -m llr plot {params.fig} --inputs {input.data} --out {output.png} {output.pdf} "
            "--params '{params.p}' > {log} 2>&1"


rule fig4:
    input:
        runs=res("tables/fig4_runs.csv"),
        code=PLOT_CODE,
    output:
        png=report(res("figures/fig4.png"), caption="../report/fig4.rst", category="Figures"),
        pdf=res("figures/fig4.pdf"),
        pearson=report(res("tables/fig4_pearson.csv"), caption="../report/fig4_pearson.rst", category="Tables"),
    log:
        logp("figures/fig4.log"),
    conda:
        "../../envs/llr.yaml"
    params:
        p=GRID.figure_params("fig4"),
    shell:
        "python -m llr plot fig4 --inputs {input.runs} --out {output.png} {output.pdf} {output.pearson} "
        "--params '{params.p}' > {log} 2>&1"


rule table1:
    input:
        data=res("tables/table1_margins.csv"),
        code=PLOT_CODE,
    output:
        csv=report(res("tables/table1.csv"), caption="../report/table1.rst", category="Tables"),
        md=res("tables/table1.md"),
    log:
        logp("tables/table1.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr plot table1 --inputs {input.data} --out {output.csv} {output.md} > {log} 2>&1"


rule table2:
    input:
        expand(res("{dataset}/metadata.csv"), dataset=GRID.datasets),
    output:
        csv=report(res("tables/table2.csv"), caption="../report/table2.rst", category="Tables"),
        md=res("tables/table2.md"),
    log:
        logp("tables/table2.log"),
    conda:
        "../../envs/llr.yaml"
    shell:
        "python -m llr table2 --metadata {input} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule paper_comparison:
    input:
        data=GRID.comparison_inputs(),
        code=PLOT_CODE,
    output:
        report(res("tables/paper_comparison.csv"), caption="../report/paper_comparison.rst", category="Tables"),
    log:
        logp("tables/paper_comparison.log"),
    conda:
        "../../envs/llr.yaml"
    params:
        p=GRID.figure_params("paper_comparison"),
    shell:
        "python -m llr plot paper_comparison --inputs {input.data} --out {output} --params '{params.p}' > {log} 2>&1"
