"""Code that the documentation quotes and the tests run (docs/adding-a-resource.md)."""
