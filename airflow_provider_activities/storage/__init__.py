"""Storage: partition planning, Parquet writing and publishing."""
