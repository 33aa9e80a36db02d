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
include: "workflow/rules/beyond.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/benchmarks.smk"
include: "workflow/rules/pilot.smk"


# The paper's outputs in figures/ and results/tables/, any other preset's below its name
# (figures/quick/, results/quick/tables/): see FIGURES and TABLES in common.smk.
rule all:
    input:
        expand(
            "{dir}/{fig}.{ext}",
            dir=FIGURES,
            fig=["fig2", "fig3", "fig4", "fig5"],
            ext=["pdf", "png"],
        ),
        expand("{dir}/table1.{ext}", dir=TABLES, ext=["csv", "md", "tex"]),
        expand(
            "{dir}/{name}.csv",
            dir=TABLES,
            name=[
                "runs",
                "history",
                "attention_dependence",
                "step_times",
                "findings",
                "shastry_sutherland",
            ],
        ),
        # beyond the paper: the Table 1 runs projected on the lattice symmetries
        SYMMETRIZED_TABLE,
