"""The vectorised forecaster (one numpy pass per tick over every node x resource series), its accuracy,
anomaly and seasonality pieces, the overload warning, backtests and the pure parameter searches."""
