"""Recipes: the recipe files (``recipe``; the built-in TOML files ship as
``rewriter.recipes.builtin``), selectors (``select``), the step catalogue (``step_table``,
``steps``, ``deploy``, ``weightsteps``), the engine (``engine``) and its round-trip checks
(``checks``).
"""
