"""Bastion: a zero-trust gateway for the Model Context Protocol."""
