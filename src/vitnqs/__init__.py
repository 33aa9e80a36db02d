"""vitnqs: Vision Transformer wave functions with T5, Decoupled and Factored attention.

Reproduces R. Rende and L. L. Viteritti, Mach. Learn.: Sci. Technol. 6, 010501 (2025).
"""

__version__ = "0.1.0"
