"""Task presets (DESIGN §3). Each preset module registers itself on import."""
