"""The operator layer, above the stages: the ``sealstream`` command line, the local stack
(Kafka in KRaft mode and the schema registry), the supervisor of ``sealstream up``, the
operations dashboard and the demo.

It may import every stage (``producers``, ``streams``, ``sinks``), ``schemas`` and the ground
floor (``sealstream``); nothing below it imports it (an import-linter contract in CI).
"""
