rule plan_version:
    output:
        f"{TABLES}/plans/{{plan}}-{{digest}}.csv",
    log:
        f"{LOGS}/plans/{{plan}}-{{digest}}.log",
    wildcard_constraints:
        plan="|".join(PLANS),
        digest="[0-9a-f]{12}",
    localrule: True
    conda:
        CPU_ENV
    params:
        table=lambda wildcards: PLANS[wildcards.plan],
    run:
        Path(output[0]).write_text(params.table)


rule sweeps_table:
    input:
        # a new file when the plan changes: editing a sweep rewrites its table, and only
        # what depends on that table reruns
        lambda wildcards: plan_version(wildcards.plan),
    output:
        f"{TABLES}/{{plan}}.csv",
    log:
        f"{LOGS}/{{plan}}_table.log",
    wildcard_constraints:
        plan="|".join(PLANS),
    localrule: True
    conda:
        CPU_ENV
    shell:
        "cp {input} {output} 2> {log}"


# Every run (runs.csv, with any extra sweep) and the runs of one sweep
# (runs_<sweep>.csv): a figure or table waits only for the runs it draws.
rule collect:
    input:
        sweeps=f"{TABLES}/sweeps{{part}}.csv",
        summaries=lambda wildcards: run_files(rundir.SUMMARY, sweep_of(wildcards)),
        histories=lambda wildcards: run_files(rundir.HISTORY, sweep_of(wildcards)),
    output:
        runs=report(
            f"{TABLES}/runs{{part}}.csv",
            caption="../report/runs.rst",
            category="Tables",
        ),
        history=f"{TABLES}/history{{part}}.csv",
    log:
        f"{LOGS}/collect{{part}}.log",
    wildcard_constraints:
        part="|".join(["", *(f"_{name}" for name in PRESET["sweeps"])]),
    localrule: True
    conda:
        CPU_ENV
    params:
        runs_dir=os.path.dirname(RUN_DIR),
    shell:
        "python -m vitnqs collect --sweeps {input.sweeps} --runs-dir {params.runs_dir}"
        " --out-runs {output.runs} --out-history {output.history} > {log} 2>&1"


rule table1:
    input:
        runs=f"{TABLES}/runs_table1.csv",
        step_times=f"{TABLES}/step_times.csv",
        symmetrized=SYMMETRIZED_TABLE,
    output:
        csv=report(
            f"{TABLES}/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        md=f"{TABLES}/table1.md",
        tex=f"{TABLES}/table1.tex",
    log:
        f"{LOGS}/table1.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
        prefix=lambda wildcards, output: os.path.splitext(output.csv)[0],
    shell:
        "python -m vitnqs table1 --runs {input.runs} --step-times {input.step_times}"
        " --symmetrized {input.symmetrized} --scale {params.scale} --out {params.prefix}"
        " > {log} 2>&1"


rule findings:
    input:
        # the accuracy claim reads the fig2 sweep; the others read their own tables
        runs=f"{TABLES}/runs_fig2.csv",
        dependence=f"{TABLES}/attention_dependence.csv",
        maps=f"{TABLES}/attention_maps.csv",
        step_times=f"{TABLES}/step_times.csv",
        symmetrized=SYMMETRIZED_TABLE,
        code=FINDINGS_CODE,
    output:
        report(
            f"{TABLES}/findings.csv",
            caption="../report/findings.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/findings.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        scale=SCALE,
    # printed too: the verdicts belong in the output of the run that made them
    shell:
        "python -m vitnqs findings --runs {input.runs} --dependence {input.dependence}"
        " --maps {input.maps} --step-times {input.step_times}"
        " --symmetrized {input.symmetrized} --scale {params.scale}"
        " --out {output} 2>&1 | tee {log}"


rule attention_tables:
    input:
        maps=expand("results/analysis/{run}/attention_maps.csv", run=run_ids("fig4")),
        dependence=expand(
            "results/analysis/{run}/attention_dependence.csv", run=run_ids("fig4")
        ),
    output:
        maps=f"{TABLES}/attention_maps.csv",
        dependence=report(
            f"{TABLES}/attention_dependence.csv",
            caption="../report/attention_dependence.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/attention_tables.log",
    localrule: True
    conda:
        CPU_ENV
    shell:
        "(python -m vitnqs concat {input.maps} --out {output.maps}"
        " && python -m vitnqs concat {input.dependence} --out {output.dependence}) > {log} 2>&1"


# A target of another preset (figures/fig3.pdf while the preset is quick): refused when
# the jobs are planned, naming the preset that writes it.
rule other_preset:
    input:
        other_preset_output,
    output:
        "{path}",
    log:
        f"{LOGS}/other_preset/{{path}}.log",
    wildcard_constraints:
        path=OTHER_PRESET_OUTPUTS,
    localrule: True
    conda:
        CPU_ENV
    shell:
        "false > {log}"
