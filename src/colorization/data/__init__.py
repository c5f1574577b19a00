from colorization.data.datamodule import ColorizationDataModule
from colorization.data.sources import ConfigError

__all__ = ["ColorizationDataModule", "ConfigError"]
