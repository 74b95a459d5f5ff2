"""The paper presets beside the projUNN authors' code, and the presets' contract with it (docs/reproduction.md)."""
