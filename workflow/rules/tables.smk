rule sweeps_table:
    output:
        "results/tables/{plan}.csv",
    log:
        "results/logs/{plan}_table.log",
    wildcard_constraints:
        plan="|".join(PLANS),
    localrule: True
    conda:
        CPU_ENV
    params:
        # the table itself is the parameter: editing a sweep rewrites it, nothing else does
        table=lambda wildcards: PLANS[wildcards.plan],
    run:
        Path(output[0]).write_text(params.table)


rule collect:
    input:
        sweeps="results/tables/sweeps.csv",
        summaries=run_files("summary.json"),
        histories=run_files("history.csv"),
    output:
        runs=report(
            "results/tables/runs.csv", caption="../report/runs.rst", category="Tables"
        ),
        history="results/tables/history.csv",
    log:
        "results/logs/collect.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        runs_dir=lambda wildcards, input: os.path.dirname(
            os.path.dirname(input.summaries[0])
        ),
    shell:
        "python -m vitnqs collect --sweeps {input.sweeps} --runs-dir {params.runs_dir}"
        " --out-runs {output.runs} --out-history {output.history} > {log} 2>&1"


rule table1:
    input:
        runs="results/tables/runs.csv",
        step_times="results/tables/step_times.csv",
    output:
        csv=report(
            "results/tables/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        md="results/tables/table1.md",
        tex="results/tables/table1.tex",
    log:
        "results/logs/table1.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    shell:
        "python -m vitnqs table1 --runs {input.runs} --step-times {input.step_times}"
        " --scale {params.scale} --out results/tables/table1 > {log} 2>&1"


rule findings:
    input:
        runs="results/tables/runs.csv",
        dependence="results/tables/attention_dependence.csv",
        maps="results/tables/attention_maps.csv",
        step_times="results/tables/step_times.csv",
        code=FINDINGS_CODE,
    output:
        report(
            "results/tables/findings.csv",
            caption="../report/findings.rst",
            category="Tables",
        ),
    log:
        "results/logs/findings.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    # printed too: the verdicts belong in the output of the run that made them
    shell:
        "python -m vitnqs findings --runs {input.runs} --dependence {input.dependence}"
        " --maps {input.maps} --step-times {input.step_times} --scale {params.scale}"
        " --out {output} 2>&1 | tee {log}"


rule attention_tables:
    input:
        maps=expand("results/analysis/{run}/attention_maps.csv", run=run_ids("fig4")),
        dependence=expand(
            "results/analysis/{run}/attention_dependence.csv", run=run_ids("fig4")
        ),
    output:
        maps="results/tables/attention_maps.csv",
        dependence=report(
            "results/tables/attention_dependence.csv",
            caption="../report/attention_dependence.rst",
            category="Tables",
        ),
    log:
        "results/logs/attention_tables.log",
    localrule: True
    conda:
        CPU_ENV
    shell:
        "(python -m vitnqs concat {input.maps} --out {output.maps}"
        " && python -m vitnqs concat {input.dependence} --out {output.dependence}) > {log} 2>&1"
