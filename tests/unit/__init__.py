"""Unit tier: no server, no network, tiny random models; each file checks one module or one rule."""
