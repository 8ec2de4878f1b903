"""RA-BC end to end on Meta-World: mixed-quality demos → SARM → RA-BC weights → BC vs BC+RA-BC → rollouts.

Run `python -m bench.rabc_experiment --help`.
"""
