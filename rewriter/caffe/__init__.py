"""Caffe's semantics, reproduced: the in-memory legacy upgrade (``upgrade_proto``), layer tables
(``layer_params``), the graph ``Net::Init`` wires (``graph``), backward analysis (``netinit``,
``states``), shapes and set-up checks (``shapes``, ``setup_checks``, ``initcheck``), located
errors (``diagnose``), ``.caffemodel`` reading and the weight-loading rules (``weights``), and a
file with all of these computed once (``netfile``).
"""
