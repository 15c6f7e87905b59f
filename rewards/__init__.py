"""r1kit: rewards. Reward functions are named in recipes through `rewards.registry`."""

from rewards.checks import check_reward_setup

__all__ = ["check_reward_setup"]
