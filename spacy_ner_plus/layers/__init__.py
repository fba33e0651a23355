"""One thinc layer per module."""
