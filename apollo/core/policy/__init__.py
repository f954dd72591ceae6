"""Orchestration policy: planners (migrate, scale, provision) behind one facade, sharing one ledger."""
