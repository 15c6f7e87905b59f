"""r1kit: evals."""
