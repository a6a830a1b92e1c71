"""rrg core: imaging, data sets and the phantom demo data, model assembly, training, the `rrg` CLI."""
