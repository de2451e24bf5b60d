# Tidy tables and figures. Each figure has its own collect rule, so naming a
# figure's file builds only that figure's chain. Plot rules list the plotting
# module as an input: editing it reruns the plots and nothing upstream.


rule collect:
    input:
        lambda wc: figure_runs(wc.fig),
    output:
        "results/tables/{fig}_runs.csv",
    wildcard_constraints:
        fig="fig[2-7]",
    log:
        "logs/collect/{fig}.log",
    conda:
        "../../envs/llr.yaml"
    shell:
        "{PY} collect --out {output} {input} > {log} 2>&1"


rule fig4:
    input:
        runs="results/tables/fig4_runs.csv",
        code=os.path.join(SRC, "plots.py"),
    output:
        png="results/figures/fig4.png",
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
