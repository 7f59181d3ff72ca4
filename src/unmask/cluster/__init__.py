"""The only package that imports ray: Ray Data jobs and actor pools around the plain pipeline classes."""
