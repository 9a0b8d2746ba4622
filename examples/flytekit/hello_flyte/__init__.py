"""An Updraft example written with flytekit."""
