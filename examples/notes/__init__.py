"""The example resource of docs/adding-a-resource.md: the resource (notes.py) and its migration."""
