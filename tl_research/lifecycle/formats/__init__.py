"""Export formats, one module each (registered with `lifecycle.export.export_format`)."""
