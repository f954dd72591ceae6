"""APOLLO: the policy engine that forecasts node load and decides placement and migration."""
