"""The reproduction of the GRAM-R² claims in miniature: the harness, its configs, analysis scripts and reports."""
