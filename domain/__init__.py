"""The pure domain: aggregates, events and rules. No I/O; imports none of our other packages."""
