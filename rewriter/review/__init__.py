"""Reviewing a change: the semantic diff (``semdiff``, built on ``changes``, ``values``,
``version``, ``facts`` and ``sources``; git's ``textconv`` view), the backward analysis as text
(``explain_text``) and the renderers (``render``: text, JSON, Markdown, Mermaid, DOT, HTML).
"""
