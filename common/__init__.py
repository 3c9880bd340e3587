"""What every layer needs: the precision rule (more shared pieces join it as they are consolidated)."""
