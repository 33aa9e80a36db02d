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
        **run_placement(plan.ONE_DEVICE_GPUS),
        runtime=benchmark_minutes,
        mem_mb=benchmark_mem_mb,
    params:
        args=benchmark_args,
    shell:
        "python -m vitnqs benchmark {params.args} --out {output.csv}"
        " --markdown {output.md} > {log} 2>&1"
