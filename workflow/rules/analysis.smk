rule attention_maps:
    input:
        summary=f"{RUN_DIR}/{rundir.SUMMARY}",
        params=f"{RUN_DIR}/{rundir.PARAMS}",
        init_params=f"{RUN_DIR}/{rundir.INIT_PARAMS}",
    output:
        maps="results/analysis/{run}/attention_maps.csv",
        dependence="results/analysis/{run}/attention_dependence.csv",
    log:
        "results/logs/attention_maps/{run}.log",
    conda:
        GPU_ENV
    # a few forward passes: no GPU, the site's default (CPU) partition
    resources:
        runtime=plan.ATTENTION_MAPS_MINUTES,
        mem_mb=plan.ATTENTION_MAPS_MB,
    params:
        samples=lambda wildcards: run_settings(wildcards)["samples"],
        run_dir=lambda wildcards, input: os.path.dirname(input.summary),
    shell:
        "python -m vitnqs attention-maps --run-dir {params.run_dir}"
        " --samples {params.samples} --seed 0 --out-maps {output.maps}"
        " --out-dependence {output.dependence} > {log} 2>&1"


rule step_times:
    input:
        f"{TABLES}/step_time_plan.csv",
    output:
        report(
            f"{TABLES}/step_times.csv",
            caption="../report/step_times.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/step_times.log",
    benchmark:
        f"{BENCHMARKS}/step_times.tsv"
    conda:
        GPU_ENV
    # every core: no other job runs beside the timings (the runs' own times shared them)
    threads: every_core()
    # where the runs run: one GPU of the GPU partition if they get GPUs, else none
    resources:
        **run_placement(plan.ONE_DEVICE_GPUS),
        runtime=step_times_minutes,
        mem_mb=step_times_mem_mb,
    params:
        run=f"{CHUNK_ARG} {DEVICE_ARG}",
        steps=plan.STEP_TIMES_STEPS,
    shell:
        "python -m vitnqs step-times --plan {input} --steps {params.steps} {params.run}"
        " --out {output} > {log} 2>&1"


rule shastry_sutherland:
    output:
        report(
            f"{TABLES}/shastry_sutherland.csv",
            caption="../report/shastry_sutherland.rst",
            category="Shastry-Sutherland mapping",
        ),
    log:
        f"{LOGS}/shastry_sutherland.log",
    localrule: True
    conda:
        CPU_ENV
    shell:
        "python -m vitnqs shastry-sutherland --out {output} > {log} 2>&1"
