"""Benchmarks and measurements of the package's code: apart from the physics it measures."""
