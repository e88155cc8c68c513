"""placeholder: implemented by the sweep work (issue #15)."""
