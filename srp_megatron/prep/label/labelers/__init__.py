"""Segment labelers, one module each (keyword, openai, hf_classifier, oracle, ...).

Importing this package imports every module in it, and each registers its labeler in ``LABELERS`` with its
config class: adding a labeler is one new module here (plus its preset in ``conf/label/``). Labelers of other
packages register through the entry-point group ``srp_megatron.labelers``.
"""

import importlib
import pkgutil

from srp_megatron.prep.label.labelers.base import LABELERS, Labeler, LabelFailure, SegmentedDocument

__all__ = ["LABELERS", "LabelFailure", "Labeler", "SegmentedDocument"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
