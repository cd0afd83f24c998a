"""The built-in architectures; importing this package registers them all."""

from models.architectures import autoencoder, clip, prompt_unet, unet  # noqa: F401  (registration)
