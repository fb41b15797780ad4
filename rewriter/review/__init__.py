"""Reviewing a change: the semantic diff (``semdiff``), the backward analysis as text
(``explain_text``) and the renderers (``render``: text, JSON, Markdown, Mermaid, DOT, HTML).
"""
