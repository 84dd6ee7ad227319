"""Tests of the codegen pack (a package, so that module names stay unique)."""
