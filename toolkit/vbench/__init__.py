"""VBench-I2V's dimensions computed with VBench's own formulas and preprocessing, on well-kept libraries."""
