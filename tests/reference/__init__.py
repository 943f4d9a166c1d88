"""Naive, obviously-correct implementations (Python ints / int64 NumPy) used as test oracles."""
