"""``python -m lvmmed <stage> ...``: the ``lvmmed`` command (:mod:`lvmmed.cli`), e.g. ``python -m lvmmed embed``."""

from lvmmed.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
