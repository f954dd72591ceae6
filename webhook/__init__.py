"""Mutating admission webhook: checkpoint PVCs and migration-aware pod patches."""
