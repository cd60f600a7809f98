"""`make fuzz`: a bounded property-based fuzz of the running stack (see __main__.py)."""
