"""The toy world's nodes (the CPU test bench): Load Toy Video Model and the toy clip, target
and conditioning nodes. Registered with the pack's other nodes in ``nodes/__init__.py``."""
