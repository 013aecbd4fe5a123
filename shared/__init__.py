"""Code that two or more stages use: dataset readers, formats, geometry, networks, config."""
