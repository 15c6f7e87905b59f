"""r1kit: r1kit."""
