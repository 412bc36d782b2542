"""Shared pieces of the reliability probes: one small real shard set, and running a CLI in this process."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    """What a command did: exit status and everything it printed."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def run_cli_inprocess(capsys) -> Callable[..., Outcome]:
    """``run(main, argv)`` calls a CLI entry in this process under the error contract and captures its output."""
    from lvmmed.errors import run_cli

    def run(main: Callable, argv: list[str], prog: str = "prog") -> Outcome:
        capsys.readouterr()
        try:
            code = run_cli(main, [str(a) for a in argv], prog)
        except SystemExit as exit_:  # argparse errors
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return Outcome(code, out, err)

    return run


@pytest.fixture(scope="session")
def mni_shards(tmp_path_factory) -> Path:
    """The bundled MNI152 MR slices as a real shard set (45 train samples at the tiny profile)."""
    from data_prep.bundled import build_bundled

    return build_bundled(tmp_path_factory.mktemp("rel_shards"), profile="tiny", workers=1, names=["mni152"])["mni152"]


@pytest.fixture
def shard_copy(mni_shards, tmp_path) -> Callable[[str], Path]:
    """``shard_copy(name)``: a private copy of the shard set to damage."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(mni_shards, tmp_path / name))

    return copy


@pytest.fixture(scope="session")
def tiny_pretrain_args() -> list[str]:
    """A very small but real run: ViT-Tiny/16 at 32 px on 1-channel MR slices, GM loss, batch 8, CPU."""
    return ["--config", str(REPO / "configs/pretrain/tiny_cpu.yaml"), "augment.size=32", "data.batch_size=8",
            "data.num_workers=0", "data.shuffle_buffer=50", "data.shuffle_initial=10", "model.proj_hidden_dim=64",
            "model.proj_output_dim=32", "loss.graph_matching.mp_hidden=32", "loss.graph_matching.k=3",
            "trackers=[]", "log_every=1", "optim.warmup_steps=2", "export_at_end=false"]  # fmt: skip


def run_pretrain_cli(argv: list[str]) -> int:
    """``python -m pretrain`` in this process under the error contract; resets Accelerate's singletons."""
    from accelerate.state import AcceleratorState, GradientState

    from lvmmed.errors import run_cli
    from pretrain.__main__ import main

    try:
        return run_cli(main, argv, "python -m pretrain")
    except SystemExit as exit_:  # argparse: usage and config errors
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


@pytest.fixture
def pretrain_cli(tiny_pretrain_args) -> Callable[[list[str]], int]:
    """``pretrain_cli(extra_overrides) -> exit status`` for the tiny real config."""
    return lambda extra: run_pretrain_cli([*tiny_pretrain_args, *extra])
