"""On-disk contracts between stages: the labels directory, the rendered dataset, atomic writes.

Every reader and writer of a format lives in its module here; stages import formats, never each other.
"""
