"""The test suite (pytest). Shared helpers live in tests/helpers/; test folders mirror the packages."""
