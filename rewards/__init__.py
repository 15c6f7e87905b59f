"""r1kit: rewards."""
