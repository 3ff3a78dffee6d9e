"""Connect to Ray the same way everywhere: `RAY_ADDRESS` when set, else a local cluster.

A local cluster binds to 127.0.0.1 (the machines this runs on may have no other usable interface) and
skips the dashboard; progress bars are off when nobody is watching a terminal (CI logs stay readable).
"""

from __future__ import annotations

import logging
import os
import sys


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start or join Ray once per process (a no-op when already connected)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=num_cpus,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    quiet_data_progress()


def quiet_data_progress() -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    if not sys.stderr.isatty() or os.environ.get("CI"):
        context.enable_progress_bars = False
    context.print_on_execution_start = False
