"""Caffe's legacy-format upgrade as minimal edits: nets and solvers (``document``) and streaming
``.caffemodel`` files (``caffemodel``).
"""
