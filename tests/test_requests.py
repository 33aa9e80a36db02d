"""The jobs' requests: computed in vitnqs.plan, against hand-computed values; the rule
files hold no number of their own."""

import io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from vitnqs import plan, resources
from vitnqs.config import RunConfig, RunOptions

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]

# the quick preset's 6 x 6 T5 run and the paper's 10 x 10 one
QUICK = RunConfig(attention="t5", L=6, J2=0.5, layers=1, d=16, heads=4, samples=128, steps=300)
PAPER = RunConfig(attention="t5", L=10, J2=0.5, layers=4, samples=6000, steps=5000)


def test_the_planning_module_imports_no_jax_netket_or_snakemake():
    code = (
        "import sys, vitnqs.plan; "
        "assert not {'jax', 'netket', 'snakemake'} & set(sys.modules), 'imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_run_time_and_memory_by_hand():
    # quick: 8.3e-6 s x 128 samples x 36 sites x 1 layer = 0.0382464 s per step, x 300
    # steps = 11.47 s; 1.5 x 11.47 s / 60 + 10 min = 10.29 min
    assert plan.runtime_minutes(QUICK, 1, 1, None) == 10
    assert plan.runtime_minutes(QUICK, 1, 2, None) == 20  # 20.57
    assert plan.runtime_minutes(QUICK, 1, 2, 15) == 15
    # paper: 8.3e-6 x 6000 x 100 x 4 = 19.92 s per step, x 5000 = 99,600 s; 1.5 x 1660
    # min + 10 = 2500 min; on 2 devices half the steps' time
    assert plan.runtime_minutes(PAPER, 1, 1, None) == 2500
    assert plan.runtime_minutes(PAPER, 1, 2, 2880) == 2880
    assert plan.runtime_minutes(PAPER, 2, 1, None) == 1255
    # a pilot's projection of 2 h: 1.3 x 120 + 10
    assert plan.runtime_minutes(PAPER, 1, 1, None, {"projected_hours": 2.0}) == 166
    # memory: 1.2 x devices x the estimate, or 1.3 x the pilot's peak
    assert plan.job_memory_mb(1e9, 1) == 1200 and plan.job_memory_mb(1e9, 2) == 2400
    assert plan.job_memory_mb(1e9, 1, {"peak_host_bytes": 2e9}) == 2600


def test_retries_and_the_slurm_warning_by_hand():
    configs, rows = [QUICK, PAPER], [None, None]
    # the longest run, 2500 min, needs ceil(2500 / 600) = 5 jobs under a 600-min cap
    assert plan.run_retries(configs, 1, 600, rows) == 4 + 2
    assert plan.run_retries(configs, 1, 2880, rows) == plan.run_retries(configs, 1, None, rows) == 2
    # a quarter of the job, within 30 s and 300 s
    assert plan.slurm_warning(600) == "--signal=URG@300"
    assert plan.slurm_warning(10) == "--signal=URG@150"
    assert plan.slurm_warning(2) == "--signal=URG@30"
    assert plan.max_runtime_error(2) is None and plan.max_runtime_error(None) is None
    for bad in (1, "600", 2.5):
        assert "max_runtime must be a number of minutes >= 2" in plan.max_runtime_error(bad)


def test_timing_jobs_by_hand():
    # pilot: 21 steps (the compiling one and 20 timed) at 19.92 s = 418.32 s;
    # 1.5 x 418.32 / 60 + 10 = 20.46 min
    assert plan.pilot_minutes(PAPER, 1, 20, 1, None) == 20
    assert plan.pilot_minutes(PAPER, 1, 20, 2, 30) == 30
    assert plan.pilot_minutes(PAPER, 1, 20, 1, None, {"median_step_s": 60.0}) == 41  # 31.5 + 10
    # step_times: 12 steps per run (10 timed, 2 to compile and warm up), 2 min each run,
    # + 10: quick 12 x 0.0382464 s, 4 x 4 smoke-size 12 x 8.3e-6 x 64 x 16 s
    small = RunConfig(attention="t5", L=4, J2=0.5, layers=1, d=8, heads=2, samples=64)
    assert plan.step_times_minutes([QUICK, small], [None, None], 1, None) == 14  # 14.014
    assert plan.step_times_minutes([QUICK, small], [None, None], 2, None) == 28
    # a pilot's 10 s per step of the first: 1.5 x (120 + 0.10) s / 60 + 4 + 10 = 17.0
    rows = [{"median_step_s": 10.0}, None]
    assert plan.step_times_minutes([QUICK, small], rows, 1, None) == 17
    assert plan.step_times_minutes([QUICK, small], rows, 2, 20) == 20


def test_timing_memory_and_the_benchmark_by_hand():
    gpu, cpu = RunOptions(device="gpu"), RunOptions(device="cpu")
    assert plan.timing_memory_mb([PAPER], gpu, 500) == 8000
    assert plan.timing_memory_mb([QUICK], cpu, None) == 2000  # 1.2 x 1.6 GB < 2 GB
    # on the CPU: 1.2 x the largest estimate (the hungrier mode with no device memory)
    paper_bytes = resources.run_memory(PAPER, "symmetric", 500, 1).total
    assert plan.timing_memory_mb([QUICK, PAPER], cpu, 500) == int(1.2 * paper_bytes / 1e6)
    bench = {"L": [4, 6], "samples": 256, "chunk_size": 128, "max_minutes": 90}
    configs = plan.benchmark_configs(bench)
    assert [(c.attention, c.L, c.J2, c.layers, c.d) for c in configs] == [
        ("t5", 4, 0.5, 4, 60),
        ("t5", 6, 0.5, 4, 60),
    ]
    small = plan.benchmark_configs({**bench, "model": {"d": 8, "heads": 2, "layers": 1}})
    assert [(c.layers, c.d, c.heads) for c in small] == [(1, 8, 2)] * 2
    assert plan.benchmark_minutes(bench, None) == 120 and plan.benchmark_minutes(bench, 100) == 100
    explicit = resources.run_memory(configs[1], "explicit", 128, 1).total
    assert plan.benchmark_memory_mb({**bench, "sr_modes": ["explicit"]}, cpu) == int(
        1.2 * explicit / 1e6
    )


def test_fixed_requests_and_gpus():
    assert plan.attempt_minutes(plan.SYMMETRIZE_MINUTES, 1, None) == 60
    assert plan.attempt_minutes(plan.SYMMETRIZE_MINUTES, 2, 90) == 90
    assert plan.attempt_minutes(plan.FINETUNE_MINUTES, 2, None) == 240
    assert (plan.ATTENTION_MAPS_MINUTES, plan.ATTENTION_MAPS_MB) == (30, 4000)
    assert plan.run_gpus(RunOptions(device="cpu", n_devices=2), False) == 0
    assert plan.run_gpus(RunOptions(device="cpu", n_devices=2), True) == 2
    assert plan.run_gpus(RunOptions(device="gpu", n_devices=2), False) == 2


def test_finetune_plans_its_own_samples_and_sr_step():
    """The fine-tuning samples M per step and solves SR on them (NetKet's on-the-fly
    kernel, M < P: one chunk's Jacobian); its chunk and activations are the symmetrized
    evaluation's (4 M samples, no SR)."""
    evaluation = plan.plan_symmetrized(QUICK, RunOptions())
    finetune = plan.plan_finetune(QUICK, RunOptions())
    M, P = QUICK.samples, QUICK.n_parameters
    assert (finetune.samples, evaluation.samples) == (M, 4 * M)
    assert finetune.chunk_size == evaluation.chunk_size == 8  # 4 M / 64 evaluations
    assert (finetune.sr_mode, finetune.use_ntk) == ("onthefly", True)
    assert finetune.memory.jacobian == 2 * 8 * P * 8  # one chunk of 8 configurations
    assert finetune.memory.kernel == (2 * M) ** 2 * 8
    assert finetune.memory.activations == evaluation.memory.activations
    # by hand: P = 4036; chunk 8 x 64 evaluations x 145 connections x 9 patches x
    # (4 d + heads x 9) x 8 B = 0.535 GB, Jacobian 0.5 MB, kernel 0.5 MB, 1 GB baseline
    assert P == 4036
    activations = 8 * 64 * 145 * 9 * (4 * 16 + 4 * 9) * 8
    total = 2 * 8 * 4036 * 8 + 256**2 * 8 + activations + 1e9
    assert finetune.memory.total == total
    assert plan.job_memory_mb(finetune.memory.total, 1) == 1842
    assert plan.job_memory_mb(evaluation.memory.total, 1) == 1841


def _directive_blocks(text: str, directive: str) -> list[list[tokenize.TokenInfo]]:
    """The tokens of each `directive:` of a rule file's text, inline or indented, without
    comments (a rule file tokenizes as Python)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    blocks = []
    for i, token in enumerate(tokens):
        at_line_start = not token.line[: token.start[1]].strip()
        if not (token.type == tokenize.NAME and token.string == directive and at_line_start):
            continue
        if tokens[i + 1].string != ":":
            continue
        block, depth, j = [], 0, i + 2
        while j < len(tokens):
            t = tokens[j]
            if t.type == tokenize.INDENT:
                depth += 1
            elif t.type == tokenize.DEDENT:
                depth -= 1
                if depth <= 0:
                    break
            elif t.type == tokenize.NEWLINE and depth == 0 and block:
                break  # the inline form ends with its line
            elif t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
                block.append(t)
            j += 1
        blocks.append(block)
    return blocks


def _numbers_and_arithmetic(block: list[tokenize.TokenInfo]) -> list[str]:
    """Numeric literals and arithmetic operators of a block (``**`` unpacking a dict of
    resources aside)."""
    found = []
    for k, t in enumerate(block):
        if t.type == tokenize.NUMBER:
            found.append(t.string)
        elif t.type == tokenize.OP and t.string in {"+", "-", "*", "/", "//", "%", "@"}:
            found.append(t.string)
        elif t.type == tokenize.OP and t.string == "**":
            if k > 0 and block[k - 1].string not in {",", "(", "{"}:
                found.append(t.string)
    return found


def _offences(directive):
    return {
        f"{path.name}:{block[0].start[0]}": found
        for path in RULE_FILES
        for block in _directive_blocks(path.read_text(), directive)
        if block and (found := _numbers_and_arithmetic(block))
    }


@pytest.mark.parametrize("directive", ["resources", "retries", "threads"])
def test_rules_hold_no_number_of_their_own(directive):
    """A job's requests (time, memory, GPUs, retries) come from vitnqs.plan: no numeric
    literal or margin arithmetic in any rule's `resources:`, `retries:` or `threads:`."""
    blocks = [b for path in RULE_FILES for b in _directive_blocks(path.read_text(), directive)]
    assert blocks, directive
    assert not _offences(directive), _offences(directive)


def test_the_rule_files_hold_no_float_literal():
    """Margins and unit conversions (1.2, 1.5, 1e6) belong to vitnqs.plan: no float
    literal in the code of the rule files (comments and strings aside)."""
    floats = [
        f"{path.name}:{t.start[0]}: {t.string}"
        for path in RULE_FILES
        for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        if t.type == tokenize.NUMBER and not t.string.isdigit()
    ]
    assert not floats, floats


def test_block_parser_finds_numbers():
    """The parser of the test above sees an inline value, an indented block and
    arithmetic inside a lambda (the forms of the rule files before vitnqs.plan)."""
    text = (
        "rule a:\n    retries: 2  # resumes\n    resources:\n        **run_placement(x),\n"
        "        runtime=lambda wildcards, attempt: capped(attempt * SIXTY),\n"
        "        mem_mb=MB,\n    shell:\n        'echo 1'\n"
    )
    (retries,) = _directive_blocks(text, "retries")
    (block,) = _directive_blocks(text, "resources")
    assert _numbers_and_arithmetic(retries) == ["2"]
    assert _numbers_and_arithmetic(block) == ["*"]
