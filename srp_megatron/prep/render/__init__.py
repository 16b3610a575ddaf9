"""The ``srp render`` stage: a labels directory through an arm and a reflection template into a rendered
dataset (``stage``); what it reads of the labels directory (``inputs``); the arms, templates and rewriter."""
