"""The stage tests, one module per stage of clcr_cli/stages/.

A package so that pytest names its modules ``stages.test_*``: test_perturb.py here (the
perturb stage) and tests/features/test_perturb.py (the perturbations) share a file name,
which pytest's default import mode allows only inside packages.
"""
