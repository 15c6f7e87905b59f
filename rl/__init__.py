"""r1kit: rl."""
