"""Config loading: typed dataclasses from YAML presets and ``key=value`` overrides."""

from srp_megatron.config.loader import CONF_DIR, ConfigError, load_config, resolve_preset, to_dict, to_yaml

__all__ = ["CONF_DIR", "ConfigError", "load_config", "resolve_preset", "to_dict", "to_yaml"]
