"""srp-megatron: Safety Reflection Pretraining for Megatron-Core."""

__version__ = "0.1.0"
