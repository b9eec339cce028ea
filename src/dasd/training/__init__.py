"""Training: LoRA SFT on generated rows with TRL (`sft`), rows -> token-id dataset (`data`)."""

from dasd.training.sft import TrainConfig, load_trained, train

__all__ = ["TrainConfig", "load_trained", "train"]
