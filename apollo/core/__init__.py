"""APOLLO's pure core: forecasting, scoring and the policy planners, on plain values only.

Nothing here performs I/O or knows a wire format: no gRPC, protobuf, Kubernetes, Prometheus client or
HTTP framework, and no import of APOLLO's runtime, adapters, jobs or settings tree
(`tests/unit/test_apollo_layers.py` enforces it). Everything takes its inputs and its clock (``now``) as
arguments, so a decision can be replayed and tested with three-line fixtures.
"""
