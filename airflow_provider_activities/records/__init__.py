"""Records as data: schemas, conversion to Arrow, Arrow page parsing, bounds and de-duplication."""
