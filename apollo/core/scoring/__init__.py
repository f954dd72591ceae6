"""Which node suits a pod (per-pod scores over a per-tick table) and the pod-agnostic per-node snapshot."""
