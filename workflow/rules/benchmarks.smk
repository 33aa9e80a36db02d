rule benchmark_phases:
    output:
        csv=report(
            f"{BENCHMARKS}/step_phases.csv",
            caption="../report/step_phases.rst",
            category="Performance",
        ),
        md=f"{BENCHMARKS}/step_phases.md",
    log:
        f"{LOGS}/benchmark_phases.log",
    conda:
        GPU_ENV
    # all cores: no other job runs beside it, so its timings are of one run at a time
    threads: every_core()
    # where the runs run: one GPU of the GPU partition if they get GPUs, else none
    resources:
        **run_placement(1),
        runtime=lambda wildcards: capped_minutes(
            benchmark_section()["max_minutes"] + 30
        ),
        mem_mb=lambda wildcards: timing_mem_mb(
            benchmark_configs(),
            benchmark_section()["chunk_size"],
            benchmark_section().get("sr_modes", ["auto"]),
        ),
    params:
        args=benchmark_args,
    shell:
        "python -m vitnqs benchmark {params.args} --out {output.csv}"
        " --markdown {output.md} > {log} 2>&1"
