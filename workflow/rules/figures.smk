rule fig2:
    input:
        runs=f"{TABLES}/runs_fig2.csv",
        history=f"{TABLES}/history_fig2.csv",
        code=PLOT_CODE,
    output:
        **figure_output("fig2"),
    log:
        f"{LOGS}/figures/fig2.log",
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
        runs=f"{TABLES}/runs_fig3.csv",
        step_times=f"{TABLES}/step_times.csv",
        table1=f"{TABLES}/table1.csv",
        symmetrized=SYMMETRIZED_TABLE,
        code=PLOT_CODE,
    output:
        **figure_output("fig3"),
    log:
        f"{LOGS}/figures/fig3.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    shell:
        "python -m vitnqs figure fig3 --runs {input.runs} --step-times {input.step_times}"
        " --table1 {input.table1} --symmetrized {input.symmetrized}"
        " --scale {params.scale} --out {output.pdf} > {log} 2>&1"


rule fig4:
    input:
        maps=f"{TABLES}/attention_maps.csv",
        dependence=f"{TABLES}/attention_dependence.csv",
        code=PLOT_CODE,
    output:
        **figure_output("fig4"),
    log:
        f"{LOGS}/figures/fig4.log",
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
        f"{LOGS}/figures/fig5.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    shell:
        "python -m vitnqs figure fig5 --scale {params.scale} --out {output.pdf} > {log} 2>&1"
