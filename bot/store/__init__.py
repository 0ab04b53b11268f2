"""State store backends; see base.py for the protocol."""
