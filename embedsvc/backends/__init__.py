"""Model adapters, one module per kind, registered in one table (`embedsvc.backends.kinds`).

Importing this package installs the torchvision guard (see `torchvision_compat`) before any backend imports torch,
transformers or torchvision: the server side is the only side that loads them.
"""

from embedsvc.backends import torchvision_compat

torchvision_compat.install()
