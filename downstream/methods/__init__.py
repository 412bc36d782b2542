"""Classification methods, one module per method family; :mod:`downstream.registry` maps their keys to classes."""
