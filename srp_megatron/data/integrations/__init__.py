"""Upstream trainers' entry points for SRP datasets: Megatron-LM's ``pretrain()`` (``megatron_lm``) and
Megatron-Bridge (``bridge``). Each maps its framework's settings to a ``ReflectionGPTDatasetConfig`` and builds
through ``srp_megatron.data.builder``."""
