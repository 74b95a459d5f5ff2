"""The run records under outputs/ read into the tables of README and docs/, and into curves."""
