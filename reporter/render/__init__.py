"""Renderers: the results table and the run's metadata -> files in the run folder.

Each renderer reads the DataFrame by the column constants of ``reporter.table``
and writes through ``reporter.atomic``; none recomputes a metric.
"""

__all__: list[str] = []  # a namespace for the renderers; import them by module
