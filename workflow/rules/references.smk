rule reference:
    output:
        "results/references/L{L}_J2{J2}.json",
    log:
        "results/logs/reference/L{L}_J2{J2}.log",
    localrule: True
    conda:
        CPU_ENV
    shell:
        "python -m vitnqs reference --L {wildcards.L} --J2 {wildcards.J2} --out {output} > {log} 2>&1"
