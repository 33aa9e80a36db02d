rule optimize:
    input:
        # ancient: regenerating a reference file must not rerun finished optimizations
        reference=lambda wildcards: ancient(reference_file(wildcards)),
        # none: sets a damaged finished run's failing file aside, so that it is redone
        damaged=set_aside_damaged_run,
    output:
        summary=f"{RUN_DIR}/{rundir.SUMMARY}",
        history=f"{RUN_DIR}/{rundir.HISTORY}",
        params=f"{RUN_DIR}/{rundir.PARAMS}",
        init_params=f"{RUN_DIR}/{rundir.INIT_PARAMS}",
    log:
        "results/logs/optimize/{run}.log",
    benchmark:
        "results/benchmarks/optimize/{run}.tsv"
    # A retried job resumes from the checkpoint kept in the run directory.
    retries: optimize_retries()
    conda:
        GPU_ENV
    threads: PRESET["threads"]
    resources:
        # gpus_per_run GPUs of the GPU partition; none for a CPU preset (unless opted in)
        **run_placement(RUN_GPUS),
        runtime=runtime_minutes,
        mem_mb=mem_mb,
        slurm_extra=slurm_warning,
    params:
        args=optimize_args,
        out=lambda wildcards, output: os.path.dirname(output.summary),
        xla=XLA_THREAD_FLAGS,
    # exec: SIGTERM at a time limit or preemption must reach the run itself (a shell in
    # between dies at once, and SLURM then kills the orphaned run without a checkpoint)
    shell:
        'XLA_FLAGS="${{XLA_FLAGS:-}} {params.xla}" exec python -m vitnqs optimize'
        " {params.args} --reference {input.reference}"
        " --out {params.out} > {log} 2>&1"
