"""`priorswap demo`: the paper's DiT experiment in miniature, on Fashion-MNIST, offline.

This package sits at the CLI level: it wires data/, callbacks/ and toolkit together, as toolkit/cli.py does.
"""
