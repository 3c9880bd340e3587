"""What every layer needs: user errors, settings, atomic writes, hashing, rank helpers, the precision rule.

The bottom layer (docs/ARCHITECTURE.md): it imports nothing from the rest of the project.
"""
