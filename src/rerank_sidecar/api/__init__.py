"""HTTP layer: schemas, routes, errors, and the middleware around them."""
