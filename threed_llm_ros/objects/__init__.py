"""The object layer: a frame becomes a list of objects (see layer.py); every reply is computed from it."""
