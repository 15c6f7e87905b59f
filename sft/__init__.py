"""r1kit: sft."""
