"""Adapters that plug unmask models into other projects' evaluators and runtimes (lmms-eval), each importing its
host project only when used."""
