"""Helpers that know nothing of Caffe: lazy sequences, pausing the garbage collector for bulk
steps, differences between plain values.
"""
