"""advlab: adversarial attacks and trustworthy robustness evaluation for PyTorch."""

__version__ = "0.1.0"
