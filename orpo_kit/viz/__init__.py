"""Plots (matplotlib) and widgets (ipywidgets); they read runs and call the package's plain functions."""
