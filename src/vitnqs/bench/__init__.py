"""Benchmarks and measurements of the package's code: apart from the physics it measures.

* :mod:`vitnqs.bench.phases`: the SR step split into its phases, with operation counts,
  rates and memory (``python -m vitnqs benchmark``);
* :mod:`vitnqs.bench.local_energy`: the two local-energy modes timed side by side on the
  same samples (the phase benchmark, ``benchmarks/local_energy.py``, the GPU check);
* :mod:`vitnqs.bench.symmetrization`: the cost of the symmetrized network.
"""
