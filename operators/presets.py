"""Task presets (docs/design.md §3). Each preset module registers itself on import."""

from . import blur, colorize, identity, inpainting, phase, superres  # noqa: F401
