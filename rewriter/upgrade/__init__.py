"""Caffe's legacy-format upgrade as minimal edits: nets and solvers (``document``, the driver
and the names callers import; ``net`` runs one net through the steps, one module per step:
``v0``, ``data``, ``v1``, ``inputs``, ``batchnorm``, ``solver``; ``splice`` holds the text edits
they share, ``forks`` a fork's V1 types, ``verify`` the graph checks of a result, ``result`` the
result and error types) and streaming ``.caffemodel`` files (``caffemodel``).
"""
