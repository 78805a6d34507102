"""The synthetic episode generator: a procedural world (world, procedure, motion, body, imu,
language, simulate) and the sensors that record it (cameras, render, audio, writer)."""
