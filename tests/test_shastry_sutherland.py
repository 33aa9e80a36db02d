"""The exact ViT representation of the Shastry-Sutherland dimer state (paper section 4.3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitnqs import shastry_sutherland as ss
from vitnqs.geometry import diagonal_patch, dimer_bonds, extract_patches
from vitnqs.models import ATTENTIONS


@pytest.fixture(scope="module")
def all_states_4():
    return np.asarray(ss.shastry_sutherland_hamiltonian(4, 1.0, 0.0).hilbert.all_states())


# ---- the lattice ---------------------------------------------------------------------


@pytest.mark.parametrize("L", [4, 6, 8])
def test_dimers_are_an_orthogonal_next_nearest_neighbour_covering(L):
    bonds = dimer_bonds(L)
    assert bonds.shape == (L * L // 2, 2)
    assert sorted(bonds.ravel()) == list(range(L * L))  # every site in exactly one dimer
    assert ss.dimer_covering_violations(L) == {
        "uncovered": 0,
        "multiply_covered": 0,
        "not_diagonal": 0,
        "parallel_neighbours": 0,
    }


def test_dimers_follow_the_patch_layout_and_s_of_i():
    L, g = 6, 3
    patches = np.asarray(extract_patches(np.arange(L * L)[None, :], 2)[0])
    bonds = {tuple(bond) for bond in dimer_bonds(L)}
    for i in range(g * g):
        assert (patches[i, 2], patches[i, 1]) in bonds  # (s_i3, s_i2)
        assert (patches[i, 3], patches[diagonal_patch(i, g), 0]) in bonds  # (s_i4, s_S(i)1)
    # patch 0 = sites (0,0),(0,1),(1,0),(1,1): dimers (1,0)-(0,1) and (1,1)-(2,2)
    assert (L, 1) in bonds and (L + 1, 2 * L + 2) in bonds


def test_hamiltonian_has_the_singlet_product_as_eigenstate(all_states_4):
    graph = ss.shastry_sutherland_graph(4)
    colors = np.asarray(graph.edge_colors)
    assert np.sum(colors == 0) == 8 and np.sum(colors == 1) == 32
    # independent of the network: the frustrated J' bonds cancel on the singlet product
    psi = ss.product_of_singlets_amplitude(all_states_4, 4)
    psi /= np.linalg.norm(psi)
    h_psi = ss.shastry_sutherland_hamiltonian(4, 1.0, 0.7).to_sparse() @ psi
    np.testing.assert_allclose(h_psi, -3 / 8 * 16 * psi, atol=1e-12)


def test_wrong_patch_or_lattice_is_refused():
    with pytest.raises(ValueError, match="b=2"):
        dimer_bonds(6, b=3)
    with pytest.raises(ValueError, match="divisible"):
        ss.exact_parameters("factored", 5)
    with pytest.raises(ValueError, match="unknown attention"):
        ss.exact_parameters("softmax", 4)


# ---- the network ---------------------------------------------------------------------


def test_log_cos_is_the_complex_log_of_the_cosine():
    z = jnp.array([0.0, math.pi, 0.3, 2.0])
    expected = np.log(np.cos(np.asarray(z)).astype(complex))
    np.testing.assert_allclose(np.asarray(ss.log_cos(z)), expected, atol=1e-15)
    assert complex(ss.log_cos(jnp.array(math.pi))) == pytest.approx(1j * math.pi)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_exact_parameters_fit_the_module(attention):
    sigma = jnp.ones((1, 36))
    shapes = jax.eval_shape(ss.ShastrySutherlandViT(attention).init, jax.random.key(0), sigma)
    expected = jax.tree.map(lambda x: x.shape, shapes["params"])
    got = jax.tree.map(lambda x: x.shape, ss.exact_parameters(attention, 6))
    assert got == expected


@pytest.mark.parametrize("L", [4, 6])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_maps_are_identity_and_shift_to_s_of_i(attention, L):
    sigma = ss.random_sz0_configurations(L, 16, seed=3)
    alpha = ss.attention_weights(attention, ss.exact_parameters(attention, L), sigma)
    intended = ss.intended_attention(L)
    n = (L // 2) ** 2
    np.testing.assert_array_equal(intended[0], np.eye(n))
    assert all(intended[1, i, diagonal_patch(i, L // 2)] == 1 for i in range(n))
    np.testing.assert_allclose(alpha, np.broadcast_to(intended, alpha.shape), atol=1e-14, rtol=0)


def test_t5_is_only_one_hot_in_the_limit():
    params = ss.exact_parameters("t5", 4)
    params["attn"]["p"] = jnp.where(params["attn"]["p"] < 0, -10.0, 0.0)  # a finite mask
    alpha = ss.attention_weights("t5", params, ss.random_sz0_configurations(4, 2, seed=0))
    assert 1e-6 < np.max(np.abs(alpha - ss.intended_attention(4))) < 1e-3


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_amplitudes_are_the_product_of_singlets_on_4x4(attention, all_states_4):
    network = np.exp(ss.network_log_amplitude(attention, all_states_4))
    reference = ss.product_of_singlets_amplitude(all_states_4, 4)
    assert np.sum(reference != 0) == 2**8
    np.testing.assert_allclose(network, reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_amplitudes_are_the_product_of_singlets_on_6x6(attention):
    for sigma in (
        ss.random_sz0_configurations(6, 2000, seed=0),
        ss.random_dimer_configurations(6, 2000, seed=1),
    ):
        network = np.exp(ss.network_log_amplitude(attention, sigma))
        np.testing.assert_allclose(
            network, ss.product_of_singlets_amplitude(sigma, 6), atol=1e-12, rtol=0
        )


def test_reference_log_amplitude_is_minus_infinity_off_the_support():
    sigma = np.stack(
        [ss.random_dimer_configurations(4, 1, seed=0)[0], np.repeat([1, -1], 8)]
    )  # (4, 1) parallel
    log_psi = ss.product_of_singlets_log_amplitude(sigma, 4)
    assert np.isfinite(log_psi[0]) and np.real(log_psi[1]) == -np.inf


# ---- energies --------------------------------------------------------------------------


@pytest.mark.parametrize("Jp", ss.DIMER_PHASE_JP)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_network_state_is_the_exact_ground_state_on_4x4(attention, Jp):
    rows = {row["check"]: row for row in ss._ed_rows(attention, 4, 1.0, Jp)}
    assert rows.keys() == {
        "eigenstate_residual",
        "energy_vs_ed",
        "energy_vs_dimer_value",
        "overlap_with_ground_space",
    }
    assert all(row["passed"] for row in rows.values()), rows
    assert rows["eigenstate_residual"]["value"] < 1e-10
    assert rows["energy_vs_ed"]["value"] == pytest.approx(-0.375, abs=1e-10)
    assert rows["overlap_with_ground_space"]["value"] == pytest.approx(1.0, abs=1e-10)


def test_ground_multiplet_collects_degenerate_states():
    energies, multiplet = ss.ground_multiplet(4, 1.0, 0.3)
    degeneracy = multiplet.shape[1]
    assert np.all(energies[:degeneracy] <= energies[0] + ss.DEGENERACY_WINDOW)
    assert energies[degeneracy] > energies[0] + ss.DEGENERACY_WINDOW
    np.testing.assert_allclose(multiplet.T @ multiplet, np.eye(degeneracy), atol=1e-10)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_beyond_the_dimer_phase_the_state_is_excited(attention):
    rows = {row["check"]: row for row in ss._ed_rows(attention, 4, 1.0, 0.9)}
    assert rows["eigenstate_residual"]["passed"]  # still an eigenstate for any J'
    gap = rows["above_ground_state_outside_dimer_phase"]
    assert gap["passed"] and gap["value"] > 0.1


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_local_energy_on_6x6_is_minus_three_eighths_per_site(attention):
    sigma = ss.random_dimer_configurations(6, 200, seed=4)
    local = ss.local_energies(attention, sigma, 1.0, 0.3) / 36
    np.testing.assert_allclose(local, -0.375, atol=1e-10, rtol=0)


def test_write_checks_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(ss, "ATTENTIONS", ("factored",))
    monkeypatch.setattr(ss, "DIMER_PHASE_JP", (0.3,))
    table = ss.checks(samples=100)
    assert {"check", "attention", "L", "J", "Jp", "value", "threshold", "passed", "note"} <= set(
        table.columns
    )
    assert table["passed"].all(), table[~table["passed"]]


# ---- figure 5 ---------------------------------------------------------------------------


def test_fig5_writes_pdf_and_png(tmp_path):
    from vitnqs.fig5 import write_fig5

    pdf = tmp_path / "fig5.pdf"
    write_fig5(pdf, "smoke")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert pdf.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
