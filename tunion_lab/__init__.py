"""The tunion-keyops lab: the province and its city nodes on one machine, and its SAM emulator."""
