"""``caffe.proto`` at run time (``runtime``: descriptors in a private pool), binding the lossless
tree to it with located diagnostics (``bind``) and the hint for a fork's fields (``forkhint``).
``proto/caffe.proto`` stays at the repository root.
"""
