"""Shared pytest setup: the thread count, a fixed de-identification salt, deterministic seeds, and session-scoped
real-data shards.

Threads: ``LVMMED_TEST_THREADS`` (else ``OMP_NUM_THREADS``, else 2) intra-op threads for torch, the BLAS/OpenMP
pools (threadpoolctl) and, through ``OMP_NUM_THREADS``, every subprocess. ``make test`` runs the suite at 2 and then
the ``learning`` tests again at 1, so a threshold that sits on the edge of float rounding fails here first.

Salt: ``LVMMED_SALT`` is pinned to :data:`TEST_SALT`, so shard sets that tests convert from their own trees get the
same patient pseudonyms, hence the same splits (and the same learned numbers), on every machine, and no test
creates the private salt file under ``~/.config``.
"""

from __future__ import annotations

import os

import pytest
import torch

TEST_THREADS_ENV = "LVMMED_TEST_THREADS"
TEST_SALT = "lvmmed-tests-fixed-salt-0001"


def session_threads() -> int:
    """The thread count of this session: ``LVMMED_TEST_THREADS``, else ``OMP_NUM_THREADS``, else 2."""
    value = os.environ.get(TEST_THREADS_ENV) or os.environ.get("OMP_NUM_THREADS") or "2"
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"{TEST_THREADS_ENV} / OMP_NUM_THREADS must be a positive integer, got {value!r}")
    return int(value)


THREADS = session_threads()
os.environ["OMP_NUM_THREADS"] = str(THREADS)  # subprocesses (and code that reads it, e.g. downstream.run)
os.environ["LVMMED_SALT"] = TEST_SALT
torch.set_num_threads(THREADS)  # already at collection time


@pytest.fixture(scope="session", autouse=True)
def _thread_count():
    """Applies :data:`THREADS` to torch and to the BLAS/OpenMP pools for the whole session."""
    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(THREADS)
    with threadpool_limits(limits=THREADS):
        yield THREADS


@pytest.fixture(autouse=True)
def _seed_everything():
    import random

    import numpy as np

    if torch.get_num_threads() != THREADS:  # a test changed it and did not restore it
        torch.set_num_threads(THREADS)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def bundled_shards(tmp_path_factory) -> dict:
    """Real-data shard sets built once per session: ``{name: Path}`` (see ``data_prep.bundled``).

    Sets: ``mni152`` (MR slices + 4-class tissue masks), ``dicom_modality`` (grey CT/MR/CR/NM/US, label =
    modality), ``color2d`` (RGB fundus/histology tiles, label = source), and with the optional Debian
    ``mricron-data`` also ``colin27`` (tissue masks) and ``colin27_aal`` (lobe masks). Profile ``tiny``:
    64 px images, every 8th slice/frame. Each directory holds ``manifest.json`` + ``{train,val,test}-*.tar``.
    """
    from data_prep.bundled import build_bundled

    return build_bundled(tmp_path_factory.mktemp("bundled_shards"), profile="tiny", workers=1)


@pytest.fixture
def shard_server():
    """``shard_server(root, cut=(), stall=()) -> "http://127.0.0.1:<port>"``: serves ``root`` over loopback HTTP.

    Files whose names are in ``cut`` are announced with their full length but the connection is closed after half
    of it (a dropped connection mid-shard); files in ``stall`` send half and then nothing until the server stops
    (a stalled server). Only ever binds 127.0.0.1; servers stop at teardown.
    """
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    servers, stop = [], threading.Event()

    def start(root, cut=(), stall=()) -> str:
        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                file = Path(self.translate_path(self.path))
                if (file.name not in cut and file.name not in stall) or not file.is_file():
                    return super().do_GET()
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                if file.name in stall:
                    stop.wait(120)
                self.close_connection = True

        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()
