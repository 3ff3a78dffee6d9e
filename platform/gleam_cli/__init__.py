"""The `gleam` command and `gleam demo`: the top layer, above the library (`gleam`) and the Serve app.

The library never imports this package or `serve`; this package may import both. See
docs/architecture.md ("Layers").
"""
