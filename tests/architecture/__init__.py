"""Properties of the code as a whole: the layers and the import graph."""
