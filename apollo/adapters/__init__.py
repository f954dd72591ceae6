"""APOLLO's edges: Prometheus and Kubernetes readers, the gRPC servicers and wire conversions, the HTTP
probe port and the Prometheus metrics. Wire and client types stop here; inward, only domain values."""
