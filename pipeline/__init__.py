"""BuildKit-native build orchestrator for multi-service Python monorepos, on Dagger."""

__version__ = "0.1.0"
