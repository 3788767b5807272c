"""The ``ternary`` command-line app: thin click commands over the functional core."""
