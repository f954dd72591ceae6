"""Small pieces every service shares: settings loading and structured logging."""
