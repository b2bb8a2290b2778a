"""`make bench`: load tests of the composed stack through nginx (see bench/README.md)."""
