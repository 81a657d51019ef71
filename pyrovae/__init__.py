"""pyrovae: the Variational Autoencoder as a Pyro program, with its mathematics checkable."""

from pyrovae.checkpoint import load
from pyrovae.errors import PyrovaeError
from pyrovae.model import VAE

__version__ = "0.1.0"
__all__ = ["VAE", "PyrovaeError", "load", "__version__"]
