"""The phase benchmark: operation counts, a faithful split, SR-mode choice, no recompilation."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from vitnqs.bench import phases
from vitnqs.bench.local_energy import local_energy_calls
from vitnqs.config import ATTENTIONS, SR_MODES, RunConfig, RunOptions
from vitnqs.loop import build_driver
from vitnqs.models import ViT
from vitnqs.optimize import optimize

TINY = RunConfig(attention="t5", L=4, J2=0.5, layers=1, d=8, heads=2, samples=32, steps=6)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("L", [6, 10])
def test_forward_flops_against_xla(attention, L):
    """At the paper's size the matrix products are 90-100% of XLA's count (which adds
    the elementwise operations: layer norms, softmax, GELU)."""
    model = ViT(attention, layers=4, d=60, heads=10, b=2)
    batch = jnp.ones((16, L * L))
    params = model.init(jax.random.key(0), batch[:1])
    xla = jax.jit(model.apply).lower(params, batch).compile().cost_analysis()["flops"] / 16
    ratio = phases.forward_flops(attention, L, 4, 60, 10, 2) / xla
    assert 0.9 < ratio <= 1.0


def test_forward_flops_by_hand():
    # L = 4, b = 2: n = 4 patches; d = 2, one block
    # embedding 2*4*4*2 = 64; factored block 20*4*4 + 2*16*2 = 384; head 4*4 = 16
    assert phases.forward_flops("factored", 4, 1, 2, 1, 2) == 64 + 384 + 16
    # T5 adds queries and keys 4*4*4 = 64 and logits 2*16*2 = 64
    assert phases.forward_flops("t5", 4, 1, 2, 1, 2) == 64 + 384 + 128 + 16


def test_phase_flops_kernel_counts():
    M, P = 600, 100
    flops = phases.phase_flops(1.0, samples=M, n_sites=16, max_conn=65, n_parameters=P,
                               mode="explicit")  # fmt: skip
    # 2 (2M)^2 P + (2M)^3 / 3 + 2 (2M) P
    product, rest = 2 * 1200**2 * P, 1200**3 / 3 + 2 * 1200 * P
    assert flops["kernel_solve"] == pytest.approx(product + rest)
    assert flops["sampling"] == 16 * M and flops["local_energies"] == 65 * M
    assert flops["jacobian"] == 5 * M
    # 1200 rows make 4 blocks: 10 of the 16 block products
    symmetric = phases.phase_flops(1.0, M, 16, 65, P, "symmetric")
    assert symmetric["kernel_solve"] == pytest.approx(10 / 16 * product + rest)
    onthefly = phases.phase_flops(1.0, M, 16, 65, P, "onthefly")
    assert onthefly["jacobian"] == 0
    assert onthefly["kernel_solve"] == pytest.approx(flops["kernel_solve"] + flops["jacobian"])


def test_phases_reproduce_the_driver_update():
    driver = build_driver(TINY, RunOptions(sr_mode="explicit", progress=False))
    errors = phases.split_error(driver, ["explicit", "symmetric", "onthefly"])
    assert errors["explicit"] < 1e-12  # the same NetKet functions, compiled apart
    assert max(errors.values()) < 1e-9


def test_measure_rows():
    case = phases.Case(
        RunConfig(attention="factored", L=4, J2=0.5, layers=1, d=4, heads=2, samples=16),
        RunOptions(chunk_size=8, sr_mode="symmetric", local_energy="padded", progress=False),
        sr_modes=("symmetric", "onthefly"),
        steps=1,
    )
    result = phases.measure_case(case)
    table = pd.DataFrame(phases.rows(result))
    assert set(table.sr_mode) == {"symmetric", "onthefly"}
    for mode, group in table.groupby("sr_mode"):
        times = group.set_index("phase")["median_s"]
        timed = [p for p in phases.PHASES if not (mode == "onthefly" and p == "jacobian")]
        assert (times[timed] > 0).all()
        # the operation counts are the case's: J2 = 0.5 gives 1 + 4 N = 65 connections,
        # evaluated with the sample itself on NetKet's padded path
        counts = phases.phase_flops(
            phases.forward_flops("factored", 4, 1, 4, 2, 2), 16, 16, 66,
            result["n_parameters"], mode,
        )  # fmt: skip
        gflop = group.set_index("phase")["gflop"]
        assert gflop[list(phases.PHASES)].to_numpy() == pytest.approx(
            np.array([counts[p] for p in phases.PHASES]) / 1e9
        )
    assert "driver_step" in set(table[table.sr_mode == "symmetric"].phase)
    assert list(table.columns[:13]) == [
        "attention", "L", "samples", "chunk_size", "layers", "d", "heads", "b", "J2",
        "network_dtype", "local_energy", "steps", "time_driver",
    ]  # fmt: skip
    assert table.iloc[0][["d", "J2", "steps", "local_energy"]].tolist() == [4, 0.5, 1, "padded"]
    # both local-energy modes on the same samples, and the share of zero elements
    modes = result["local_energy_modes"]
    assert 0.25 < modes["waste"] < 0.75 and modes["max_abs_diff"] < 1e-10
    assert modes["configs_compact"] < modes["configs_padded"] == 16 * 66
    assert (table.local_energies_padded_s > 0).all() and (table.local_energies_compact_s > 0).all()
    assert "padded / compact" in phases.summary_table(table)
    assert (table.matmul_gflops > 0).all()


def test_a_case_reaches_its_child_process_whole():
    case = phases.Case(
        RunConfig(attention="t5", L=6, J2=0.0, layers=2, d=12, heads=3, samples=64),
        RunOptions(chunk_size=32, sr_mode="onthefly", network_dtype="float32", progress=False),
        sr_modes=("onthefly", "explicit"),
        steps=2,
        time_driver=False,
    )
    assert phases.Case.from_json(case.to_json()) == case
    assert case.record()["steps"] == 2 and case.record()["sr_modes"] == ["onthefly", "explicit"]
    with pytest.raises(ValueError, match="the driver's"):
        phases.Case(TINY, RunOptions(sr_mode="auto"), sr_modes=("explicit",))


def test_local_energy_calls_agree_on_the_same_samples():
    config = RunConfig(attention="factored", L=4, J2=0.5, layers=1, d=4, heads=2, samples=16)
    driver = build_driver(config, RunOptions(chunk_size=8, progress=False))
    driver.state.sample()
    calls = local_energy_calls(driver.state, config.L, config.J2)
    assert set(calls) == {"compact", "padded"}
    compact, padded = calls["compact"](), calls["padded"]()
    assert compact.shape == padded.shape and compact.size == 16
    np.testing.assert_allclose(compact, padded, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(calls["compact"](), compact)  # no resampling


def test_no_recompilation_between_steps(tmp_path, caplog):
    """After the first steps, an optimization step compiles nothing."""
    config = RunConfig(**{**TINY.__dict__, "steps": 7})
    driver = build_driver(config, RunOptions(progress=False))
    driver.run(3, show_progress=False)  # step 0 and 1 compile (running statistics change)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        driver.run(3, show_progress=False)
    compiled = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
    assert compiled == []


def test_short_run_energies_do_not_depend_on_the_sr_mode(tmp_path):
    histories = {}
    for mode in SR_MODES:
        optimize(TINY, tmp_path / mode, RunOptions(sr_mode=mode, progress=False))
        histories[mode] = pd.read_csv(tmp_path / mode / "history.csv")
    for mode in ("symmetric", "onthefly"):
        np.testing.assert_allclose(
            histories[mode].energy, histories["explicit"].energy, rtol=1e-9, atol=0
        )
