"""Serializable Keras layers shared by the model builders (import the submodules; they import Keras)."""
