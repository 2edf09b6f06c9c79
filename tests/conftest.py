"""Shared fixtures: small random networks in float64 for exact checks."""

import functools
import http.server
import os
import tempfile
import threading
import zlib

import numpy as np
import pytest

from xyoptics.core import architectures
from xyoptics.core.network import Params

# Every process of the suite (each pytest-xdist worker) locks its simulated rigs in a folder of its own: the
# shipped rig files all name the same simulated rig, and workers run sessions on it at the same time.
os.environ["XYOPTICS_LOCK_DIR"] = tempfile.mkdtemp(prefix="xyoptics-test-locks-")


def pytest_collection_modifyitems(items):
    """Tests marked ``slow`` run first, so that on several workers (pytest-xdist) the long ones overlap and the
    short ones fill the end instead of one worker finishing a long test alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def random_params(net, rng, dtype=np.float64):
    return Params(rng.normal(0, 0.8, net.n_coupling_params), rng.uniform(0, 1, net.n_spins),
                  rng.uniform(-np.pi, np.pi, net.n_spins)).astype(dtype)


def shared_graph(rng):
    """A random graph on 9 spins whose 20 bonds share 6 coupling parameters; random input and output sets."""
    n = 9
    i, j = np.triu_indices(n, 1)
    pick = rng.choice(len(i), 20, replace=False)
    order = rng.permutation(n)
    return architectures.graph(n, np.stack([i[pick], j[pick]], 1), order[:3], order[3:5],
                               edge_param=rng.integers(0, 6, 20) % 6)


NETWORKS = {
    "all_to_all": lambda rng: architectures.all_to_all(2, 4, 2),
    "layered": lambda rng: architectures.layered([3, 4, 2]),
    "shared": shared_graph,
}


@pytest.fixture(params=sorted(NETWORKS))
def net_and_params(request):
    rng = np.random.default_rng(zlib.crc32(request.param.encode()))  # stable across processes, unlike hash()
    net = NETWORKS[request.param](rng)
    return net, random_params(net, rng), rng


@pytest.fixture
def server(tmp_path):
    """An http.server on 127.0.0.1 serving tmp_path/www; yields (base_url, www folder, list of paths served)."""
    www = tmp_path / "www"
    www.mkdir()
    served = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            served.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/mnist/", www, served
    finally:
        httpd.shutdown()
        httpd.server_close()
