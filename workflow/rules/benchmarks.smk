rule benchmark_phases:
    output:
        csv=report(
            "results/benchmarks/step_phases.csv",
            caption="../report/step_phases.rst",
            category="Performance",
        ),
        md="results/benchmarks/step_phases.md",
    log:
        "results/logs/benchmark_phases.log",
    conda:
        GPU_ENV
    # all cores: no other job runs beside it, so its timings are of one run at a time
    threads: every_core()
    resources:
        gpu=1,
        runtime=lambda wildcards: int(PRESET["benchmark"]["max_minutes"] + 30),
    params:
        args=benchmark_args,
    shell:
        "python -m vitnqs benchmark {params.args} --out {output.csv}"
        " --markdown {output.md} > {log} 2>&1"
