from colorization.data.datamodule import ColorizationDataModule

__all__ = ["ColorizationDataModule"]
