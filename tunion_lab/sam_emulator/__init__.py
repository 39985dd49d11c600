"""The project's PSAM emulator for the lab and the tests: emulated SAMs in the lab's vpcd readers.

Run it with ``python -m tunion_lab.sam_emulator`` (``start``/``stop`` for the lab, ``serve`` in the foreground,
``insert``/``status``/``wait-idle`` to drive the feeder). See docs/sam-profile.md.
"""
