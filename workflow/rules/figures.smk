rule fig2:
    input:
        runs="results/tables/runs.csv",
        history="results/tables/history.csv",
        code=PLOT_CODE,
    output:
        **figure_output("fig2"),
    log:
        "results/logs/figures/fig2.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    shell:
        "python -m vitnqs figure fig2 --runs {input.runs} --history {input.history}"
        " --scale {params.scale} --out {output.pdf} > {log} 2>&1"


rule fig3:
    input:
        runs="results/tables/runs.csv",
        step_times="results/tables/step_times.csv",
        table1="results/tables/table1.csv",
        code=PLOT_CODE,
    output:
        **figure_output("fig3"),
    log:
        "results/logs/figures/fig3.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    shell:
        "python -m vitnqs figure fig3 --runs {input.runs} --step-times {input.step_times}"
        " --table1 {input.table1} --scale {params.scale} --out {output.pdf} > {log} 2>&1"


rule fig4:
    input:
        maps="results/tables/attention_maps.csv",
        dependence="results/tables/attention_dependence.csv",
        code=PLOT_CODE,
    output:
        **figure_output("fig4"),
    log:
        "results/logs/figures/fig4.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    shell:
        "python -m vitnqs figure fig4 --maps {input.maps} --dependence {input.dependence}"
        " --scale {params.scale} --out {output.pdf} > {log} 2>&1"


rule fig5:
    input:
        code=[*PLOT_CODE, *SHASTRY_SUTHERLAND_CODE],
    output:
        **figure_output("fig5"),
    log:
        "results/logs/figures/fig5.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    shell:
        "python -m vitnqs figure fig5 --scale {params.scale} --out {output.pdf} > {log} 2>&1"
