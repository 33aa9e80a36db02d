# The pilot (snakemake pilot): one short job per optimization run, at the run's full size,
# where and as the run will run (its plan, partition, GPUs, memory), before the sweep
# spends GPU-days. pilot.csv then sizes the optimization jobs' requests (common.smk).
PILOT_STEPS = config["pilot_steps"]  # the schema's default: vitnqs.plan.PILOT_STEPS


rule pilot_run:
    output:
        f"{TABLES}/pilot/{{run}}.csv",
    log:
        f"{LOGS}/pilot/{{run}}.log",
    benchmark:
        f"{BENCHMARKS}/pilot/{{run}}.tsv"
    conda:
        GPU_ENV
    threads: PRESET["threads"]
    resources:
        **run_placement(RUN_GPUS),
        runtime=pilot_minutes,
        mem_mb=mem_mb,
    params:
        args=optimize_args,
        steps=PILOT_STEPS,
        xla=XLA_THREAD_FLAGS,
    shell:
        'XLA_FLAGS="${{XLA_FLAGS:-}} {params.xla}" python -m vitnqs pilot {params.args}'
        " --timed-steps {params.steps} --out {output} > {log} 2>&1"


rule pilot:
    input:
        expand(f"{TABLES}/pilot/{{run}}.csv", run=run_ids()),
    output:
        report(PILOT_TABLE, caption="../report/pilot.rst", category="Pilot"),
    log:
        f"{LOGS}/pilot.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        cap="" if MAX_RUNTIME is None else f"--max-runtime {MAX_RUNTIME}",
        retries=f"--retries {optimize_retries_of_the_sweep()}",
    shell:
        "python -m vitnqs pilot-table {input} {params.cap} {params.retries}"
        " --out {output} 2>&1 | tee {log}"
