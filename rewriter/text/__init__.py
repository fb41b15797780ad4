"""The lossless tree of a protobuf text file (``cst``), edits on it that leave every other byte
alone (``edit``) and file IO that loses nothing (``fileio``).
"""
