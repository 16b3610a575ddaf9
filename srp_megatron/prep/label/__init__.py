"""The ``srp label`` stage: segment documents and label every segment (``stage``), unit files (``units``),
and the labelers (``labelers``)."""
