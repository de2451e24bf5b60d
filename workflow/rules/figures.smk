# Tidy tables and figures. Each figure has its own collect rule, so naming a
# figure's file builds only that figure's chain. Plot rules list the plotting
# module as an input: editing it reruns the plots and nothing upstream.


rule collect:
    input:
        lambda wc: figure_runs(wc.fig),
    output:
        "results/tables/{fig}_runs.csv",
    wildcard_constraints:
        fig="fig[457]",
    log:
        "logs/collect/{fig}_runs.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} collect --kind runs --out {output} {input} > {log} 2>&1"


rule collect_logs:
    input:
        lambda wc: figure_logs(wc.fig),
    output:
        "results/tables/{fig}_epochs.csv",
    wildcard_constraints:
        fig="fig[26]",
    log:
        "logs/collect/{fig}_epochs.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} collect --kind logs --out {output} {input} > {log} 2>&1"


rule collect_analysis:
    input:
        lambda wc: analysis_files({"fig3_svm": "svm_convergence", "table1_margins": "margins"}[wc.name]),
    output:
        "results/tables/{name}.csv",
    wildcard_constraints:
        name="fig3_svm|table1_margins",
    log:
        "logs/collect/{name}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} collect --kind analysis --out {output} {input} > {log} 2>&1"


rule figure:
    input:
        data=lambda wc: FIGURE_DATA[wc.fig],
        code=os.path.join(SRC, "plots.py"),
    output:
        png=report("results/figures/{fig}.png", caption="../report/{fig}.rst", category="Figures"),
        pdf="results/figures/{fig}.pdf",
    wildcard_constraints:
        fig="fig[23567]",
    params:
        p=lambda wc: figure_params(wc.fig),
    log:
        "logs/figures/{fig}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} plot {wildcards.fig} --inputs {input.data} --out {output.png} {output.pdf} "
        "--params '{params.p}' > {log} 2>&1"


rule table1:
    input:
        data="results/tables/table1_margins.csv",
        code=os.path.join(SRC, "plots.py"),
    output:
        csv=report("results/tables/table1.csv", caption="../report/table1.rst", category="Tables"),
        md="results/tables/table1.md",
    log:
        "logs/tables/table1.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} plot table1 --inputs {input.data} --out {output.csv} {output.md} > {log} 2>&1"


rule table2:
    input:
        expand("results/{dataset}/metadata.csv", dataset=DATASETS),
    output:
        csv=report("results/tables/table2.csv", caption="../report/table2.rst", category="Tables"),
        md="results/tables/table2.md",
    log:
        "logs/tables/table2.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} table2 --metadata {input} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule paper_comparison:
    input:
        data=comparison_inputs(),
        code=os.path.join(SRC, "plots.py"),
    output:
        report("results/tables/paper_comparison.csv", caption="../report/paper_comparison.rst", category="Tables"),
    log:
        "logs/tables/paper_comparison.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} plot paper_comparison --inputs {input.data} --out {output} > {log} 2>&1"


rule report:
    input:
        data=report_inputs(),
        code=os.path.join(SRC, "report.py"),
    output:
        "results/report.html",
    log:
        "logs/report.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} plot report --inputs {input.data} --out {output} > {log} 2>&1"


rule fig4:
    input:
        runs="results/tables/fig4_runs.csv",
        code=os.path.join(SRC, "plots.py"),
    output:
        png=report("results/figures/fig4.png", caption="../report/fig4.rst", category="Figures"),
        pdf="results/figures/fig4.pdf",
        pearson="results/tables/fig4_pearson.csv",
    params:
        p=json.dumps({"ratios": [float(r) for r in RATIOS]}),
    log:
        "logs/figures/fig4.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} plot fig4 --inputs {input.runs} --out {output.png} {output.pdf} {output.pearson} "
        "--params '{params.p}' > {log} 2>&1"
