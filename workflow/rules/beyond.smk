# Beyond the paper (vitnqs.symmetry): the Table 1 runs' networks projected on the
# lattice's symmetries, sampled afresh (energy, variance, V-score), its own job per run so
# that finished runs gain it without rerunning; part of `all`. Symmetrized fine-tuning
# (`snakemake beyond`) is a separate stage, not part of `all`.
FINETUNE_STEPS = config["finetune_steps"]
SYMMETRIZED_TABLE = f"{TABLES}/symmetrized.csv"


rule symmetrize:
    input:
        summary=f"{RUN_DIR}/{rundir.SUMMARY}",
        params=f"{RUN_DIR}/{rundir.PARAMS}",
    output:
        f"{RUN_DIR}/{rundir.SYMMETRIZED}",
    log:
        "results/logs/symmetrize/{run}.log",
    benchmark:
        "results/benchmarks/symmetrize/{run}.tsv"
    conda:
        GPU_ENV
    threads: PRESET["threads"]
    resources:
        **run_placement(plan.ONE_DEVICE_GPUS),
        runtime=symmetrize_minutes,
        mem_mb=symmetrized_mem_mb,
    params:
        samples=lambda wildcards: symmetrized_plan(wildcards).samples,
        chunk=lambda wildcards: symmetrized_plan(wildcards).chunk_size,
        xla=XLA_THREAD_FLAGS,
        device=DEVICE_ARG,
    shell:
        'XLA_FLAGS="${{XLA_FLAGS:-}} {params.xla}" python -m vitnqs symmetrize'
        " --run-dir $(dirname {input.summary}) --samples {params.samples}"
        " --chunk-size {params.chunk} {params.device} --out {output} > {log} 2>&1"


rule finetune:
    input:
        summary=f"{RUN_DIR}/{rundir.SUMMARY}",
        params=f"{RUN_DIR}/{rundir.PARAMS}",
    output:
        summary=f"{FINETUNED_DIR}/{rundir.SUMMARY}",
        params=f"{FINETUNED_DIR}/{rundir.PARAMS}",
    log:
        "results/logs/finetune/{run}.log",
    retries: plan.FAILURE_RETRIES  # resumes from its checkpoint
    conda:
        GPU_ENV
    threads: PRESET["threads"]
    resources:
        **run_placement(plan.ONE_DEVICE_GPUS),
        runtime=finetune_minutes,
        mem_mb=finetune_mem_mb,
    params:
        steps=FINETUNE_STEPS,
        chunk=lambda wildcards: finetune_plan(wildcards).chunk_size,
        xla=XLA_THREAD_FLAGS,
        device=DEVICE_ARG,
    shell:
        'XLA_FLAGS="${{XLA_FLAGS:-}} {params.xla}" exec python -m vitnqs finetune'
        " --run-dir $(dirname {input.summary}) --steps {params.steps}"
        " --chunk-size {params.chunk} {params.device} --out $(dirname {output.summary})"
        " > {log} 2>&1"


rule finetuned_symmetrized:
    input:
        summary=f"{FINETUNED_DIR}/{rundir.SUMMARY}",
    output:
        f"{FINETUNED_DIR}/{rundir.SYMMETRIZED}",
    log:
        "results/logs/symmetrize/{run}.finetuned.log",
    conda:
        GPU_ENV
    threads: PRESET["threads"]
    resources:
        **run_placement(plan.ONE_DEVICE_GPUS),
        runtime=symmetrize_minutes,
        mem_mb=symmetrized_mem_mb,
    params:
        samples=lambda wildcards: symmetrized_plan(wildcards).samples,
        chunk=lambda wildcards: symmetrized_plan(wildcards).chunk_size,
        device=DEVICE_ARG,
    shell:
        "python -m vitnqs symmetrize --run-dir $(dirname {input.summary})"
        " --samples {params.samples} --chunk-size {params.chunk} {params.device}"
        " --out {output} > {log} 2>&1"


rule beyond:
    input:
        run_files(f"{rundir.FINETUNED}/{rundir.SYMMETRIZED}", "table1"),


rule symmetrized_table:
    input:
        sweeps=f"{TABLES}/sweeps_table1.csv",
        results=run_files(rundir.SYMMETRIZED, "table1"),
    output:
        report(
            SYMMETRIZED_TABLE, caption="../report/symmetrized.rst", category="Tables"
        ),
    log:
        f"{LOGS}/symmetrized_table.log",
    localrule: True
    conda:
        CPU_ENV
    params:
        # the folder of the run directories, from the first run's result
        runs_dir=lambda wildcards, input: os.path.dirname(
            os.path.dirname(input.results[0])
        ),
    shell:
        "python -m vitnqs collect --sweeps {input.sweeps} --runs-dir {params.runs_dir}"
        " --out-symmetrized {output} > {log} 2>&1"
