"""Background work on the shared shell (`common.loops.BackgroundLoop`): the tick loop and scheduled tuning."""
