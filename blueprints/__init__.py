"""HTTP entry points, one module per area. Views parse, call a service, shape the reply."""
