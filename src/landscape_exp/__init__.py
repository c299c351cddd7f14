"""landscape-exp: loss-landscape experiments (Li et al. 2018) as a Hydra-configured library."""

__version__ = "0.1.0"
