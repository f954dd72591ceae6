"""`python -m apolloctl.podrunner`: run the scenario pods of a local cluster until SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from apolloctl.podrunner.config import load_settings
from common.cli import settings_from_cli
from common.kube import core_v1


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_cli("apollo-podrunner", __doc__, "PODRUNNER", load_settings, argv)
    if settings is None:
        return 2
    if not settings.kubeconfig:
        print("apollo-podrunner: PODRUNNER_KUBECONFIG (or kubeconfig: in --config) is required", file=sys.stderr)
        return 2
    if not Path(settings.kubeconfig).is_file():
        print(f"apollo-podrunner: kubeconfig {settings.kubeconfig} does not exist", file=sys.stderr)
        return 2
    from apolloctl.podrunner.runner import PodRunner

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Run as a service of its own, its processes outlive nothing: they die with it.
    runner = PodRunner(core_v1(settings.kubeconfig), settings).start()
    try:
        stop.wait()
    finally:
        runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
