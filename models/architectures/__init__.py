"""The built-in architectures; models.registry lists them."""
