"""APOLLO's running state between the core and the adapters: the tick engine and its published view, the
insight-report store and the policy broker. Plain Python and numpy; the outside world is reached only
through the small protocols in `apollo.runtime.sources`, which the adapters implement."""
