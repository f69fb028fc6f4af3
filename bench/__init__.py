"""Benchmarks of clcr: every figure next to a reference measured in the same run.

``python -m bench --size small|medium|large|all --only text,audio,...`` (see README.md).
"""
