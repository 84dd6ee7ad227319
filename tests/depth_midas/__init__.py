"""Tests of the depth pack (a package, so that module names like test_metrics stay unique)."""
