"""reporter: does today's run of an instrument still look like its reference?

The public API: :func:`reporter.pipeline.run` takes a :class:`reporter.config.Config`
and returns a :class:`reporter.pipeline.RunResult`; :mod:`reporter.metrics` has the
metric functions.
"""

__version__ = "0.1.0"
