from colorization.data.datamodule import ColorizationDataModule
from colorization.data.source_modules import FolderDataModule, HFDataModule, SamplesDataModule, ShardsDataModule

__all__ = ["ColorizationDataModule", "FolderDataModule", "HFDataModule", "SamplesDataModule", "ShardsDataModule"]
