"""The networks and what they are built from: variants, CLIP, weights, heads and losses."""
