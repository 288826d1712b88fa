"""Where photos come from: the listing's base types and one module per source kind."""
