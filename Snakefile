# Reproduces Rende & Viteritti, Mach. Learn.: Sci. Technol. 6, 010501 (2025):
# config.yaml -> optimization runs -> tables -> Figures 2-5 and Table 1.
# Laptop: `snakemake --cores 2 all`; SLURM cluster: `snakemake --profile slurm all`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/references.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/benchmarks.smk"


rule all:
    input:
        expand(
            "figures/{fig}.{ext}",
            fig=["fig2", "fig3", "fig4", "fig5"],
            ext=["pdf", "png"],
        ),
        expand("results/tables/table1.{ext}", ext=["csv", "md", "tex"]),
        "results/tables/runs.csv",
        "results/tables/history.csv",
        "results/tables/attention_dependence.csv",
        "results/tables/step_times.csv",
        "results/tables/findings.csv",
        "results/tables/shastry_sutherland.csv",
