"""The ``make demo`` orchestrator: drives every stage (data_prep → pretrain → downstream benchmark → report).

It sits above the stages on purpose: the library (``lvmmed``) never imports a stage, while this package imports
them all. Run it as ``python -m demo --out runs/demo [key=value ...]`` (or ``lvmmed demo ...``); the stages and
the config are described in :mod:`demo.run`.
"""
