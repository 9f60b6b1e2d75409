"""Reading data sources into rows and checking TRL's row formats."""
