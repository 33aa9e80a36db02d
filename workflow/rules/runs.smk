rule optimize:
    input:
        # ancient: regenerating a reference file must not rerun finished optimizations
        reference=lambda wildcards: ancient(reference_file(wildcards)),
    output:
        summary=f"{RUN_DIR}/summary.json",
        history=f"{RUN_DIR}/history.csv",
        params=f"{RUN_DIR}/params.msgpack",
        init_params=f"{RUN_DIR}/init_params.msgpack",
    log:
        "results/logs/optimize/{run}.log",
    benchmark:
        "results/benchmarks/optimize/{run}.tsv"
    # a retried or requeued job resumes from the checkpoint kept in the run directory
    retries: 2
    conda:
        GPU_ENV
    threads: PRESET["threads"]
    resources:
        gpu=1,
        runtime=runtime_minutes,
        mem_mb=mem_mb,
    params:
        args=optimize_args,
        out=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "python -m vitnqs optimize {params.args} --reference {input.reference}"
        " --out {params.out} > {log} 2>&1"
