"""One module per benchmark tier; each exposes `run(ctx)` and adds its rows to `ctx`."""
