"""Hamiltonian geometry, units and exact diagonalization against independent values."""

import netket as nk
import numpy as np
import pytest

from vitnqs.geometry import displacement_index, extract_patches, site_index
from vitnqs.physics import exact_ground_state_energy, heisenberg, square_lattice
from vitnqs.references import literature_reference, reference_energy, relative_error


def test_site_order_matches_netket_positions():
    L = 4
    graph = square_lattice(L, 0.5)
    for k, (x, y) in enumerate(graph.positions):
        assert site_index(int(x), int(y), L) == k
    # nearest-neighbour edges (color 0) are unit steps on the torus, NNN (color 1) diagonal
    for (i, j), color in zip(graph.edges(), graph.edge_colors, strict=True):
        dx, dy = (np.subtract(divmod(j, L), divmod(i, L)) + 1) % L - 1
        assert (abs(dx) + abs(dy), abs(dx) * abs(dy)) == ((1, 0) if color == 0 else (2, 1))


def test_patches_and_displacements_by_hand():
    L, b = 4, 2
    sigma = np.arange(L * L)[None, :]
    patches = extract_patches(sigma, b)
    # patch (X=0, Y=1) holds sites (x, y) = (0,2), (0,3), (1,2), (1,3), row-major
    np.testing.assert_array_equal(patches[0, 1], [2, 3, 6, 7])
    np.testing.assert_array_equal(patches[0, 2], [8, 9, 12, 13])
    table = displacement_index(3)
    assert table[0, 0] == 0 and table[4, 4] == 0  # no displacement
    assert table[0, 1] == 1 and table[1, 0] == 2  # +1 and -1 (= +2 mod 3) in Y
    assert table[8, 0] == 4  # patch (2,2) -> (0,0) is (+1, +1) on the periodic grid


def test_displacements_on_the_two_by_two_grid_are_well_defined():
    # L = 4, b = 2: on the periodic 2 x 2 patch grid +1 and -1 are one displacement, so
    # the table is the group table of Z2 x Z2: symmetric, each of the n = 4 entries of p
    # once per row and column. Nothing is shared or double counted (issue 16: the
    # Decoupled L = 4 point is an optimization collapse, see studies/collapse_L4/README.md)
    table = displacement_index(2)
    np.testing.assert_array_equal(table, [[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]])
    np.testing.assert_array_equal(table, table.T)
    for g in (2, 3, 5):
        table = displacement_index(g)
        for row in (*table, *table.T):
            np.testing.assert_array_equal(np.sort(row), np.arange(g * g))


def test_heisenberg_is_in_spin_units():
    # one bond: singlet -3/4 and triplet (m=0) +1/4 in the Sz=0 sector, by hand
    bond = heisenberg(nk.graph.Graph(edges=[(0, 1)]), [1.0]).to_dense()
    np.testing.assert_allclose(np.linalg.eigvalsh(bond), [-0.75, 0.25])
    # 4-site ring: E0 = -2 J (Bethe/hand result for N=4), scaled linearly with J
    ring = heisenberg(nk.graph.Chain(4, pbc=True), [0.5]).to_dense()
    assert np.linalg.eigvalsh(ring).min() == pytest.approx(-1.0)


@pytest.mark.parametrize(("J2", "expected"), [(0.0, -0.7017802), (0.5, -0.5286202)])
def test_exact_diagonalization_4x4(J2, expected):
    assert exact_ground_state_energy(4, J2) == pytest.approx(expected, abs=5e-8)
    table = literature_reference(4, J2)
    assert table.energy == pytest.approx(exact_ground_state_energy(4, J2), abs=5e-8)


def test_exact_diagonalization_refuses_large_lattices():
    with pytest.raises(ValueError, match="L <= 4"):
        exact_ground_state_energy(6, 0.5)


def test_reference_energies():
    ref = reference_energy(10, 0.5)
    assert ref.energy == pytest.approx(-0.497715) and "Chen" in ref.source
    assert reference_energy(12, 0.3) is None
    assert relative_error(-0.5, reference_energy(6, 0.5)) == pytest.approx(
        abs((-0.503810 + 0.5) / 0.503810)
    )
    assert np.isnan(relative_error(-0.5, None))
