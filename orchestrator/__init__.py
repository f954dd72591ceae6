"""Migration controller: capture, checkpoint, evict, watch the replacement."""
