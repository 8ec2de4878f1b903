"""The client's tests that need the service (a real gateway, the core's datasets or models) are not collected where
only sarm-client is installed: what is left (the client's own unit and package tests) must pass there."""

from __future__ import annotations

import importlib.util

# Each of these starts a gateway, or uses the core's datasets, models or the simulator.
NEED_THE_SERVICE = [
    "test_client_auth.py",
    "test_client_cli.py",
    "test_client_evaluate.py",
    "test_client_gateway.py",
    "test_client_rabc.py",
    "test_client_rabc_http.py",
    "test_client_rabc_training.py",
    "test_client_rl.py",
    "test_client_stream_refusal.py",
]


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # blocked (sys.modules[name] is None), or half there
        return False


collect_ignore = [] if all(_installed(n) for n in ("torch", "sarm", "sarm_gateway")) else NEED_THE_SERVICE
